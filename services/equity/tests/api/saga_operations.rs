//! The saga steps equity performs, called directly on real transactions as
//! the orchestrator's handler will: reserve, release and confirm for
//! exercises and buybacks, idempotent by (saga id, step).

use chrono::NaiveDate;
use qapmap_equity::saga_operations::{self, RepurchaseRequest, SagaError, SagaStep};
use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;
use qapmap_runtime::decimal::{Currency, Money};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_award_invariant, assert_pool_invariant, date, dec, request_id, usd, value,
};

fn day(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("date")
}

fn step(app: &TestApp, saga_id: Uuid, step: i32) -> SagaStep {
    SagaStep {
        company_id: app.company_id,
        saga_id,
        step,
    }
}

fn reason_of<T: std::fmt::Debug>(result: Result<T, SagaError>) -> &'static str {
    result
        .expect_err("rejected")
        .reason_code()
        .expect("a business rejection")
}

async fn reserve(
    app: &TestApp,
    saga: SagaStep,
    award_id: Uuid,
    quantity: i64,
    on: NaiveDate,
) -> Result<saga_operations::OptionReservation, SagaError> {
    let equity = app.equity();
    let mut transaction = app.pool.begin().await.expect("begin");
    let result = saga_operations::reserve_options(
        &mut transaction,
        &equity.subjects,
        saga,
        award_id,
        Decimal::from(quantity),
        on,
        None,
    )
    .await;
    if result.is_ok() {
        transaction.commit().await.expect("commit");
    }
    result
}

#[tokio::test]
async fn an_exercise_reserves_then_confirms_once_and_repeats_change_nothing() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let award_id: Uuid = award.id.parse().expect("uuid");
    let saga = Uuid::now_v7();

    // The options tutorial: 25,000 exercised on 2024-01-31, when 27,083 were vested.
    let reservation = reserve(
        &app,
        step(&app, saga, 1),
        award_id,
        25_000,
        day(2024, 1, 31),
    )
    .await
    .expect("reserved");
    let repeat = reserve(
        &app,
        step(&app, saga, 1),
        award_id,
        25_000,
        day(2024, 1, 31),
    )
    .await
    .expect("repeat");
    assert_eq!(repeat, reservation);
    assert_eq!(reservation.share_class_id.to_string(), plan.share_class_id);
    assert_eq!(reservation.exercise_price.amount, Decimal::new(10, 2));
    assert_eq!(app.count("option_reservations").await, 1);
    let other_saga = reserve(
        &app,
        step(&app, Uuid::now_v7(), 1),
        award_id,
        2_084,
        day(2024, 1, 31),
    )
    .await;
    assert_eq!(
        reason_of(other_saga),
        "insufficient_vested_options",
        "2,083 remain exercisable"
    );

    let equity = app.equity();
    for _ in 0..2 {
        let mut transaction = app.pool.begin().await.expect("begin");
        let confirmed = saga_operations::confirm_exercise(
            &mut transaction,
            &equity.subjects,
            step(&app, saga, 5),
            reservation.reservation_id,
        )
        .await
        .expect("confirmed");
        transaction.commit().await.expect("commit");
        assert_eq!(confirmed.quantity, Decimal::from(25_000));
    }
    let exercised: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%options_exercised'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        exercised, 1,
        "one OptionsExercised, however often confirmed"
    );

    let response = app.position(&award.id, date(2024, 1, 31)).await;
    let position = response.position.expect("position");
    assert_eq!(value(&position.exercised), "25000");
    assert_eq!(value(&position.vested_unexercised), "2083");
    assert_eq!(value(&position.unvested), "72917");
    assert_eq!(value(&position.reserved), "0");
    assert_award_invariant(&award, &position);
    let pool = app.pool_summary(&plan.id).await;
    assert_eq!(
        (value(&pool.exercised).as_str(), value(&pool.live).as_str()),
        ("25000", "75000")
    );
    assert_pool_invariant(&pool);

    let mut transaction = app.pool.begin().await.expect("begin");
    let late_release = saga_operations::release_option_reservation(
        &mut transaction,
        &equity.subjects,
        step(&app, saga, 1),
        Some(reservation.reservation_id),
    )
    .await;
    assert_eq!(reason_of(late_release), "reservation_already_confirmed");
}

