//! Where sagas queue: every consumer's backlog in JetStream, sampled while a
//! phase runs. Each durable consumer is one serial worker, so the one whose
//! messages wait (not yet delivered, or delivered and not yet acknowledged)
//! is the stage that bounds the rate; one with an empty backlog is not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use qapmap_runtime::messaging::{StreamKind, Subjects};

/// How often every consumer is asked.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// One consumer's backlog over the samples.
#[derive(Debug, Default, Clone)]
struct Backlog {
    samples: u64,
    sum: u64,
    max: u64,
}

/// Samples until dropped or stopped.
#[derive(Debug)]
pub(crate) struct BacklogSampler {
    task: tokio::task::JoinHandle<()>,
    backlogs: Arc<Mutex<BTreeMap<String, Backlog>>>,
}

impl BacklogSampler {
    pub(crate) async fn start(nats_url: &str, namespace: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(nats_url).await?;
        let jetstream = jetstream::new(client);
        let subjects = Subjects::new(namespace.to_owned());
        let mut consumers = Vec::new();
        for kind in [
            StreamKind::Commands,
            StreamKind::Replies,
            StreamKind::Events,
        ] {
            let stream = jetstream.get_stream(subjects.stream_name(kind)).await?;
            let mut names = stream.consumer_names();
            while let Some(name) = names.next().await {
                consumers.push((stream.clone(), name?));
            }
        }
        let backlogs = Arc::new(Mutex::new(BTreeMap::<String, Backlog>::new()));
        let shared = Arc::clone(&backlogs);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                for (stream, name) in &mut consumers {
                    let Ok(info) = stream.consumer_info(name.as_str()).await else {
                        continue;
                    };
                    let waiting = info.num_pending + info.num_ack_pending as u64;
                    let mut backlogs = shared.lock().expect("backlog lock");
                    let backlog = backlogs.entry(name.clone()).or_default();
                    backlog.samples += 1;
                    backlog.sum += waiting;
                    backlog.max = backlog.max.max(waiting);
                }
            }
        });
        Ok(Self { task, backlogs })
    }

    /// Stops sampling; says each consumer's mean and largest backlog.
    pub(crate) fn stop(self) -> String {
        self.task.abort();
        let backlogs = self.backlogs.lock().expect("backlog lock");
        let parts: Vec<String> = backlogs
            .iter()
            .map(|(name, backlog)| {
                format!(
                    "{name} {:.1}/{}",
                    backlog.sum as f64 / backlog.samples.max(1) as f64,
                    backlog.max
                )
            })
            .collect();
        format!(
            "  consumer backlog, messages waiting or in hand (mean/max, every {} ms): {}",
            SAMPLE_INTERVAL.as_millis(),
            parts.join(", ")
        )
    }
}
