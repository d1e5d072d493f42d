//! Past dates' cap tables derived from today's table less the changes dated
//! after them, and future dates' plus the changes up to them
//! (`cap_table::earlier`): equal to the tables computed from Postgres, on a
//! history where holders arrive, leave and trade, options are granted and
//! exercised and the pool changes; the gRPC read takes that way whenever it
//! can, and reads a past date's later changes again only for an earlier
//! date or after a change (both counted at `/metrics`).

use chrono::{Days, NaiveDate};
use qapmap_ledger::cap_table::{compute, earlier, query};
use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::date;
use uuid::Uuid;

use crate::helpers::{TestLedger, dec, row, value};
use crate::ocf_tutorial::{
    COMMON, HOLDER, apply, event, exercised, granted, plan_created, pool_adjusted,
};

fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("date")
}

async fn transfer(ledger: &TestLedger, from: Uuid, to: Uuid, quantity: &str, on: NaiveDate) {
    let request = proto::TransferSharesRequest {
        request_id: Uuid::now_v7().to_string(),
        company_id: ledger.company_id.to_string(),
        share_class_id: COMMON.to_string(),
        from_stakeholder_id: from.to_string(),
        to_stakeholder_id: to.to_string(),
        quantity: Some(dec(quantity)),
        effective_date: Some(date::to_proto(on)),
    };
    ledger
        .client
        .clone()
        .transfer_shares(request)
        .await
        .expect("transfer");
}

struct History {
    alice: Uuid,
    bob: Uuid,
    /// Days on and around every change, oldest first, all before today.
    dates: Vec<NaiveDate>,
}

/// Alice and Bob are issued shares; Carol buys from Alice; Bob sells all he
/// has and leaves; options are granted, partly exercised; the pool grows;
/// Carol gets a fractional share today and Dave shares next month.
async fn history(ledger: &TestLedger) -> History {
    let company = ledger.company_id;
    let (alice, bob, carol, dave) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let on = |d: NaiveDate| date::to_proto(d);
    ledger
        .authorize(COMMON, "100000", on(day(2023, 1, 1)))
        .await;
    apply(
        ledger,
        &event(company, on(day(2023, 1, 1)), plan_created("1000")),
    )
    .await;
    for (holder, quantity, when) in [
        (alice, "300", day(2024, 1, 10)),
        (bob, "100", day(2024, 3, 1)),
    ] {
        ledger
            .issue(COMMON, holder, quantity, on(when))
            .await
            .expect("issue");
    }
    apply(ledger, &event(company, on(day(2024, 4, 1)), granted("200"))).await;
    transfer(ledger, alice, carol, "50", day(2024, 6, 1)).await;
    transfer(ledger, bob, alice, "100", day(2024, 9, 1)).await;
    apply(
        ledger,
        &event(company, on(day(2025, 1, 15)), exercised("50")),
    )
    .await;
    apply(
        ledger,
        &event(company, on(day(2025, 3, 1)), pool_adjusted("1500")),
    )
    .await;
    let today = date::today();
    ledger
        .issue(COMMON, carol, "0.5", on(today))
        .await
        .expect("issue today");
    ledger
        .issue(COMMON, dave, "10", on(today + Days::new(30)))
        .await
        .expect("issue next month");
    let mut dates = vec![day(2022, 12, 31)];
    for change in [
        day(2023, 1, 1),
        day(2024, 1, 10),
        day(2024, 3, 1),
        day(2024, 4, 1),
        day(2024, 6, 1),
        day(2024, 9, 1),
        day(2025, 1, 15),
        day(2025, 3, 1),
    ] {
        dates.push(change - Days::new(1));
        dates.push(change);
    }
    dates.push(today - Days::new(1));
    History { alice, bob, dates }
}

#[tokio::test]
async fn every_earlier_table_derived_from_today_equals_the_table_computed_from_postgres() {
    let ledger = TestLedger::start().await;
    let history = history(&ledger).await;
    let company = ledger.company_id;
    let today = date::today();
    let mut connection = ledger.pool.acquire().await.expect("connection");
    let current = query::load(&mut connection, company, today)
        .await
        .expect("today's table");
    let positions = current.positions().to_vec();
    // What a reader keeps after reading the earliest date: it serves the
    // later dates too, filtered by date.
    let earliest = history.dates[0];
    let kept = earlier::later_changes(&mut connection, company, earliest, today)
        .await
        .expect("changes after the earliest date");
    for as_of in history.dates {
        let changes = earlier::later_changes(&mut connection, company, as_of, today)
            .await
            .expect("later changes");
        assert_eq!(
            (changes.ledger_sequence, changes.projection_version),
            (current.ledger_sequence, current.projection_version),
            "read at the versions of today's table"
        );
        let from_postgres = query::load(&mut connection, company, as_of)
            .await
            .expect("table from Postgres");
        for (changes, read_after) in [(&changes, as_of), (&kept, earliest)] {
            let derived = compute(
                as_of,
                changes.ledger_sequence,
                changes.projection_version,
                earlier::roll_back(&positions, changes, as_of),
            );
            assert_eq!(
                derived, from_postgres,
                "as of {as_of}, from changes read after {read_after}"
            );
        }
    }
    // Later dates: today's table plus what is dated up to them (Dave's
    // shares, issued for next month).
    for days in [1, 29, 30, 31, 365] {
        let as_of = today + Days::new(days);
        let changes = earlier::later_changes(&mut connection, company, today, as_of)
            .await
            .expect("changes up to the date");
        let derived = compute(
            as_of,
            changes.ledger_sequence,
            changes.projection_version,
            earlier::roll_forward(&positions, &changes, as_of),
        );
        let from_postgres = query::load(&mut connection, company, as_of)
            .await
            .expect("table from Postgres");
        assert_eq!(derived, from_postgres, "as of {as_of}");
    }
}