#[tokio::test]
async fn concurrent_reservations_on_one_award_never_over_reserve() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let award_id: Uuid = award.id.parse().expect("uuid");
    // 25,000 vested on 2023-12-31; eight sagas ask for 4,000 each: six fit.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = app.pool.clone();
            let equity = app.equity();
            let saga = step(&app, Uuid::now_v7(), 1);
            tokio::spawn(async move {
                let mut transaction = pool.begin().await.expect("begin");
                let result = saga_operations::reserve_options(
                    &mut transaction,
                    &equity.subjects,
                    saga,
                    award_id,
                    Decimal::from(4_000),
                    day(2023, 12, 31),
                    None,
                )
                .await;
                if result.is_ok() {
                    transaction.commit().await.expect("commit");
                }
                result.map(|_| ()).map_err(|error| error.reason_code())
            })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => reserved += 1,
            Err(reason) => assert_eq!(reason, Some("insufficient_vested_options")),
        }
    }
    assert_eq!(reserved, 6);
    let total: Decimal = sqlx::query_scalar("SELECT reserved FROM awards")
        .fetch_one(&app.pool)
        .await
        .expect("reserved");
    assert_eq!(total, Decimal::from(24_000));
}

#[tokio::test]
async fn reservations_respect_expiry_and_the_post_termination_window_and_release_restores() {
    let mut app = TestApp::spawn().await;
    let plan = app.create_plan("10000000", ReturnToPool).await;
    let award = app.grant(&plan.id, "100000").await;
    let award_id: Uuid = award.id.parse().expect("uuid");
    let before_cliff = reserve(
        &app,
        step(&app, Uuid::now_v7(), 1),
        award_id,
        1,
        day(2023, 6, 1),
    )
    .await;
    assert_eq!(reason_of(before_cliff), "insufficient_vested_options");
    let expired = reserve(
        &app,
        step(&app, Uuid::now_v7(), 1),
        award_id,
        1,
        day(2033, 1, 1),
    )
    .await;
    assert_eq!(reason_of(expired), "award_expired");

    let saga = Uuid::now_v7();
    let held = reserve(&app, step(&app, saga, 1), award_id, 1_000, day(2024, 2, 1))
        .await
        .expect("reserved");
    let equity = app.equity();
    for _ in 0..2 {
        let mut transaction = app.pool.begin().await.expect("begin");
        saga_operations::release_option_reservation(
            &mut transaction,
            &equity.subjects,
            step(&app, saga, -1),
            Some(held.reservation_id),
        )
        .await
        .expect("released");
        transaction.commit().await.expect("commit");
    }
    let position = app
        .position(&award.id, date(2024, 2, 1))
        .await
        .position
        .expect("position");
    assert_eq!(
        (
            value(&position.reserved).as_str(),
            value(&position.exercisable).as_str()
        ),
        ("0", "27083")
    );

    let terminate = proto::RecordAwardTerminationRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        award_id: award.id.clone(),
        termination_date: date(2024, 2, 29),
        reason: proto::TerminationReason::InvoluntaryWithCause as i32,
    };
    app.client
        .record_award_termination(terminate)
        .await
        .expect("terminated");
    let after_window = reserve(
        &app,
        step(&app, Uuid::now_v7(), 1),
        award_id,
        1,
        day(2024, 3, 1),
    )
    .await;
    assert_eq!(reason_of(after_window), "outside_exercise_window");
    assert_eq!(
        app.count("option_reservations").await,
        1,
        "refusals wrote nothing"
    );
}

