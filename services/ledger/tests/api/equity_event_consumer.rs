//! Equity events reach the cap table through the `ledger-equity-events`
//! consumer, once per event id, even when they come out of order or twice.

use std::time::Duration;

use prost::Message;
use qapmap_proto::messaging::v1::DomainEvent;
use qapmap_testkit::eventually;
use uuid::Uuid;

use crate::bus::Bus;
use crate::helpers::{TestLedger, date, row, value};
use crate::ocf_tutorial::{COMMON, HOLDER, event, granted, plan_created};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn publish(bus: &Bus, name: &str, message_id: &str, event: &DomainEvent) {
    let subject = bus.subjects.event("equity", name);
    bus.publish(subject, message_id, event.encode_to_vec(), None)
        .await;
}

/// Options outstanding of the holder and the pool available, as the cap table shows them.
async fn options(ledger: &TestLedger) -> (String, String, i64) {
    let table = ledger.cap_table(None).await;
    let outstanding = row(&table, HOLDER, COMMON)
        .map(|row| value(&row.options_outstanding).to_owned())
        .unwrap_or_default();
    let pool = table
        .totals
        .as_ref()
        .map(|totals| value(&totals.pool_available).to_owned())
        .unwrap_or_default();
    (outstanding, pool, table.projection_version)
}

#[tokio::test]
async fn equity_events_on_the_bus_reach_the_cap_table_once_even_out_of_order() {
    let ledger = TestLedger::start().await;
    let bus = Bus::connect(&ledger.service.namespace, "ledger").await;
    let company = ledger.company_id;
    let plan = event(company, date(2023, 1, 1), plan_created("1000"));
    let grant = event(company, date(2023, 2, 1), granted("100"));
    let grant_message = Uuid::now_v7().to_string();

    // The grant first: the consumer retries it until the plan has landed.
    publish(&bus, "award_granted", &grant_message, &grant).await;
    publish(
        &bus,
        "equity_plan_created",
        &Uuid::now_v7().to_string(),
        &plan,
    )
    .await;
    let shown = eventually(TIMEOUT, || async {
        options(&ledger).await == ("100".to_owned(), "900".to_owned(), 2)
    })
    .await;
    assert!(shown, "cap table: {:?}", options(&ledger).await);

    // The same message again (JetStream drops it), and the same event under a
    // new message id (the projection drops it).
    publish(&bus, "award_granted", &grant_message, &grant).await;
    let republished = Uuid::now_v7().to_string();
    publish(&bus, "award_granted", &republished, &grant).await;
    let handled = eventually(TIMEOUT, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM inbox WHERE consumer = 'ledger-equity-events' AND message_id = $1",
        )
        .bind(&republished)
        .fetch_one(&ledger.pool)
        .await
        .is_ok_and(|count| count == 1)
    })
    .await;
    assert!(handled, "the re-published event was consumed");
    assert_eq!(
        options(&ledger).await,
        ("100".to_owned(), "900".to_owned(), 2)
    );
    let inbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = 'ledger-equity-events'")
            .fetch_one(&ledger.pool)
            .await
            .expect("inbox");
    assert_eq!(inbox, 3, "plan, grant, and the grant under a new id");
}
