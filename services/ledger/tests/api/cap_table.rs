//! The cap table as of a date, its Redis cache, and reads with Redis down.

use std::time::{Duration, Instant};

use prost::Message;
use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::date;
use qapmap_testkit::private::PrivateRedis;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::helpers::{TestLedger, date, row, value};

#[tokio::test]
async fn the_cap_table_before_and_after_an_entry_differs_by_exactly_that_entry() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    ledger
        .issue(class, alice, "300", date(2024, 1, 10))
        .await
        .expect("issue alice");
    ledger
        .issue(class, bob, "100", date(2024, 3, 1))
        .await
        .expect("issue bob");

    let before = ledger.cap_table(Some(date(2024, 2, 28))).await;
    let after = ledger.cap_table(Some(date(2024, 3, 1))).await;

    assert!(row(&before, bob, class).is_none());
    assert_eq!(value(&row(&after, bob, class).expect("bob").shares), "100");
    assert_eq!(
        value(&row(&before, alice, class).expect("alice").shares),
        "300"
    );
    assert_eq!(
        value(&row(&after, alice, class).expect("alice").shares),
        "300"
    );
    assert_eq!(
        value(&before.totals.as_ref().expect("totals").outstanding_shares),
        "300"
    );
    assert_eq!(
        value(&after.totals.as_ref().expect("totals").outstanding_shares),
        "400"
    );
    assert_eq!(
        value(
            &row(&after, alice, class)
                .expect("alice")
                .ownership_basic_percent_display
        ),
        "75"
    );
    let nothing_yet = ledger.cap_table(Some(date(2023, 12, 31))).await;
    assert!(nothing_yet.rows.is_empty());
}

fn redis_url() -> String {
    std::env::var("QAPMAP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test]
async fn the_cached_cap_table_equals_postgres_and_the_next_entry_invalidates_it() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    let alice = Uuid::now_v7();
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    ledger
        .issue(class, alice, "300", date(2024, 1, 10))
        .await
        .expect("issue");

    let from_postgres = ledger.cap_table(None).await;
    let key = format!(
        "qapmap:{}:ledger:cap_table:v1:{}:{}:{}:0",
        ledger.service.namespace.name,
        ledger.company_id,
        date::today(),
        from_postgres.ledger_sequence
    );
    let mut redis = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let cached: Vec<u8> = redis.get(&key).await.expect("cached value");
    let cached = proto::GetCapTableResponse::decode(cached.as_slice()).expect("decodes");
    assert_eq!(cached.rows, from_postgres.rows);
    assert_eq!(cached.totals, from_postgres.totals);
    assert_eq!(
        ledger.cap_table(None).await,
        from_postgres,
        "served from the cache, same answer"
    );

    ledger
        .issue(class, alice, "1", date(2024, 1, 11))
        .await
        .expect("next entry");
    let fresh = ledger.cap_table(None).await;
    assert_eq!(fresh.ledger_sequence, from_postgres.ledger_sequence + 1);
    assert_eq!(
        value(&row(&fresh, alice, class).expect("alice").shares),
        "301"
    );
    let _: () = redis.del(&key).await.expect("clean up");
}

#[tokio::test]
async fn with_redis_stopped_cap_table_reads_still_work() {
    let mut redis = PrivateRedis::start();
    let ledger = TestLedger::start_with_redis(redis.url()).await;
    let class = Uuid::now_v7();
    let alice = Uuid::now_v7();
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    ledger
        .issue(class, alice, "300", date(2024, 1, 10))
        .await
        .expect("issue");
    let cached = ledger.cap_table(None).await;
    assert_eq!(
        value(&row(&cached, alice, class).expect("alice").shares),
        "300"
    );

    redis.stop();
    ledger
        .issue(class, alice, "5", date(2024, 1, 11))
        .await
        .expect("issue with redis down");
    let started = Instant::now();
    let table = ledger.cap_table(None).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fallback is quick: {:?}",
        started.elapsed()
    );
    assert_eq!(
        value(&row(&table, alice, class).expect("alice").shares),
        "305"
    );
    assert_eq!(table.ledger_sequence, cached.ledger_sequence + 1);
}
