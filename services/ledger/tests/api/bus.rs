//! The ledger's JetStream side, as the orchestrator and the equity service
//! see it: publish commands and events with a `Nats-Msg-Id`, and read the
//! ledger's replies from the REPLIES stream.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use prost::Message;
use qapmap_proto::messaging::v1::{SagaCommand, SagaReply};
use qapmap_runtime::messaging::{StreamKind, Subjects};
use qapmap_testkit::nats::TestNamespace;
use uuid::Uuid;

/// How long a reply may take: the consumer pulls every second, the relay
/// publishes on NOTIFY.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A reply with the headers the test checks.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedReply {
    pub(crate) reply: SagaReply,
    pub(crate) traceparent: Option<String>,
}

pub(crate) struct Bus {
    jetstream: jetstream::Context,
    pub(crate) subjects: Subjects,
    replies: pull::Ordered,
    /// Replies read while waiting for another one.
    unclaimed: Vec<ReceivedReply>,
}

impl Bus {
    pub(crate) async fn connect(namespace: &TestNamespace) -> Self {
        let client = async_nats::connect(namespace.url.as_str())
            .await
            .expect("connect to NATS");
        let jetstream = jetstream::new(client);
        let subjects = namespace.subjects();
        let stream = jetstream
            .get_stream(subjects.stream_name(StreamKind::Replies))
            .await
            .expect("the service made the REPLIES stream");
        let replies = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{}.reply.>", subjects.namespace()),
                ..Default::default()
            })
            .await
            .expect("ordered reply consumer")
            .messages()
            .await
            .expect("reply messages");
        Self {
            jetstream,
            subjects,
            replies,
            unclaimed: Vec::new(),
        }
    }

    /// Publishes and waits for JetStream's ack; returns the message id.
    pub(crate) async fn publish(
        &self,
        subject: String,
        message_id: &str,
        payload: Vec<u8>,
        traceparent: Option<&str>,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        if let Some(traceparent) = traceparent {
            headers.insert("traceparent", traceparent);
        }
        self.jetstream
            .publish_with_headers(subject, headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream ack");
    }

    /// Sends a ledger command under a fresh message id (as the orchestrator
    /// does for every send, re-sends included).
    pub(crate) async fn command(&self, name: &str, command: &SagaCommand) {
        self.command_traced(name, command, None).await;
    }

    pub(crate) async fn command_traced(
        &self,
        name: &str,
        command: &SagaCommand,
        traceparent: Option<&str>,
    ) {
        let subject = self.subjects.command("ledger", name);
        let message_id = Uuid::now_v7().to_string();
        self.publish(subject, &message_id, command.encode_to_vec(), traceparent)
            .await;
    }

    /// The next reply (not taken before) to `saga_id`'s `step`, forward or
    /// compensation.
    pub(crate) async fn reply(
        &mut self,
        saga_id: Uuid,
        step: i32,
        compensation: bool,
    ) -> ReceivedReply {
        let wanted = |received: &ReceivedReply| {
            received.reply.saga_id == saga_id.to_string()
                && received.reply.step == step
                && received.reply.compensation == compensation
        };
        if let Some(index) = self.unclaimed.iter().position(wanted) {
            return self.unclaimed.remove(index);
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.replies.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no reply to saga {saga_id} step {step} (compensation: {compensation})")
                })
                .expect("the reply stream stays open")
                .expect("a reply message");
            let reply = SagaReply::decode(next.payload.as_ref()).expect("a SagaReply");
            let traceparent = next
                .headers
                .as_ref()
                .and_then(|headers| headers.get("traceparent"))
                .map(|value| value.to_string());
            let received = ReceivedReply { reply, traceparent };
            if wanted(&received) {
                return received;
            }
            self.unclaimed.push(received);
        }
    }
}
