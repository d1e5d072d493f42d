//! A handler with a set-based form takes a ready batch in one step; a batch
//! it cannot take (a failing message, one seen before) goes one by one,
//! with the same outcome as if there were no set-based form.

use qapmap_runtime::consumer::{
    BatchMessage, Consumer, ConsumerConfig, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use qapmap_runtime::messaging::StreamKind;
use qapmap_runtime::outbox::OutboxMessage;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::{Harness, RecordingHandler, Running, wait_for_count};

const CONSUMER: &str = "batched";

/// [`RecordingHandler`] one by one; as a batch, all `effects` rows in one
/// statement. A batch with an unfixed poison message fails as a whole.
#[derive(Debug)]
struct BatchRecordingHandler(RecordingHandler);

impl MessageHandler for BatchRecordingHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        self.0.handle(message, transaction).await
    }

    fn handles_batches(&self) -> bool {
        true
    }

    async fn handle_batch(
        &self,
        messages: &[BatchMessage<'_>],
        transaction: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let fixed: bool = sqlx::query_scalar("SELECT fixed FROM poison_fixed")
            .fetch_one(&mut *transaction)
            .await?;
        let (mut keys, mut seqs, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for BatchMessage { message, .. } in messages {
            let body = std::str::from_utf8(&message.payload)
                .map_err(|error| HandlerError::Poison(error.into()))?;
            let rest = match body.strip_prefix("poison:") {
                Some(_) if !fixed => {
                    return Err(HandlerError::Retry(anyhow::anyhow!("poison in the batch")));
                }
                Some(rest) => rest,
                None => body,
            };
            let (key, seq) = rest
                .rsplit_once(':')
                .ok_or_else(|| HandlerError::Poison(anyhow::anyhow!("no sequence")))?;
            keys.push(key.to_owned());
            seqs.push(
                seq.parse::<i32>()
                    .map_err(|error| HandlerError::Poison(error.into()))?,
            );
            ids.push(message.message_id.clone());
        }
        // In stream order, as one by one would write them.
        sqlx::query(
            "INSERT INTO effects (consumer, partition_key, seq, message_id)
             SELECT $1, effect.key, effect.seq, effect.id
             FROM unnest($2::text[], $3::int[], $4::text[]) WITH ORDINALITY
                  AS effect (key, seq, id, position)
             ORDER BY effect.position",
        )
        .bind(CONSUMER)
        .bind(&keys)
        .bind(&seqs)
        .bind(&ids)
        .execute(&mut *transaction)
        .await?;
        Ok(())
    }
}

fn batched_consumer(harness: &Harness) -> Running {
    // Retries a poison message for a minute at least, never dead-letters
    // it within a test.
    let config: ConsumerConfig = harness
        .consumer_config(CONSUMER)
        .with_backoff(vec![std::time::Duration::from_millis(500)])
        .with_max_deliveries(120);
    let consumer = Consumer::new(
        harness.pool.clone(),
        harness.jetstream.clone(),
        harness.subjects.clone(),
        config,
        BatchRecordingHandler(RecordingHandler::new(CONSUMER)),
    )
    .with_metrics(harness.metrics.clone());
    Running::spawn(move |stop| consumer.run(stop))
}

/// Waits until the consumer has written `expected` effects.
async fn effects_reach(harness: &Harness, expected: i64) {
    wait_for_count(
        harness,
        "SELECT count(*) FROM effects WHERE consumer = 'batched'",
        expected,
    )
    .await;
}

/// Relays `events` and waits until all are in the stream, so that a
/// consumer started afterwards finds them ready together.
async fn in_stream_before_consuming(harness: &Harness, events: &[OutboxMessage]) {
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    harness.enqueue(events).await;
    let expected = events.len() as u64;
    let published = qapmap_testkit::eventually(crate::support::FLOW_TIMEOUT, || async {
        harness.stream_messages(StreamKind::Events).await == expected
    })
    .await;
    assert!(published, "the relay published every event");
    relay.stop().await;
}

/// Goal: a ready batch is applied in one set-based step, each message
/// exactly once and in per-key order, with one inbox row each.
#[tokio::test]
async fn a_ready_batch_is_applied_in_one_step_exactly_once_in_order() {
    let harness = Harness::start().await;
    let events: Vec<_> = (1..=10)
        .flat_map(|seq| (0..4).map(move |key| (key, seq)))
        .map(|(key, seq)| harness.event(&format!("key-{key}"), seq, false))
        .collect();
    in_stream_before_consuming(&harness, &events).await;

    let consumer = batched_consumer(&harness);
    effects_reach(&harness, 40).await;
    consumer.stop().await;

    assert_eq!(harness.effect_audit(CONSUMER).await, (40, 40, 0));
    assert_eq!(
        harness
            .count("SELECT count(*) FROM inbox WHERE consumer = 'batched'")
            .await,
        40
    );
    assert_eq!(harness.metrics.handled_total(), 40);
    assert!(
        harness.metrics.whole_batches_total() >= 1,
        "a ready batch went in one step"
    );
    assert!(
        harness.metrics.messages_in_whole_batches_total() >= 2,
        "a step holds two or more messages"
    );
}

/// Goal: a batch its set-based step refuses goes one by one: the failing
/// message retries, the later messages of its key wait behind it, every
/// other message lands, and once it can, everything has landed exactly once
/// in order. Nothing of the refused step stays behind.
#[tokio::test]
async fn a_batch_the_step_refuses_goes_one_by_one_and_loses_and_doubles_nothing() {
    let harness = Harness::start().await;
    let mut events = Vec::new();
    for seq in 1..=5 {
        events.push(harness.event("calm", seq, false));
        events.push(harness.event("stuck", seq, seq == 2));
    }
    in_stream_before_consuming(&harness, &events).await;

    let consumer = batched_consumer(&harness);
    // All of "calm", and "stuck" up to the poison message.
    effects_reach(&harness, 6).await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM effects WHERE partition_key = 'stuck'")
            .await,
        1,
        "nothing of 'stuck' overtook its poison message"
    );
    assert_eq!(
        harness
            .count("SELECT count(*) FROM inbox WHERE consumer = 'batched'")
            .await,
        6,
        "the refused step left no inbox rows behind"
    );

    sqlx::query("UPDATE poison_fixed SET fixed = true")
        .execute(&harness.pool)
        .await
        .expect("fix the poison");
    effects_reach(&harness, 10).await;
    consumer.stop().await;
    assert_eq!(harness.effect_audit(CONSUMER).await, (10, 10, 0));
    assert_eq!(harness.metrics.handled_total(), 10);
    assert_eq!(harness.metrics.dead_lettered_total(), 0);
}

