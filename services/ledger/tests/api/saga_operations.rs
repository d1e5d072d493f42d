//! The saga steps called directly: exercise and buyback, holds, idempotency
//! by (saga id, step), and typed refusals.

use chrono::NaiveDate;
use qapmap_ledger::saga_operations::{self, HeldPosting, SagaError, SagaStep};
use qapmap_runtime::decimal::{Currency, Money};
use qapmap_runtime::messaging::Subjects;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{TestLedger, date};

fn d(value: i64) -> Decimal {
    Decimal::from(value)
}

#[tokio::test]
async fn an_exercise_and_a_buyback_post_through_their_holds_once() {
    let ledger = TestLedger::start().await;
    let subjects = Subjects::new(ledger.service.namespace.name.clone());
    let (company, class, holder) = (ledger.company_id, Uuid::now_v7(), Uuid::now_v7());
    ledger.authorize(class, "100", date(2024, 1, 1)).await;
    let saga = SagaStep {
        saga_id: Uuid::now_v7(),
        step: 2,
    };
    let on = NaiveDate::from_ymd_opt(2024, 2, 1).expect("date");
    let usd = Currency::parse("currency", "USD").expect("usd");

    let mut tx = ledger.pool.begin().await.expect("begin");
    let hold = saga_operations::hold_unissued_shares(&mut tx, company, saga, class, d(40))
        .await
        .expect("hold");
    let again = saga_operations::hold_unissued_shares(&mut tx, company, saga, class, d(40))
        .await
        .expect("repeat");
    assert_eq!(hold.id, again.id);
    let refused = saga_operations::hold_unissued_shares(
        &mut tx,
        company,
        SagaStep { step: 9, ..saga },
        class,
        d(61),
    )
    .await;
    assert!(matches!(
        refused,
        Err(SagaError::Rejected {
            reason: "hold_exceeds_available",
            ..
        })
    ));
    let posting = HeldPosting {
        hold_id: hold.id,
        stakeholder_id: holder,
        share_class_id: class,
        quantity: d(40),
        amount_paid: Some(Money {
            amount: d(4),
            currency: usd,
        }),
        effective_date: on,
    };
    let post_step = SagaStep { step: 4, ..saga };
    let entry = saga_operations::post_exercise(&mut tx, &subjects, company, post_step, posting)
        .await
        .expect("exercise");
    let repeat = saga_operations::post_exercise(&mut tx, &subjects, company, post_step, posting)
        .await
        .expect("repeat");
    assert_eq!(entry.id, repeat.id);
    assert_eq!(entry.lines.len(), 4, "shares and cash");
    tx.commit().await.expect("commit");
    assert_eq!(ledger.balance(holder, class).await, "40");

    let buyback = SagaStep {
        saga_id: Uuid::now_v7(),
        step: 2,
    };
    let mut tx = ledger.pool.begin().await.expect("begin");
    let refused =
        saga_operations::hold_holder_shares(&mut tx, company, buyback, holder, class, d(41)).await;
    assert!(matches!(
        refused,
        Err(SagaError::Rejected {
            reason: "hold_exceeds_available",
            ..
        })
    ));
    let hold = saga_operations::hold_holder_shares(&mut tx, company, buyback, holder, class, d(15))
        .await
        .expect("hold");
    let released = saga_operations::release_hold(&mut tx, company, buyback, Some(hold.id))
        .await
        .expect("release");
    let saga_operations::Released::Hold(released) = released else {
        panic!("the hold was placed: {released:?}");
    };
    assert_eq!(released.status, qapmap_ledger::holds::HoldStatus::Released);
    let hold = saga_operations::hold_holder_shares(
        &mut tx,
        company,
        SagaStep { step: 3, ..buyback },
        holder,
        class,
        d(15),
    )
    .await
    .expect("hold");
    let posting = HeldPosting {
        hold_id: hold.id,
        quantity: d(15),
        amount_paid: Some(Money {
            amount: d(30),
            currency: usd,
        }),
        ..posting
    };
    saga_operations::post_repurchase(
        &mut tx,
        &subjects,
        company,
        SagaStep { step: 4, ..buyback },
        posting,
    )
    .await
    .expect("repurchase");
    let consumed = saga_operations::release_hold(&mut tx, company, buyback, Some(hold.id)).await;
    assert!(matches!(
        consumed,
        Err(SagaError::Rejected {
            reason: "hold_already_consumed",
            ..
        })
    ));
    tx.commit().await.expect("commit");
    assert_eq!(ledger.balance(holder, class).await, "25");
    let outbox: i64 = ledger.count("outbox").await;
    assert_eq!(
        outbox, 3,
        "authorization, exercise, repurchase each announced once"
    );
}
