//! Per-key order behind a message to retry: the later messages of its key
//! wait for it even when they arrive in later batches, they spend no
//! JetStream deliveries while they wait, and they go on once it lands,
//! becomes a dead letter, or fails to come back in time.

use std::time::Duration;

use qapmap_runtime::consumer::ConsumerConfig;
use qapmap_runtime::messaging::StreamKind;

use crate::support::{Harness, Running, wait_for_count};

const CONSUMER: &str = "ordered";
/// Longer than the harness's ack wait (5 s): a held message that was not
/// kept alive would be redelivered within it.
const HELD_LONGER_THAN_THE_ACK_WAIT: Duration = Duration::from_secs(7);

fn running_relay(harness: &Harness) -> Running {
    let relay = harness.relay();
    Running::spawn(move |stop| relay.run(stop))
}

async fn fix_the_poison(harness: &Harness) {
    sqlx::query("UPDATE poison_fixed SET fixed = true")
        .execute(&harness.pool)
        .await
        .expect("fix the poison");
}

fn ordered_consumer(harness: &Harness, config: ConsumerConfig) -> Running {
    let consumer = harness.consumer(config);
    Running::spawn(move |stop| consumer.run(stop))
}

/// Retries every 300 ms and never dead-letters within a test.
fn patient_config(harness: &Harness) -> ConsumerConfig {
    harness
        .consumer_config(CONSUMER)
        .with_backoff(vec![Duration::from_millis(300)])
        .with_max_deliveries(200)
}

/// The sequence numbers of `key`'s effects, in the order they landed.
async fn landed(harness: &Harness, key: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT seq FROM effects WHERE consumer = $1 AND partition_key = $2 ORDER BY applied",
    )
    .bind(CONSUMER)
    .bind(key)
    .fetch_all(&harness.pool)
    .await
    .expect("effects")
}

/// JetStream's count of the consumer's pending messages it has delivered
/// more than once; `None` before the consumer exists.
async fn redelivered(harness: &Harness) -> Option<usize> {
    let stream = harness
        .jetstream
        .get_stream(harness.subjects.stream_name(StreamKind::Events))
        .await
        .expect("stream");
    let info = stream.consumer_info(CONSUMER).await.ok()?;
    Some(info.num_redelivered)
}

/// Sends `stuck:1` and the poison message `stuck:2`, and waits until the
/// poison message has failed at least twice, so the later messages sent
/// next arrive while it waits for its retry.
async fn poison_behind_a_landed_message(harness: &Harness) {
    harness
        .enqueue(&[
            harness.event("stuck", 1, false),
            harness.event("stuck", 2, true),
        ])
        .await;
    let retrying = qapmap_testkit::eventually(crate::support::FLOW_TIMEOUT, || async {
        redelivered(harness).await >= Some(1)
    })
    .await;
    assert!(retrying, "the poison message was redelivered");
}

/// Sends `stuck:3` and `stuck:4` and waits until both are held.
async fn two_later_messages_are_held(harness: &Harness) {
    harness
        .enqueue(&[
            harness.event("stuck", 3, false),
            harness.event("stuck", 4, false),
        ])
        .await;
    let held = qapmap_testkit::eventually(crate::support::FLOW_TIMEOUT, || async {
        harness.metrics.held_behind_retry_total() >= 2
    })
    .await;
    assert!(held, "the later messages were held");
}

/// Goal: messages of a key that arrive after its message to retry has
/// failed (in batches of their own) wait for it, longer than the ack wait
/// without being redelivered, while other keys flow; once it lands, all
/// land once, in order. Fails when only a batch's own later messages wait
/// (they would land at once), or when held messages are not kept alive
/// (JetStream would redeliver them after the ack wait).
#[tokio::test]
async fn later_messages_of_a_key_wait_in_memory_behind_its_message_to_retry() {
    let harness = Harness::start().await;
    let relay = running_relay(&harness);
    let consumer = ordered_consumer(&harness, patient_config(&harness));

    poison_behind_a_landed_message(&harness).await;
    let later: Vec<_> = (3..=5)
        .map(|seq| harness.event("stuck", seq, false))
        .chain((1..=3).map(|seq| harness.event("calm", seq, false)))
        .collect();
    harness.enqueue(&later).await;
    wait_for_count(
        &harness,
        "SELECT count(*) FROM effects WHERE partition_key = 'calm'",
        3,
    )
    .await;
    tokio::time::sleep(HELD_LONGER_THAN_THE_ACK_WAIT).await;

    assert_eq!(
        landed(&harness, "stuck").await,
        [1],
        "nothing overtook the message to retry"
    );
    assert!(
        harness.metrics.held_behind_retry_total() >= 3,
        "the later messages were held"
    );
    assert_eq!(
        redelivered(&harness).await,
        Some(1),
        "only the message to retry was delivered again"
    );

    fix_the_poison(&harness).await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 8).await;
    consumer.stop().await;
    relay.stop().await;
    assert_eq!(landed(&harness, "stuck").await, [1, 2, 3, 4, 5]);
    assert_eq!(harness.effect_audit(CONSUMER).await, (8, 8, 0));
    assert_eq!(harness.metrics.dead_lettered_total(), 0);
}