/// Goal: a batch holding a message handled before (which the set-based
/// step leaves to the one-by-one path) acknowledges the copy without an
/// effect and applies the new messages once.
#[tokio::test]
async fn a_batch_with_a_message_seen_before_changes_nothing_for_it_and_applies_the_rest_once() {
    let harness = Harness::start().await;
    let subject = harness.subjects.event("test", "happened");
    let first_id = Uuid::now_v7().to_string();
    harness
        .publish_direct(subject.clone(), b"old:1", &first_id, None)
        .await;
    let consumer = batched_consumer(&harness);
    effects_reach(&harness, 1).await;
    consumer.stop().await;

    // The same message again (as a replay carries it), then three new ones.
    harness
        .publish_direct(
            subject.clone(),
            b"old:1",
            &Uuid::now_v7().to_string(),
            Some(&first_id),
        )
        .await;
    for seq in 1..=3 {
        harness
            .publish_direct(
                subject.clone(),
                format!("new:{seq}").as_bytes(),
                &Uuid::now_v7().to_string(),
                None,
            )
            .await;
    }
    let consumer = batched_consumer(&harness);
    effects_reach(&harness, 4).await;
    let acknowledged = qapmap_testkit::eventually(crate::support::FLOW_TIMEOUT, || async {
        harness.metrics.redelivered_duplicates_total() == 1
    })
    .await;
    consumer.stop().await;
    assert!(acknowledged, "the copy was acknowledged as a duplicate");
    assert_eq!(harness.effect_audit(CONSUMER).await, (4, 4, 0));
    assert_eq!(
        harness
            .count("SELECT count(*) FROM effects WHERE partition_key = 'old'")
            .await,
        1,
        "the copy had no effect"
    );
}
