//! The orchestrator's side of NATS, for testing one service's saga commands:
//! publish `SagaCommand`s (a fresh `Nats-Msg-Id` for every send, as the
//! orchestrator does for re-sends) and read the service's `SagaReply`s from
//! the REPLIES stream.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use prost::Message;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use qapmap_runtime::messaging::{StreamKind, Subjects};
use uuid::Uuid;

use crate::nats::TestNamespace;

/// How long a reply may take: the consumer pulls every second, the relay
/// publishes on NOTIFY.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A reply with the header tests check.
#[derive(Debug, Clone)]
pub struct ReceivedReply {
    pub reply: SagaReply,
    pub traceparent: Option<String>,
}

impl ReceivedReply {
    pub fn succeeded(&self) -> bool {
        self.reply.outcome == i32::from(ReplyOutcome::Succeeded)
    }

    /// The reason code of a REJECTED reply (fails the test otherwise).
    pub fn rejected_with(&self) -> &str {
        assert_eq!(
            self.reply.outcome,
            i32::from(ReplyOutcome::Rejected),
            "{:?}",
            self.reply
        );
        &self.reply.reason_code
    }
}

/// Commands to one service, and the replies of everyone in the namespace.
pub struct SagaBus {
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
    service: &'static str,
    replies: pull::Ordered,
    /// Replies read while waiting for another one.
    unclaimed: Vec<ReceivedReply>,
}

impl std::fmt::Debug for SagaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaBus")
            .field("service", &self.service)
            .field("namespace", &self.subjects.namespace())
            .field("unclaimed", &self.unclaimed.len())
            .finish_non_exhaustive()
    }
}

impl SagaBus {
    /// Connects to `namespace`, whose REPLIES stream the service already made.
    pub async fn connect(namespace: &TestNamespace, service: &'static str) -> Self {
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
            service,
            replies,
            unclaimed: Vec::new(),
        }
    }

    /// Publishes and waits for JetStream's ack.
    pub async fn publish(
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

    /// Sends `command` to `<ns>.cmd.<service>.<name>` under a fresh message id.
    pub async fn command(&self, name: &str, command: &SagaCommand, traceparent: Option<&str>) {
        let subject = self.subjects.command(self.service, name);
        let message_id = Uuid::now_v7().to_string();
        self.publish(subject, &message_id, command.encode_to_vec(), traceparent)
            .await;
    }

    /// Sends `command` and waits for its reply.
    pub async fn call(
        &mut self,
        name: &str,
        command: &SagaCommand,
        traceparent: Option<&str>,
    ) -> ReceivedReply {
        self.command(name, command, traceparent).await;
        let saga_id: Uuid = command.saga_id.parse().expect("saga id");
        self.reply(saga_id, command.step, command.compensation)
            .await
    }

    /// The next reply (not taken before) to `saga_id`'s `step`, forward or
    /// compensation.
    pub async fn reply(&mut self, saga_id: Uuid, step: i32, compensation: bool) -> ReceivedReply {
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
