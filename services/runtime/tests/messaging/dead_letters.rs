//! Poison messages: dead-lettered after N deliveries without blocking the
//! messages behind them, listed and replayed through the admin gRPC service.

use std::time::Duration;

use qapmap_proto::ops::v1 as proto;
use qapmap_proto::ops::v1::dead_letter_service_client::DeadLetterServiceClient;
use qapmap_runtime::dead_letter::DeadLetterAdmin;
use qapmap_runtime::messaging::StreamKind;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

use crate::support::{FLOW_TIMEOUT, Harness, Running, wait_for_count};

const DELIVERIES: u32 = 3;

/// Serves the dead-letter admin service on a loopback port.
async fn serve_admin(harness: &Harness) -> (DeadLetterServiceClient<Channel>, Running) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = DeadLetterAdmin::new(harness.pool.clone()).into_service();
    let server = Running::spawn(move |mut stop| async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                stop.stopped().await
            })
            .await?;
        Ok(())
    });
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    (DeadLetterServiceClient::new(channel), server)
}

async fn pending(client: &mut DeadLetterServiceClient<Channel>) -> Vec<proto::DeadLetter> {
    client
        .list_dead_letters(proto::ListDeadLettersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .dead_letters
}

/// Goal: a message the handler keeps failing reaches the dead letters after
/// exactly N deliveries, the messages behind it are handled meanwhile, and a
/// replay after the fix applies it once (a second replay does nothing).
/// Method: the handler refuses `poison:` messages until a flag is set.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_without_blocking_and_a_replay_applies_it_once() {
    let harness = Harness::start().await;
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let config = harness
        .consumer_config("effects")
        .with_max_deliveries(DELIVERIES);
    let consumer = harness.consumer(config);
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    let (mut admin, server) = serve_admin(&harness).await;

    let mut events = vec![harness.event("poisoned", 1, true)];
    events.extend((1..=5).map(|seq| harness.event("healthy", seq, false)));
    harness.enqueue(&events).await;

    wait_for_count(&harness, "SELECT count(*) FROM effects", 5).await;
    wait_for_count(&harness, "SELECT count(*) FROM dead_letters", 1).await;
    let dead = pending(&mut admin).await;
    assert_eq!(dead.len(), 1);
    let dead_letter = &dead[0];
    assert_eq!(dead_letter.delivery_count, DELIVERIES as i32);
    assert_eq!(dead_letter.consumer, "effects");
    assert_eq!(dead_letter.payload, b"poison:poisoned:1");
    assert!(dead_letter.last_error.contains("cannot take this message"));
    assert_eq!(dead_letter.status, proto::DeadLetterStatus::Pending as i32);
    assert_eq!(
        harness
            .count("SELECT count(*) FROM effects WHERE partition_key = 'poisoned'")
            .await,
        0
    );
    let copied = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        harness.stream_messages(StreamKind::DeadLetters).await == 1
    })
    .await;
    assert!(copied, "a copy reached the dead-letter stream");

    sqlx::query("UPDATE poison_fixed SET fixed = true")
        .execute(&harness.pool)
        .await
        .expect("fix");
    for attempt in 0..2 {
        let replayed = admin
            .replay_dead_letter(proto::ReplayDeadLetterRequest {
                request_id: format!("replay-{attempt}"),
                dead_letter_id: dead_letter.id.clone(),
            })
            .await
            .expect("replay")
            .into_inner()
            .dead_letter
            .expect("dead letter");
        assert_eq!(replayed.status, proto::DeadLetterStatus::Replayed as i32);
    }
    wait_for_count(
        &harness,
        "SELECT count(*) FROM effects WHERE partition_key = 'poisoned'",
        1,
    )
    .await;
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
    )
    .await;
    assert_eq!(
        harness
            .count("SELECT count(*) FROM outbox WHERE headers ? 'Qapmap-Original-Msg-Id' AND subject NOT LIKE '%.dlq.%'")
            .await,
        1,
        "the second replay call published nothing more"
    );
    let (handled, distinct, _) = harness.effect_audit("effects").await;
    assert_eq!((handled, distinct), (6, 6));
    assert!(pending(&mut admin).await.is_empty());
    let everything = admin
        .list_dead_letters(proto::ListDeadLettersRequest {
            include_resolved: true,
            ..Default::default()
        })
        .await
        .expect("list all")
        .into_inner();
    assert_eq!(everything.dead_letters.len(), 1);
    assert!(everything.next_page_token.is_empty());

    let discard_replayed = admin
        .discard_dead_letter(proto::DiscardDeadLetterRequest {
            request_id: "discard-1".to_owned(),
            dead_letter_id: dead_letter.id.clone(),
            reason: "already replayed".to_owned(),
        })
        .await
        .expect_err("a replayed dead letter cannot be discarded");
    assert_eq!(discard_replayed.code(), tonic::Code::FailedPrecondition);
    assert_eq!(harness.metrics.dead_lettered_total(), 1);

    relay.stop().await;
    consumer.stop().await;
    server.stop().await;
}

/// Goal: a message that arrives before one it depends on, behind it in the
/// stream and of the same key, lands once that one has, and is not dead
/// lettered. Holding the prerequisite back behind the early message
/// brought the two back together after every delay, the prerequisite
/// always behind, until the early message ran out of attempts.
/// Method: `needs-previous:order:2` needs `order:1`; both are on the stream,
/// in that order, before the consumer starts, so its first batch holds
/// both; each may be delivered twice. Held back, `order:1` would come
/// back only behind the second and last attempt of `order:2`.
#[tokio::test]
async fn a_message_that_came_early_lands_after_the_later_message_it_waits_for() {
    let harness = Harness::start().await;
    let relay = harness.relay();
    let relay = Running::spawn(move |stop| relay.run(stop));
    let events = [
        harness.event_needing_previous("order", 2),
        harness.event("order", 1, false),
    ];
    harness.enqueue(&events).await;
    wait_for_count(
        &harness,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
    )
    .await;

    let config = harness.consumer_config("effects").with_max_deliveries(2);
    let consumer = harness.consumer(config);
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    wait_for_count(
        &harness,
        "SELECT (SELECT count(*) FROM effects) + (SELECT count(*) FROM dead_letters)",
        2,
    )
    .await;
    let landed: Vec<i32> = sqlx::query_scalar(
        "SELECT seq FROM effects WHERE partition_key = 'order' ORDER BY applied",
    )
    .fetch_all(&harness.pool)
    .await
    .expect("effects");
    assert_eq!(landed, vec![1, 2], "both landed, the prerequisite first");
    assert_eq!(
        harness.count("SELECT count(*) FROM dead_letters").await,
        0,
        "nothing was dead lettered"
    );
    consumer.stop().await;
    relay.stop().await;
}
