//! A stop ends a consumer's wait for messages, never a batch it holds: the
//! batch in hand commits, is counted and acknowledged, so nothing of it
//! comes back as a redelivery.

use std::sync::Arc;
use std::time::Duration;

use qapmap_runtime::consumer::{
    Consumer, ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::StreamKind;
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::support::{Harness, RecordingHandler, Running};

const CONSUMER: &str = "stopping";

/// [`RecordingHandler`] that first says it has started and then waits to
/// be released, so that a stop can arrive while it holds the message.
#[derive(Debug)]
struct HeldHandler {
    started: Arc<Notify>,
    release: Arc<Notify>,
    inner: RecordingHandler,
}

impl MessageHandler for HeldHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        self.started.notify_one();
        self.release.notified().await;
        self.inner.handle(message, transaction).await
    }
}

/// Goal: a consumer asked to stop while handling a message finishes it:
/// its effect is written once, it counts as handled, and JetStream holds
/// no unacknowledged delivery of it.
#[tokio::test]
async fn a_stop_during_a_batch_finishes_and_acknowledges_it() {
    let harness = Harness::start().await;
    stop_while_handling(&harness, harness.consumer_config(CONSUMER)).await;
}

/// Goal: the same for a consumer that lingers to gather its batches (the
/// ledger's projection, the orchestrator's replies), whose pull path
/// handles the stop on its own.
#[tokio::test]
async fn a_lingering_consumer_stopped_during_a_batch_finishes_and_acknowledges_it() {
    let harness = Harness::start().await;
    let config = harness
        .consumer_config(CONSUMER)
        .with_linger(Duration::from_millis(20));
    stop_while_handling(&harness, config).await;
}

/// Publishes one message, stops the consumer while its handler holds it,
/// releases the handler only afterwards, and checks it was finished.
async fn stop_while_handling(harness: &Harness, config: ConsumerConfig) {
    harness
        .publish_direct(
            harness.subjects.event("test", "happened"),
            b"held:1",
            &Uuid::now_v7().to_string(),
            None,
        )
        .await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        config,
        HeldHandler {
            started: started.clone(),
            release: release.clone(),
            inner: RecordingHandler::new(CONSUMER),
        },
    )
    .with_metrics(harness.metrics.clone());
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    tokio::time::timeout(crate::support::FLOW_TIMEOUT, started.notified())
        .await
        .expect("the handler got the message");

    // The stop is sent first; the handler is released only afterwards.
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.notify_one();
    };
    tokio::join!(consumer.stop(), release_later);

    assert_eq!(harness.effect_audit(CONSUMER).await, (1, 1, 0));
    assert_eq!(harness.metrics.handled_total(), 1, "counted as handled");
    let info = harness
        .jetstream
        .get_stream(harness.subjects.stream_name(StreamKind::Events))
        .await
        .expect("stream")
        .consumer_info(CONSUMER)
        .await
        .expect("consumer info")
        .clone();
    assert_eq!(info.num_ack_pending, 0, "the delivery was acknowledged");
    assert_eq!(info.num_pending, 0, "nothing left to deliver");
}
