//! The OCF options tutorial (../shared/ocf/samples/tutorials/options)
//! replayed: issuances through the API, option and pool facts as equity events.

use qapmap_proto::common::v1 as common;
use qapmap_proto::equity::v1 as equity;
use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::messaging::v1::{DomainEvent, domain_event::Event};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{TestLedger, date, dec, row, value};

pub(crate) const PREFERRED: Uuid = Uuid::from_u128(0x0c21a4fd_f758_4e8a_b0ec_3fab5a5dc452);
pub(crate) const COMMON: Uuid = Uuid::from_u128(0xe1d930f7_592d_4414_a3ab_a78fe4b932d1);
pub(crate) const PLAN: Uuid = Uuid::from_u128(0x257e5da9_5268_465c_84be_f6d4d4703a9b);
pub(crate) const HOLDER: Uuid = Uuid::from_u128(0xbe7d1e2e_0c9c_485b_a27d_a5c982c4e659);
const AWARD: Uuid = Uuid::from_u128(0xc0ebbb49_8499_4863_bf27_279bc842bf20);

pub(crate) fn event(company_id: Uuid, on: common::Date, body: Event) -> DomainEvent {
    DomainEvent {
        event_id: Uuid::now_v7().to_string(),
        company_id: company_id.to_string(),
        aggregate_type: "equity".into(),
        effective_date: Some(on),
        event: Some(body),
        ..Default::default()
    }
}

pub(crate) fn plan_created(pool_size: &str) -> Event {
    Event::EquityPlanCreated(equity::EquityPlanCreated {
        plan: Some(equity::EquityPlan {
            id: PLAN.to_string(),
            share_class_id: COMMON.to_string(),
            pool_size: Some(dec(pool_size)),
            ..Default::default()
        }),
    })
}

pub(crate) fn granted(quantity: &str) -> Event {
    Event::AwardGranted(equity::AwardGranted {
        award: Some(equity::Award {
            id: AWARD.to_string(),
            plan_id: PLAN.to_string(),
            stakeholder_id: HOLDER.to_string(),
            quantity: Some(dec(quantity)),
            ..Default::default()
        }),
        share_class_id: COMMON.to_string(),
    })
}

pub(crate) fn exercised(quantity: &str) -> Event {
    Event::OptionsExercised(equity::OptionsExercised {
        award_id: AWARD.to_string(),
        plan_id: PLAN.to_string(),
        stakeholder_id: HOLDER.to_string(),
        share_class_id: COMMON.to_string(),
        quantity: Some(dec(quantity)),
        ..Default::default()
    })
}

/// A pool adjustment in the form older events have: without the size it
/// replaced, so the projection moves the pool to `new_size` from the size
/// it holds.
pub(crate) fn pool_adjusted(new_size: &str) -> Event {
    Event::PoolAdjusted(equity::PoolAdjusted {
        plan_id: PLAN.to_string(),
        new_pool_size: Some(dec(new_size)),
        share_class_id: COMMON.to_string(),
        ..Default::default()
    })
}

/// A pool adjustment as the equity service sends it today.
pub(crate) fn pool_resized(previous_size: &str, new_size: &str) -> Event {
    Event::PoolAdjusted(equity::PoolAdjusted {
        plan_id: PLAN.to_string(),
        new_pool_size: Some(dec(new_size)),
        share_class_id: COMMON.to_string(),
        previous_pool_size: Some(dec(previous_size)),
    })
}

pub(crate) async fn apply(ledger: &TestLedger, event: &DomainEvent) {
    let mut tx = ledger.pool.begin().await.expect("begin");
    qapmap_ledger::apply_equity_event(&mut tx, event)
        .await
        .expect("event applies");
    tx.commit().await.expect("commit");
}

async fn issue_with_price(
    ledger: &TestLedger,
    class: Uuid,
    quantity: &str,
    price: &str,
    on: common::Date,
) {
    let request = proto::IssueSharesRequest {
        request_id: Uuid::now_v7().to_string(),
        company_id: ledger.company_id.to_string(),
        share_class_id: class.to_string(),
        stakeholder_id: HOLDER.to_string(),
        quantity: Some(dec(quantity)),
        price_per_share: Some(common::Money {
            amount: Some(dec(price)),
            currency: "USD".into(),
        }),
        effective_date: Some(on),
    };
    ledger
        .client
        .clone()
        .issue_shares(request)
        .await
        .expect("issue");
}

/// Replays the tutorial into a fresh ledger.
pub(crate) async fn replay(ledger: &TestLedger) {
    let company = ledger.company_id;
    ledger
        .authorize(PREFERRED, "100000", date(2022, 1, 1))
        .await;
    ledger.authorize(COMMON, "10000000", date(2022, 1, 1)).await;
    issue_with_price(ledger, PREFERRED, "5000", "1.00", date(2022, 1, 1)).await;
    apply(
        ledger,
        &event(company, date(2022, 12, 31), plan_created("10000000")),
    )
    .await;
    apply(
        ledger,
        &event(company, date(2022, 12, 31), granted("100000")),
    )
    .await;
    apply(
        ledger,
        &event(company, date(2023, 1, 1), pool_adjusted("8000000")),
    )
    .await;
    issue_with_price(ledger, COMMON, "25000", "0.10", date(2024, 1, 31)).await;
    apply(
        ledger,
        &event(company, date(2024, 1, 31), exercised("25000")),
    )
    .await;
}

#[tokio::test]
async fn the_ocf_options_tutorial_gives_the_published_cap_table() {
    let ledger = TestLedger::start().await;
    replay(&ledger).await;

    let table = ledger.cap_table(None).await;

    let preferred = row(&table, HOLDER, PREFERRED).expect("preferred row");
    assert_eq!(value(&preferred.shares), "5000");
    let common = row(&table, HOLDER, COMMON).expect("common row");
    assert_eq!(value(&common.shares), "25000");
    assert_eq!(value(&common.options_outstanding), "75000");
    let totals = table.totals.as_ref().expect("totals");
    assert_eq!(value(&totals.outstanding_shares), "30000");
    assert_eq!(value(&totals.options_outstanding), "75000");
    assert_eq!(value(&totals.pool_available), "7900000");
    assert_eq!(value(&totals.fully_diluted), "8005000");
    let display_sum: Decimal = table
        .rows
        .iter()
        .map(|row| {
            value(&row.ownership_fully_diluted_percent_display)
                .parse::<Decimal>()
                .expect("decimal")
        })
        .sum();
    assert_eq!(display_sum, Decimal::ONE_HUNDRED);
    assert_eq!(
        table.ledger_sequence, 4,
        "two authorizations and two issuances"
    );
}