#[tokio::test]
async fn a_repurchase_program_holds_capacity_within_its_cap_price_and_window() {
    let mut app = TestApp::spawn().await;
    let class = app.create_class("1000000").await;
    let create = proto::CreateRepurchaseProgramRequest {
        request_id: request_id(),
        company_id: app.company_id.to_string(),
        share_class_id: class.id.clone(),
        max_shares: dec("1000"),
        max_price_per_share: usd("2.50"),
        start_date: date(2025, 1, 1),
        end_date: date(2025, 12, 31),
    };
    let backwards = proto::CreateRepurchaseProgramRequest {
        end_date: date(2024, 12, 31),
        ..create.clone()
    };
    let status = app
        .client
        .create_repurchase_program(backwards)
        .await
        .expect_err("end before start");
    assert_eq!(crate::helpers::bad_field(&status), "end_date");
    let program = app
        .client
        .create_repurchase_program(create)
        .await
        .expect("created")
        .into_inner()
        .program
        .expect("program");
    let program_id: Uuid = program.id.parse().expect("uuid");
    let usd = |amount: i64, scale: u32| Money {
        amount: Decimal::new(amount, scale),
        currency: Currency::parse("c", "USD").expect("USD"),
    };
    let ask = |quantity: i64, price: Money, on: NaiveDate| RepurchaseRequest {
        program_id,
        stakeholder_id: Uuid::nil(),
        quantity: Decimal::from(quantity),
        price_per_share: price,
        repurchase_date: on,
    };
    let equity = app.equity();
    let attempt = |request: RepurchaseRequest, saga: SagaStep| {
        let pool = app.pool.clone();
        let subjects = equity.subjects.clone();
        async move {
            let mut transaction = pool.begin().await.expect("begin");
            let result = saga_operations::reserve_repurchase(
                &mut transaction,
                &subjects,
                saga,
                request,
                None,
            )
            .await;
            if result.is_ok() {
                transaction.commit().await.expect("commit");
            }
            result
        }
    };

    let fresh = || step(&app, Uuid::now_v7(), 1);
    assert_eq!(
        reason_of(attempt(ask(10, usd(250, 2), day(2024, 12, 31)), fresh()).await),
        "outside_program_window"
    );
    assert_eq!(
        reason_of(attempt(ask(10, usd(251, 2), day(2025, 6, 1)), fresh()).await),
        "price_above_program_maximum"
    );
    assert_eq!(
        reason_of(attempt(ask(1001, usd(1, 0), day(2025, 6, 1)), fresh()).await),
        "program_exhausted"
    );

    let saga = fresh();
    let held = attempt(ask(600, usd(2, 0), day(2025, 6, 1)), saga)
        .await
        .expect("reserved");
    assert_eq!(
        attempt(ask(600, usd(2, 0), day(2025, 6, 1)), saga)
            .await
            .expect("repeat"),
        held
    );
    assert_eq!(
        reason_of(attempt(ask(401, usd(2, 0), day(2025, 6, 1)), fresh()).await),
        "program_exhausted"
    );

    let mut transaction = app.pool.begin().await.expect("begin");
    let confirm_step = SagaStep { step: 5, ..saga };
    saga_operations::confirm_repurchase(
        &mut transaction,
        &equity.subjects,
        confirm_step,
        held.reservation_id,
    )
    .await
    .expect("confirmed");
    transaction.commit().await.expect("commit");
    let request = proto::GetRepurchaseProgramRequest {
        company_id: app.company_id.to_string(),
        program_id: program.id.clone(),
    };
    let program = app
        .client
        .get_repurchase_program(request)
        .await
        .expect("program")
        .into_inner()
        .program
        .expect("program");
    assert_eq!(
        (
            value(&program.repurchased_shares).as_str(),
            value(&program.reserved_shares).as_str()
        ),
        ("600", "0")
    );
    let repurchased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%shares_repurchased'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(repurchased, 1);
}

/// The index a generic plan of `sql` (one uuid and one integer parameter)
/// reads, with sequential scans ruled out: a test table is too small for the
/// planner to prefer an index it would prefer at production size.
async fn index_used(app: &TestApp, sql: &str) -> Option<String> {
    let mut transaction = app.pool.begin().await.expect("begin");
    sqlx::raw_sql("SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *transaction)
        .await
        .expect("settings");
    let plan: serde_json::Value =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")))
            .bind(Uuid::now_v7())
            .bind(1_i32)
            .fetch_one(&mut *transaction)
            .await
            .expect("explain");
    plan[0]["Plan"]["Index Name"]
        .as_str()
        .or_else(|| plan[0]["Plan"]["Plans"][0]["Index Name"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_saga_step_is_found_by_its_own_index_before_the_company_is_known() {
    // equity_saga_step_holders looks up (saga_id, step) for every saga
    // command before confining it to a company; without an index led by
    // saga_id that lookup scans every reservation ever made.
    let app = TestApp::spawn().await;
    for (table, index) in [
        ("option_reservations", "option_reservations_by_saga_step"),
        (
            "repurchase_reservations",
            "repurchase_reservations_by_saga_step",
        ),
    ] {
        let used = index_used(
            &app,
            &format!("SELECT id FROM {table} WHERE saga_id = $1 AND step = $2"),
        )
        .await;
        assert_eq!(used.as_deref(), Some(index), "{table}");
    }
}

#[tokio::test]
async fn the_saga_step_lookup_keeps_its_plan_between_calls() {
    // As a SQL function (never inlined, being SECURITY DEFINER) it parsed
    // and planned its body on every saga command; PL/pgSQL plans it once a
    // session. Every exercise saga calls it twice.
    let app = TestApp::spawn().await;
    let (language, security_definer): (String, bool) = sqlx::query_as(
        "SELECT l.lanname::text, p.prosecdef FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.proname = 'equity_saga_step_holders'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the function exists once");
    assert_eq!(language, "plpgsql");
    assert!(security_definer);
}
