//! A payment whose outcome is unknown parks its saga; an operator settles
//! it (`ResolvePayment`) and retries the saga (`RetrySaga`), which then
//! completes without paying twice.

use std::time::Duration;

use qapmap_proto::saga::v1::{RetrySagaRequest, SagaState};
use qapmap_proto::shareholder::v1::{PaymentResolution, PaymentStatus, ResolvePaymentRequest};
use rust_decimal::Decimal;

use crate::helpers::{System, date, number, request_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_parked_on_an_unknown_payment_completes_once_an_operator_settles_it() {
    // The gateway answers after 3 s and the shareholder waits 300 ms, so
    // every call's outcome is unknown; the pivot gets two 5 s deadlines.
    let (system, gateway) =
        System::start_with_payment_limits(Duration::from_secs(5), 2, Duration::from_millis(300))
            .await;
    let company = system
        .set_up_company("sandbox:delay-ms:3000", "48000", date(2021, 1, 1))
        .await;
    let cash_before = system.company_cash().await;

    let started = system.start_exercise(&company, "1000").await;
    let parked = system.finished(&started.id).await;

    assert_eq!(parked.state, SagaState::Parked as i32, "{parked:#?}");
    let payments = system.payments(&company).await;
    assert_eq!(payments.len(), 1, "{payments:#?}");
    assert_eq!(payments[0].status, PaymentStatus::OutcomeUnknown as i32);
    assert_eq!(
        gateway.total_calls(),
        1,
        "an unknown outcome is never retried blindly"
    );
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::ZERO, Decimal::ZERO),
        "nothing issued while the payment is unknown"
    );

    // The operator asked the gateway: the money moved.
    let resolved = system
        .shareholder()
        .resolve_payment(ResolvePaymentRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            payment_id: payments[0].id.clone(),
            resolution: PaymentResolution::MoneyMoved as i32,
            gateway_reference: "gw-reconciled-1".to_owned(),
        })
        .await
        .expect("resolved")
        .into_inner();
    assert_eq!(
        resolved.payment.expect("payment").status,
        PaymentStatus::Succeeded as i32
    );
    system
        .sagas()
        .retry_saga(RetrySagaRequest {
            request_id: request_id(),
            company_id: system.company_id.to_string(),
            saga_id: started.id.clone(),
        })
        .await
        .expect("retried");
    let saga = system.finished(&started.id).await;

    assert_eq!(saga.state, SagaState::Completed as i32, "{saga:#?}");
    assert_eq!(gateway.total_calls(), 1, "the money moved once");
    let payments = system.payments(&company).await;
    assert_eq!(payments.len(), 1, "{payments:#?}");
    assert_eq!(payments[0].status, PaymentStatus::Succeeded as i32);
    assert_eq!(payments[0].gateway_reference, "gw-reconciled-1");
    assert_eq!(
        system.holder_shares(&company).await,
        (Decimal::from(1000), Decimal::ZERO)
    );
    assert_eq!(
        system.company_cash().await - cash_before,
        Decimal::from(1500)
    );
    let position = system.award_position(&company).await;
    assert_eq!(number(&position.exercised), Decimal::from(1000));
    assert_eq!(number(&position.reserved), Decimal::ZERO);
    system.assert_share_invariant(&company).await;
    system.assert_pool_invariant(&company).await;
}
