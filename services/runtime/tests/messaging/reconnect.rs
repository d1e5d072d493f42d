//! A consumer across a NATS outage. A pull asked for while the server is
//! away reaches it only on the reconnect, while the client counts the
//! pull's life from when it was asked for, and drops what the pull brought
//! and had not handed out when that life ends.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream;
use futures::StreamExt;
use qapmap_runtime::messaging::StreamKind;
use qapmap_testkit::nats::TestNamespace;
use qapmap_testkit::private::PrivateNats;

use crate::support::{FLOW_TIMEOUT, Harness, Running, wait_for_count};

const CONSUMER: &str = "effects";
/// The harness's consumers' ack wait.
const ACK_WAIT: Duration = Duration::from_secs(5);
const KEYS: i32 = 20;
const SEQS: i32 = 5;
/// How long the client keeps a pull it asked for with a 1 s expiry
/// (`async_nats`: the expiry plus 5 s), after which it drops what the
/// pull brought and has not yet handed out.
const PULL_LIFE_IN_THE_CLIENT: Duration = Duration::from_secs(6);
/// How long before the end of that life the server is back: a third of
/// the time the worker takes to handle what one pull brings (64 messages,
/// 10 ms each).
const BACK_BEFORE_THE_END: Duration = Duration::from_millis(250);

/// Goal: messages that wait out an outage are all handled as soon as NATS
/// is back, in key order; none waits out the ack wait.
/// Method: a NATS server of the test's own is killed just after the
/// worker asked for a pull (seen on the pull requests' subject). 100
/// messages (20 keys) are published through the worker's client
/// meanwhile, so they wait in it. The pull in hand ends in the client 6 s
/// later; a worker that then asks for another queues it in the client,
/// and that pull's life runs from then. The server is brought back 250 ms
/// before that second life ends. Each message takes the worker a
/// transaction of 10 ms (a trigger sleeps), so it would still be handing
/// out what the queued pull brought when the client dropped the rest;
/// those would come back only after the ack wait (5 s here), behind the
/// later messages of their keys (on the consumer without the wait for the
/// connection: 40 effects out of order, four runs of four).
#[tokio::test]
async fn messages_that_waited_out_an_outage_land_at_once_and_in_order() {
    let starting = Instant::now();
    let mut nats = PrivateNats::start();
    let start_up = starting.elapsed();
    let harness = Harness::start_on(TestNamespace::on(&nats.url())).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_effect() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
         CREATE TRIGGER slow_effect BEFORE INSERT ON effects
             FOR EACH ROW EXECUTE FUNCTION slow_effect();",
    )
    .execute(&harness.pool)
    .await
    .expect("slow effects");
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(20))
        .connect(nats.url())
        .await
        .expect("connect to NATS");
    let jetstream = jetstream::new(client.clone());
    let watcher = async_nats::connect(nats.url()).await.expect("watcher");
    let mut pull_requests = watcher
        .subscribe(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{CONSUMER}",
            harness.subjects.stream_name(StreamKind::Events)
        ))
        .await
        .expect("watch pull requests");
    watcher.flush().await.expect("flush");
    // One message per transaction: a pull's messages are handed out one
    // by one, not taken all at once.
    let config = harness
        .consumer_config(CONSUMER)
        .with_max_batch(1)
        .with_ack_wait(ACK_WAIT);
    let consumer = harness.consumer_on(jetstream.clone(), config);
    let consumer = Running::spawn(move |stop| consumer.run(stop));
    let subject = harness.subjects.event("test", "happened");
    harness
        .publish_direct(subject.clone(), b"warm-up:1", "warm-up-1", None)
        .await;
    wait_for_count(&harness, "SELECT count(*) FROM effects", 1).await;

    // Pulls asked for before the warm-up landed are stale; wait for a new one.
    while tokio::time::timeout(Duration::from_millis(1), pull_requests.next())
        .await
        .is_ok()
    {}
    tokio::time::timeout(FLOW_TIMEOUT, pull_requests.next())
        .await
        .expect("the worker asks for a pull")
        .expect("watching");
    let asked = Instant::now();
    nats.stop();
    let disconnected = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        client.connection_state() != State::Connected
    })
    .await;
    assert!(disconnected, "the worker's client saw the outage");
    let mut acks = Vec::new();
    for seq in 1..=SEQS {
        for key in 0..KEYS {
            let body = format!("key-{key}:{seq}");
            let message = jetstream::message::PublishMessage::build()
                .payload(body.clone().into_bytes().into())
                .message_id(&body);
            let ack = jetstream
                .send_publish(subject.clone(), message)
                .await
                .expect("the client takes a publish while disconnected");
            acks.push(ack);
        }
    }
    let back_at = asked + 2 * PULL_LIFE_IN_THE_CLIENT - BACK_BEFORE_THE_END - start_up;
    tokio::time::sleep_until(back_at.into()).await;
    nats.resume();
    let reconnected = qapmap_testkit::eventually(FLOW_TIMEOUT, || async {
        client.connection_state() == State::Connected
    })
    .await;
    assert!(reconnected, "the worker's client reconnected");
    let back = Instant::now();

    wait_for_count(&harness, "SELECT count(*) FROM effects", 101).await;
    let landed_after = back.elapsed();
    let (handled, distinct, out_of_order) = harness.effect_audit("effects").await;
    assert_eq!((handled, distinct, out_of_order), (101, 101, 0));
    // A message dropped in the client comes back one ack wait after it was
    // delivered, which was after the reconnect.
    assert!(
        landed_after < ACK_WAIT,
        "every message landed within the ack wait of the reconnect: {landed_after:?}"
    );
    drop(acks);
    consumer.stop().await;
}