/// A ledger whose `/metrics` endpoint is on.
async fn ledger_with_metrics() -> TestLedger {
    let database = qapmap_testkit::database::TestDatabase::create("ledger").await;
    let service = qapmap_testkit::in_process::RunningService::start_with(
        qapmap_runtime::ServiceName::Ledger,
        database,
        qapmap_testkit::nats::TestNamespace::new(),
        |mut settings| {
            settings.metrics_port = Some(0);
            qapmap_ledger::build(settings)
        },
    )
    .await;
    TestLedger::around(service).await
}

/// `qapmap_cap_table_other_dates_total` by how the table was computed.
async fn other_dates_computed(ledger: &TestLedger, from: &str) -> u64 {
    scraped_count(
        ledger,
        &format!("qapmap_cap_table_other_dates_total{{computed_from=\"{from}\"}}"),
    )
    .await
}

/// How often the ledger read the later changes from Postgres.
async fn later_changes_reads(ledger: &TestLedger) -> u64 {
    scraped_count(ledger, "qapmap_cap_table_later_changes_reads_total").await
}

async fn scraped_count(ledger: &TestLedger, series: &str) -> u64 {
    let port = ledger.service.metrics_port.expect("metrics on");
    let scrape = qapmap_testkit::runtime_checks::scrape_metrics(port).await;
    let prefix = format!("{series} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} missing:\n{scrape}"))
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn past_and_future_reads_are_derived_from_todays_table() {
    let ledger = ledger_with_metrics().await;
    let history = history(&ledger).await;
    let read = |as_of: NaiveDate| ledger.cap_table(Some(date::to_proto(as_of)));

    let before_bob_left = read(day(2024, 8, 31)).await;
    let after = read(day(2024, 9, 1)).await;
    let bob_shares = |table: &proto::GetCapTableResponse| {
        row(table, history.bob, COMMON).map(|row| value(&row.shares).to_owned())
    };
    assert_eq!(bob_shares(&before_bob_left).as_deref(), Some("100"));
    assert_eq!(bob_shares(&after), None, "Bob left on 2024-09-01");
    assert_eq!(
        value(&row(&after, history.alice, COMMON).expect("alice").shares),
        "350"
    );
    let options = |table: &proto::GetCapTableResponse| {
        row(table, HOLDER, COMMON).map(|row| value(&row.options_outstanding).to_owned())
    };
    assert_eq!(options(&after).as_deref(), Some("200"));
    assert_eq!(
        options(&read(day(2025, 1, 15)).await).as_deref(),
        Some("150")
    );
    assert_eq!(other_dates_computed(&ledger, "today_less_later").await, 3);
    assert_eq!(other_dates_computed(&ledger, "postgres").await, 0);

    let next_year = date::today() + Days::new(365);
    let future = ledger.cap_table(Some(date::to_proto(next_year))).await;
    assert_eq!(
        value(&future.totals.as_ref().expect("totals").outstanding_shares),
        "410.5"
    );
    assert_eq!(other_dates_computed(&ledger, "today_plus_later").await, 1);
    assert_eq!(other_dates_computed(&ledger, "postgres").await, 0);
}

/// Reads `as_of` until the later changes are kept: until a read no longer
/// reads them from Postgres. (The history's own change notifications reach
/// the listener a little after its last write; a table loaded before they
/// arrive is not kept, nor are the changes read with it.) The reads so far.
async fn once_kept(ledger: &TestLedger, as_of: NaiveDate) -> u64 {
    let mut reads = later_changes_reads(ledger).await;
    for _ in 0..100 {
        ledger.cap_table(Some(date::to_proto(as_of))).await;
        let now = later_changes_reads(ledger).await;
        if now == reads {
            return now;
        }
        reads = now;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the later changes were never kept");
}

/// The kept later changes serve the dates after the one they were read
/// for. They describe one state of the ledger: an earlier date reads them
/// again, and so does any date once the company changed, even by a
/// backdated entry.
#[tokio::test]
async fn kept_later_changes_serve_later_dates_until_the_company_changes() {
    let ledger = ledger_with_metrics().await;
    let history = history(&ledger).await;
    let read = |as_of: NaiveDate| ledger.cap_table(Some(date::to_proto(as_of)));
    let alice_shares = |table: &proto::GetCapTableResponse| {
        value(&row(table, history.alice, COMMON).expect("alice").shares).to_owned()
    };

    let reads = once_kept(&ledger, day(2025, 1, 15)).await;
    assert_eq!(alice_shares(&read(day(2025, 1, 15)).await), "350");
    assert_eq!(alice_shares(&read(day(2025, 2, 1)).await), "350");
    assert_eq!(later_changes_reads(&ledger).await, reads, "kept");
    // Before Bob sold her his 100 shares on 2024-09-01.
    assert_eq!(alice_shares(&read(day(2024, 8, 31)).await), "250");
    assert_eq!(
        later_changes_reads(&ledger).await,
        reads + 1,
        "read further back"
    );
    assert_eq!(alice_shares(&read(day(2025, 1, 15)).await), "350");
    assert_eq!(later_changes_reads(&ledger).await, reads + 1, "kept");

    // Alice gives Bob 5 shares back, dated before the last date read.
    transfer(&ledger, history.alice, history.bob, "5", day(2024, 12, 1)).await;
    assert_eq!(alice_shares(&read(day(2025, 1, 15)).await), "345");
    assert_eq!(alice_shares(&read(day(2024, 11, 30)).await), "350");
    assert!(later_changes_reads(&ledger).await >= reads + 3, "read anew");
    assert_eq!(other_dates_computed(&ledger, "postgres").await, 0);
}
