//! `nats-pulls`: what one message costs the NATS server when a consumer
//! pulls it on its own, as the services' consumers do at low load (a
//! `fetch` per pull, which subscribes a fresh inbox and drops it), against
//! a pull consumer that keeps one subscription (`messages()`). Each of the
//! `messages` rounds publishes one message (awaiting its ack), receives it
//! and acknowledges it; the server's CPU (`/proc/<pid>/stat`) and this
//! process's are read before and after each mode. A probe for deciding
//! whether the consumer should keep its subscription; not part of `run`.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull, stream};
use futures::StreamExt;

/// Pull size and wait as the services' consumers ask (`consumer.rs`).
const FETCH_BATCH_SIZE: usize = 64;
const FETCH_EXPIRY: Duration = Duration::from_secs(1);

pub(crate) async fn run(url: &str, server_pid: u32, messages: u32) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let jetstream = jetstream::new(client);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("qbenchpulls{}", &suffix[..8]);
    let subject = format!("{name}.probe");
    let stream = jetstream
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .context("creating the probe stream")?;
    let outcome = compare(&jetstream, &stream, &subject, server_pid, messages).await;
    jetstream.delete_stream(&name).await.ok();
    outcome
}

async fn compare(
    jetstream: &jetstream::Context,
    stream: &stream::Stream,
    subject: &str,
    server_pid: u32,
    messages: u32,
) -> anyhow::Result<()> {
    for mode in [Mode::FetchPerPull, Mode::OneSubscription] {
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(mode.consumer_name().to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                // Only what this mode publishes: the earlier mode's messages
                // would reach the second consumer in full pulls.
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let before = (cpu_ticks(server_pid)?, cpu_ticks(std::process::id())?);
        let began = Instant::now();
        rounds(mode, jetstream, &consumer, subject, messages).await?;
        let took = began.elapsed();
        let after = (cpu_ticks(server_pid)?, cpu_ticks(std::process::id())?);
        let per_message = |ticks: u64| ticks as f64 * 10_000.0 / f64::from(messages);
        println!(
            "{:<34} {messages} messages in {:.2} s: NATS server {:.1} µs of CPU a message, this client {:.1} µs",
            mode.label(),
            took.as_secs_f64(),
            per_message(after.0 - before.0),
            per_message(after.1 - before.1),
        );
        stream.delete_consumer(mode.consumer_name()).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    FetchPerPull,
    OneSubscription,
}

impl Mode {
    fn consumer_name(self) -> &'static str {
        match self {
            Self::FetchPerPull => "fetch-per-pull",
            Self::OneSubscription => "one-subscription",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::FetchPerPull => "a fetch (new inbox) per message:",
            Self::OneSubscription => "one subscription (messages()):",
        }
    }
}

/// `messages` rounds of: publish one message (its ack awaited), receive it
/// the way `mode` pulls, acknowledge it.
async fn rounds(
    mode: Mode,
    jetstream: &jetstream::Context,
    consumer: &PullConsumer,
    subject: &str,
    messages: u32,
) -> anyhow::Result<()> {
    let mut kept = match mode {
        Mode::FetchPerPull => None,
        Mode::OneSubscription => Some(consumer.messages().await?),
    };
    for _ in 0..messages {
        jetstream
            .publish(subject.to_owned(), "x".into())
            .await?
            .await?;
        let Some(incoming) = kept.as_mut() else {
            let mut pulled = consumer
                .fetch()
                .max_messages(FETCH_BATCH_SIZE)
                .expires(FETCH_EXPIRY)
                .messages()
                .await?;
            let mut received = 0;
            while let Some(message) = pulled.next().await {
                acknowledge(message).await?;
                received += 1;
            }
            anyhow::ensure!(received == 1, "a pull brought {received} messages, not 1");
            continue;
        };
        acknowledge(incoming.next().await.context("the pull stream ended")?).await?;
    }
    Ok(())
}

async fn acknowledge<E: std::fmt::Display>(
    message: Result<jetstream::Message, E>,
) -> anyhow::Result<()> {
    let message = message.map_err(|error| anyhow::anyhow!("receiving: {error}"))?;
    message
        .ack()
        .await
        .map_err(|error| anyhow::anyhow!("acknowledging: {error}"))
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    crate::cpu::process_ticks(pid).with_context(|| format!("no process {pid}"))
}