/// Goal: when the message to retry runs out of attempts, the messages held
/// behind it land after its dead letter, in order, each on its own first
/// attempts (none is dead-lettered with it).
#[tokio::test]
async fn messages_held_behind_a_dead_letter_land_after_it_in_order() {
    let harness = Harness::start().await;
    let relay = running_relay(&harness);
    let config = harness
        .consumer_config(CONSUMER)
        .with_backoff(vec![Duration::from_millis(300)])
        .with_max_deliveries(4);
    let consumer = ordered_consumer(&harness, config);

    poison_behind_a_landed_message(&harness).await;
    harness
        .enqueue(&[
            harness.event("stuck", 3, false),
            harness.event("stuck", 4, false),
        ])
        .await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 3).await;
    consumer.stop().await;
    relay.stop().await;

    assert_eq!(landed(&harness, "stuck").await, [1, 3, 4]);
    assert_eq!(harness.metrics.dead_lettered_total(), 1);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM dead_letters WHERE payload = convert_to('poison:stuck:2', 'UTF8')")
            .await,
        1,
        "the poison message, and only it, is a dead letter"
    );
}

/// Goal: when the message to retry never comes back (deleted from the
/// stream here; a lost nak looks the same to the consumer), the messages
/// held behind it go on, in order, once its retry delay and the ack wait
/// have passed. Fails when a hold that runs out is never released.
#[tokio::test]
async fn messages_held_behind_a_message_that_never_returns_go_on_after_the_ack_wait() {
    let harness = Harness::start().await;
    let relay = running_relay(&harness);
    let consumer = ordered_consumer(&harness, patient_config(&harness));

    poison_behind_a_landed_message(&harness).await;
    two_later_messages_are_held(&harness).await;
    let stream = harness
        .jetstream
        .get_stream(harness.subjects.stream_name(StreamKind::Events))
        .await
        .expect("stream");
    let mut deleted = false;
    for sequence in 1..=4 {
        let message = stream.get_raw_message(sequence).await.expect("stored");
        if message.payload.as_ref() == b"poison:stuck:2" {
            deleted = stream.delete_message(sequence).await.expect("delete");
        }
    }
    assert!(deleted, "the poison message was deleted from the stream");
    assert_eq!(landed(&harness, "stuck").await, [1], "still held");

    wait_for_count(&harness, "SELECT count(*) FROM effects", 3).await;
    consumer.stop().await;
    relay.stop().await;
    assert_eq!(landed(&harness, "stuck").await, [1, 3, 4]);
    assert_eq!(harness.metrics.dead_lettered_total(), 0);
}

/// Goal: a worker that stops while it holds messages gives them back, and
/// the next worker keeps the order: once the message to retry lands,
/// everything lands once, in order.
#[tokio::test]
async fn held_messages_given_back_at_a_stop_keep_their_order_under_the_next_worker() {
    let harness = Harness::start().await;
    let relay = running_relay(&harness);
    let consumer = ordered_consumer(&harness, patient_config(&harness));

    poison_behind_a_landed_message(&harness).await;
    two_later_messages_are_held(&harness).await;
    consumer.stop().await;

    let consumer = ordered_consumer(&harness, patient_config(&harness));
    // Through a few of the poison's retries under the new worker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(landed(&harness, "stuck").await, [1]);
    fix_the_poison(&harness).await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 4).await;
    consumer.stop().await;
    relay.stop().await;
    assert_eq!(landed(&harness, "stuck").await, [1, 2, 3, 4]);
    assert_eq!(harness.effect_audit(CONSUMER).await, (4, 4, 0));
    assert_eq!(harness.metrics.dead_lettered_total(), 0);
}

/// Goal: a consumer limited to one message per transaction keeps that limit
/// when the messages held behind a retried one are released with it: each
/// lands in its own transaction, in order.
#[tokio::test]
async fn released_messages_keep_the_consumers_batch_limit() {
    let harness = Harness::start().await;
    let relay = running_relay(&harness);
    let consumer = ordered_consumer(&harness, patient_config(&harness).with_max_batch(1));

    poison_behind_a_landed_message(&harness).await;
    two_later_messages_are_held(&harness).await;
    fix_the_poison(&harness).await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 4).await;
    consumer.stop().await;
    relay.stop().await;

    assert_eq!(landed(&harness, "stuck").await, [1, 2, 3, 4]);
    assert_eq!(
        harness
            .count("SELECT count(DISTINCT transaction_id) FROM effects")
            .await,
        4,
        "each effect committed in a transaction of its own"
    );
}
