//! The relay: a crash between publishing and marking, a NATS outage, and a
//! row that commits after a higher id was already published.

use std::time::Duration;

use qapmap_runtime::messaging::StreamKind;
use qapmap_runtime::metrics::MessagingMetrics;
use qapmap_testkit::nats::TestNamespace;
use qapmap_testkit::private::PrivateNats;

use crate::support::{FLOW_TIMEOUT, Harness, Running, wait_for_count};

const UNPUBLISHED: &str = "SELECT count(*) FROM outbox WHERE published_at IS NULL";

/// Goal: a relay that dies after JetStream acknowledged its publishes but
/// before it marked the rows must not cause a second effect.
/// Method: a trigger refuses the marking, so the first relay publishes and
/// can never mark; we check JetStream holds every message, abort that relay,
/// lift the trigger, and let a second relay take the rows over (the first
/// one's rounds never committed). It publishes them again under the same ids.
#[tokio::test]
async fn a_relay_that_dies_between_publishing_and_marking_causes_each_effect_once() {
    let harness = Harness::start().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_marking() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.published_at IS NOT NULL AND OLD.published_at IS NULL THEN
                 RAISE EXCEPTION 'marking refused by the test';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_marking BEFORE UPDATE ON outbox
             FOR EACH ROW EXECUTE FUNCTION refuse_marking();",
    )
    .execute(&harness.pool)
    .await
    .expect("trigger");
    let events: Vec<_> = (1..=10)
        .flat_map(|seq| (0..5).map(move |key| (format!("key-{key}"), seq)))
        .map(|(key, seq)| harness.event(&key, seq, false))
        .collect();
    harness.enqueue(&events).await;

    let doomed = harness.relay();
    let doomed = Running::spawn(move |stop| doomed.run(stop));
    let all_published = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.stream_messages(StreamKind::Events).await == 50
    })
    .await;
    assert!(all_published, "the first relay published every row");
    assert_eq!(harness.count(UNPUBLISHED).await, 50, "none could be marked");
    doomed.abort();
    sqlx::raw_sql("DROP TRIGGER refuse_marking ON outbox")
        .execute(&harness.pool)
        .await
        .expect("drop trigger");

    let successor = harness.relay();
    let successor = Running::spawn(move |stop| successor.run(stop));
    let consumer = harness.consumer(harness.consumer_config("effects"));
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    wait_for_count(&harness, UNPUBLISHED, 0).await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 50).await;

    let (handled, distinct, out_of_order) = harness.effect_audit("effects").await;
    assert_eq!((handled, distinct, out_of_order), (50, 50, 0));
    assert_eq!(
        harness.stream_messages(StreamKind::Events).await,
        50,
        "JetStream dropped the second publish of every row"
    );
    successor.stop().await;
    consumer.stop().await;
}

/// Goal: while NATS is down nothing is lost, and when it is back every
/// message arrives once and in order per key.
/// Method: a NATS server of the test's own, killed between two bursts of
/// messages and started again on the same port and store.
#[tokio::test]
async fn a_nats_outage_loses_nothing_and_keeps_per_key_order() {
    let mut nats = PrivateNats::start();
    let harness = Harness::start_on(TestNamespace::on(&nats.url())).await;
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let consumer = harness.consumer(harness.consumer_config("effects"));
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    let burst = |seqs: std::ops::RangeInclusive<i32>| {
        seqs.map(|seq| {
            (0..20)
                .map(|key| harness.event(&format!("key-{key}"), seq, false))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
    };

    for events in burst(1..=5) {
        harness.enqueue(&events).await;
    }
    wait_for_count(&harness, "SELECT count(*) FROM effects", 100).await;
    nats.stop();
    for events in burst(6..=10) {
        harness.enqueue(&events).await;
    }
    let backlog = MessagingMetrics::outbox_backlog(&harness.pool)
        .await
        .expect("backlog");
    assert!(
        backlog.unpublished_rows >= 100,
        "the outage left the second burst in the outbox: {backlog:?}"
    );
    assert!(backlog.oldest_age.is_some());
    let relay_met_the_outage = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.metrics.publish_failures_total() > 0
    })
    .await;
    assert!(
        relay_met_the_outage,
        "the relay tried to publish while NATS was down"
    );
    nats.resume();

    wait_for_count(&harness, "SELECT count(*) FROM effects", 200).await;
    wait_for_count(&harness, UNPUBLISHED, 0).await;
    let (handled, distinct, out_of_order) = harness.effect_audit("effects").await;
    assert_eq!((handled, distinct, out_of_order), (200, 200, 0));
    relay.stop().await;
    consumer.stop().await;
}

