//! The cap table as of a date, its Redis cache, and reads with Redis down;
//! today's table kept in memory and dropped on change notifications; pages.

use std::time::{Duration, Instant};

use prost::Message;
use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::date;
use qapmap_testkit::eventually;
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

/// Walks every page of `page_size` rows; the rows in order and the pages' totals.
async fn all_pages(
    ledger: &TestLedger,
    as_of: Option<qapmap_proto::common::v1::Date>,
    page_size: i32,
) -> (Vec<proto::CapTableRow>, Vec<proto::GetCapTableResponse>) {
    let (mut rows, mut pages, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let mut page = ledger
            .cap_table_page(as_of, page_size, token)
            .await
            .expect("page");
        assert!(page.rows.len() <= page_size as usize);
        rows.append(&mut page.rows);
        token = std::mem::take(&mut page.next_page_token);
        pages.push(page);
        if token.is_empty() {
            return (rows, pages);
        }
        assert!(pages.len() <= 10, "pages end");
    }
}

#[tokio::test]
async fn pages_cover_every_row_once_in_order_from_memory_and_from_postgres() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    for shares in ["10", "20", "30", "40", "50", "60", "70"] {
        ledger
            .issue(class, Uuid::now_v7(), shares, date(2024, 1, 10))
            .await
            .expect("issue");
    }
    let whole_today = ledger.cap_table(None).await;
    let whole_past = ledger.cap_table(Some(date(2025, 6, 1))).await;
    assert_eq!(whole_today.rows.len(), 7);
    assert_eq!(whole_past.rows, whole_today.rows, "nothing is dated later");

    for as_of in [None, Some(date(2025, 6, 1))] {
        let (rows, pages) = all_pages(&ledger, as_of, 3).await;
        assert_eq!(pages.len(), 3, "3 + 3 + 1 rows");
        assert_eq!(
            rows, whole_today.rows,
            "every row once, in the whole table's order"
        );
        for page in &pages {
            assert_eq!(
                page.totals, whole_today.totals,
                "totals cover the whole table"
            );
            assert_eq!(page.ledger_sequence, whole_today.ledger_sequence);
        }
    }

    for token in ["v1.6e6f", "garbage"] {
        let refused = ledger
            .cap_table_page(None, 3, token.to_owned())
            .await
            .expect_err("not a token the service issued");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("page_token"),
            "{}",
            refused.message()
        );
    }
}

async fn alice_shares(ledger: &TestLedger, alice: Uuid, class: Uuid) -> String {
    let table = ledger.cap_table(None).await;
    row(&table, alice, class)
        .map(|row| value(&row.shares).to_owned())
        .unwrap_or_default()
}

/// Waits (at most 10 s) until `ledger`'s cap table shows `shares` for alice.
async fn shows_eventually(ledger: &TestLedger, alice: Uuid, class: Uuid, shares: &str, why: &str) {
    let shown = eventually(Duration::from_secs(10), || async {
        alice_shares(ledger, alice, class).await == shares
    })
    .await;
    assert!(
        shown,
        "{why}: alice shows {:?}, expected {shares}",
        alice_shares(ledger, alice, class).await
    );
}

async fn set_change_trigger(ledger: &TestLedger, enabled: bool) {
    let verb = if enabled { "ENABLE" } else { "DISABLE" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE ledgers {verb} TRIGGER ledgers_notify_change"
    )))
    .execute(&ledger.pool)
    .await
    .expect("toggle the change trigger");
}

/// Two replicas on one database: each serves today's table from memory; a
/// write through one reaches the other by the change notification; and a
/// listener that lost its connection never lets memory hide a change it
/// could not hear about.
#[tokio::test]
async fn a_replicas_table_in_memory_follows_changes_made_through_another() {
    let first = TestLedger::start().await;
    let second = first.replica().await;
    // Memory serves only once a replica's listener is connected (milliseconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let class = Uuid::now_v7();
    let alice = Uuid::now_v7();
    first.authorize(class, "1000", date(2024, 1, 1)).await;
    first
        .issue(class, alice, "300", date(2024, 1, 10))
        .await
        .expect("issue");
    shows_eventually(
        &second,
        alice,
        class,
        "300",
        "the second replica sees the first one's write",
    )
    .await;

    // Without notifications, the second replica keeps serving its table from
    // memory (proof that it does), while the writer itself reads its write.
    set_change_trigger(&first, false).await;
    first
        .issue(class, alice, "1", date(2024, 1, 11))
        .await
        .expect("issue unannounced");
    assert_eq!(
        alice_shares(&first, alice, class).await,
        "301",
        "read your writes"
    );
    assert_eq!(
        alice_shares(&second, alice, class).await,
        "300",
        "served from memory"
    );

    // With them, a change through the first reaches the second's memory.
    set_change_trigger(&first, true).await;
    first
        .issue(class, alice, "1", date(2024, 1, 12))
        .await
        .expect("issue announced");
    shows_eventually(
        &second,
        alice,
        class,
        "302",
        "the notification dropped the second replica's table",
    )
    .await;

    // A change made while the listeners are cut off is unheard: losing the
    // connection must have dropped what memory held.
    set_change_trigger(&first, false).await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN \"qapmap_ledger_changed\"%') AS t",
    )
    .fetch_one(&first.pool)
    .await
    .expect("cut the listeners");
    assert_eq!(cut, 2, "one change listener per replica");
    first
        .issue(class, alice, "1", date(2024, 1, 13))
        .await
        .expect("issue while cut off");
    shows_eventually(
        &second,
        alice,
        class,
        "303",
        "a lost listener never leaves a stale table in memory",
    )
    .await;
    set_change_trigger(&first, true).await;
}
