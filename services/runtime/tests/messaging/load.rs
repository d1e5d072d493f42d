//! Many messages through several relays and consumers at once.

use qapmap_runtime::messaging::StreamKind;

use crate::support::{Harness, Running, wait_for_count};

const KEYS: i32 = 100;
const MESSAGES_PER_KEY: i32 = 100;
const TOTAL: i64 = (KEYS * MESSAGES_PER_KEY) as i64;

/// Goal: with two relays publishing one outbox and two consumers (two
/// durables, each with its own inbox) handling the stream, no message is
/// lost, none is applied twice, and each key's messages apply in order.
/// Method: 10,000 messages over 100 keys, enqueued while everything runs;
/// every effect row is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_two_relays_and_two_consumers_arrive_once_in_key_order() {
    let harness = Harness::start().await;
    let relays: Vec<Running> = (0..2)
        .map(|_| {
            let relay = harness.relay();
            Running::spawn(move |stop| relay.run(stop))
        })
        .collect();
    let consumers: Vec<Running> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            let consumer = harness.consumer(harness.consumer_config(name));
            Running::spawn(move |stop| consumer.run(stop))
        })
        .collect();

    for seq in 1..=MESSAGES_PER_KEY {
        let events: Vec<_> = (0..KEYS)
            .map(|key| harness.event(&format!("key-{key}"), seq, false))
            .collect();
        harness.enqueue(&events).await;
    }

    wait_for_count(&harness, "SELECT count(*) FROM effects", 2 * TOTAL).await;
    for name in ["alpha", "beta"] {
        assert_eq!(
            harness.effect_audit(name).await,
            (TOTAL, TOTAL, 0),
            "consumer {name}: (handled, distinct, out of order)"
        );
    }
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
    )
    .await;
    assert_eq!(
        harness.stream_messages(StreamKind::Events).await,
        TOTAL as u64
    );
    assert_eq!(harness.metrics.handled_total(), 2 * TOTAL as u64);
    for running in relays.into_iter().chain(consumers) {
        running.stop().await;
    }
}