/// Goal: a row whose id is lower than one already published, because its
/// transaction committed later, is still published.
/// Method: two open transactions; the one holding the higher id commits
/// first and is published; then the other commits.
#[tokio::test]
async fn a_row_committed_after_a_higher_id_was_published_is_still_published() {
    let harness = Harness::start().await;
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let consumer = harness.consumer(harness.consumer_config("effects"));
    let consumer = Running::spawn(move |stop| consumer.run(stop));

    let mut early = harness.pool.begin().await.expect("begin");
    qapmap_runtime::outbox::enqueue(&mut early, &harness.event("early", 1, false))
        .await
        .expect("enqueue early");
    let mut late = harness.pool.begin().await.expect("begin");
    qapmap_runtime::outbox::enqueue(&mut late, &harness.event("late", 1, false))
        .await
        .expect("enqueue late");
    late.commit().await.expect("commit late");
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE partition_key = 'late' AND published_at IS NOT NULL",
        1,
    )
    .await;
    early.commit().await.expect("commit early");

    let ids_in_bad_order: bool = sqlx::query_scalar(
        "SELECT (SELECT id FROM outbox WHERE partition_key = 'early')
              < (SELECT id FROM outbox WHERE partition_key = 'late')",
    )
    .fetch_one(&harness.pool)
    .await
    .expect("ids");
    assert!(ids_in_bad_order, "the early row holds the lower id");
    wait_for_count(&harness, UNPUBLISHED, 0).await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 2).await;
    relay.stop().await;
    consumer.stop().await;
}

/// Goal: a relay woken by a writer of its own process while another
/// relay's round holds the lock still publishes the rows soon, not at its
/// next poll (the other relay, in another process, heard no NOTIFY).
/// Method: the test holds the round lock in an open transaction; rows are
/// committed as a consumer batch commits them (no NOTIFY, a local
/// wake-up); the relay polls once a minute; the lock is let go after
/// 300 ms, and the rows must be on the stream well within that minute.
#[tokio::test]
async fn a_relay_locked_out_by_another_round_looks_again_soon() {
    let harness = Harness::start().await;
    let relay = harness.slow_polling_relay().await;

    let mut holder = harness.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(qapmap_runtime::relay::ROUND_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .expect("hold the round lock");
    let mut writer = harness.pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL qapmap.relay_wake = 'local'")
        .execute(&mut *writer)
        .await
        .expect("wake locally");
    for seq in 1..=3 {
        qapmap_runtime::outbox::enqueue(&mut writer, &harness.event("k", seq, false))
            .await
            .expect("enqueue");
    }
    writer.commit().await.expect("commit");
    for local in qapmap_runtime::local_relay::running(&harness.pool) {
        local.wake();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        harness.stream_messages(StreamKind::Events).await,
        0,
        "nothing is published while another round holds the lock"
    );
    holder.rollback().await.expect("let the lock go");

    let published = qapmap_testkit::eventually(Duration::from_secs(30), || async {
        harness.stream_messages(StreamKind::Events).await == 3
    })
    .await;
    assert!(
        published,
        "the relay looked again soon after it was locked out"
    );
    relay.stop().await;
}
