//! Replies and the timer against the real Postgres:
//! - a batch of replies applied in one step (`Engine::handle_replies`, the
//!   consumer's set-based path) leaves every saga, step and command exactly
//!   as the same replies applied one by one (`Engine::handle_reply`) do: two
//!   twin sets of sagas, one per path;
//! - the timer's look (`wake_at`) kept through a saga's steps never delays
//!   a deadline (`due_at`), and a look that comes early acts on nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use qapmap_orchestrator::context::{SagaContext, SagaInput};
use qapmap_orchestrator::definition::Timing;
use qapmap_orchestrator::engine::{Engine, StartRequest};
use qapmap_orchestrator::metrics::SagaMetrics;
use qapmap_orchestrator::sagas::EXERCISE;
use qapmap_orchestrator::store::Initiator;
use qapmap_proto::common::v1 as common;
use qapmap_proto::equity::v1::ReserveOptionsResult;
use qapmap_proto::ledger::v1::HoldResult;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use qapmap_runtime::messaging::Subjects;
use qapmap_testkit::database::TestDatabase;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

async fn engine(database: &TestDatabase) -> Engine {
    engine_with(database, Timing::default()).await
}

async fn engine_with(database: &TestDatabase, timing: Timing) -> Engine {
    let pool = PgPool::connect(&database.url).await.expect("connect");
    qapmap_runtime::database::runtime_migrator()
        .run(&pool)
        .await
        .expect("runtime migrations");
    qapmap_orchestrator::MIGRATOR
        .run(&pool)
        .await
        .expect("orchestrator migrations");
    Engine {
        pool: pool.clone(),
        subjects: Subjects::new("replies-test"),
        timing,
        metrics: Arc::new(SagaMetrics::new(pool)),
    }
}

async fn start_exercise(engine: &Engine, company: Uuid, award_id: Uuid) -> Uuid {
    let request_id = Uuid::now_v7().to_string();
    let context = SagaContext::new(SagaInput::Exercise {
        award_id,
        quantity: Decimal::from(100),
        exercise_date: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
    });
    let started = engine
        .start(StartRequest {
            company_id: company,
            request_id: &request_id,
            request: request_id.as_bytes().to_vec(),
            method: "/test/StartExercise",
            initiator: Initiator::default(),
            definition: &EXERCISE,
            context,
        })
        .await
        .expect("saga started");
    started.saga.id
}

fn succeeded(saga: Uuid, step: i32, result: Option<ReplyResult>) -> SagaReply {
    SagaReply {
        saga_id: saga.to_string(),
        step,
        outcome: ReplyOutcome::Succeeded as i32,
        result,
        ..Default::default()
    }
}

fn reserved() -> Option<ReplyResult> {
    Some(ReplyResult::ReserveOptions(ReserveOptionsResult {
        reservation_id: "reservation-1".into(),
        share_class_id: "class-1".into(),
        stakeholder_id: "holder-1".into(),
        exercise_price: Some(common::Money {
            amount: Some(common::Decimal {
                value: "0.25".into(),
            }),
            currency: "USD".into(),
        }),
    }))
}

fn held() -> Option<ReplyResult> {
    Some(ReplyResult::Hold(HoldResult {
        hold_id: "hold-1".into(),
    }))
}

/// The replies of the test for sagas `[a, b, c, d, e]`, in stream order:
/// a advances one step; b is declined at its first step (compensates);
/// c advances, then its first step's reply comes again (stale); d gets a
/// reply for a step it has not reached; e advances two steps in one batch;
/// one reply names no saga here, one a malformed id.
fn replies(sagas: &[Uuid]) -> Vec<SagaReply> {
    let [a, b, c, d, e] = sagas else {
        panic!("five sagas")
    };
    vec![
        succeeded(*a, 0, reserved()),
        SagaReply {
            saga_id: b.to_string(),
            step: 0,
            outcome: ReplyOutcome::Rejected as i32,
            reason_code: "NOT_VESTED".into(),
            reason: "only 40 vested".into(),
            ..Default::default()
        },
        succeeded(*c, 0, reserved()),
        succeeded(*e, 0, reserved()),
        succeeded(*c, 0, reserved()),
        succeeded(*d, 3, None),
        succeeded(Uuid::now_v7(), 0, reserved()),
        SagaReply {
            saga_id: "not-a-uuid".into(),
            ..Default::default()
        },
        succeeded(*e, 1, held()),
    ]
}

/// What a user (or the relay) sees of a saga: its row, its steps, its
/// commands in the order the relay publishes them.
async fn observed(pool: &PgPool, saga: Uuid) -> String {
    let (state, reason, cursor, attempts, awaiting, context): (
        String,
        String,
        i32,
        i32,
        String,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT state, state_reason, cursor_step, attempts, awaiting, context
         FROM sagas WHERE id = $1",
    )
    .bind(saga)
    .fetch_one(pool)
    .await
    .expect("saga row");
    let steps: Vec<(String, i32, bool, bool, String)> = sqlx::query_as(
        "SELECT status, attempts, started_at IS NOT NULL, finished_at IS NOT NULL, last_error
         FROM saga_steps WHERE saga_id = $1 ORDER BY step_index",
    )
    .bind(saga)
    .fetch_all(pool)
    .await
    .expect("step rows");
    let commands: Vec<(String, Vec<u8>, String)> = sqlx::query_as(
        "SELECT subject, payload, partition_key FROM outbox
         WHERE partition_key = $1 ORDER BY id",
    )
    .bind(saga.to_string())
    .fetch_all(pool)
    .await
    .expect("outbox rows");
    let commands: Vec<String> = commands
        .into_iter()
        .map(|(subject, payload, key)| {
            let command = SagaCommand::decode(payload.as_slice()).expect("a SagaCommand");
            // Ids and deadlines differ between the twins by construction.
            assert_eq!(command.saga_id, key);
            assert!(command.deadline.is_some());
            let subject = subject.rsplit('.').take(2).collect::<Vec<_>>().join("<");
            format!(
                "{subject} step {} compensation {} {:?}",
                command.step, command.compensation, command.command
            )
        })
        .collect();
    format!(
        "{state} {reason:?} cursor {cursor} attempts {attempts} awaiting {awaiting}\n\
         context {context}\nsteps {steps:?}\ncommands {commands:#?}"
    )
}

#[tokio::test]
async fn a_batch_of_replies_leaves_the_same_sagas_and_commands_as_one_by_one() {
    let database = TestDatabase::create("orch_replies").await;
    let engine = engine(&database).await;
    let company = Uuid::now_v7();
    let mut one_by_one = Vec::new();
    let mut batched = Vec::new();
    for _ in 0..5 {
        let award = Uuid::now_v7();
        one_by_one.push(start_exercise(&engine, company, award).await);
        batched.push(start_exercise(&engine, company, award).await);
    }

    for reply in replies(&one_by_one) {
        let mut transaction = engine.pool.begin().await.expect("begin");
        engine
            .handle_reply(&mut transaction, &reply)
            .await
            .expect("reply applied");
        transaction.commit().await.expect("commit");
    }
    let batch: Vec<(SagaReply, tracing::Span)> = replies(&batched)
        .into_iter()
        .map(|reply| (reply, tracing::Span::none()))
        .collect();
    let mut transaction = engine.pool.begin().await.expect("begin");
    engine
        .handle_replies(&mut transaction, &batch)
        .await
        .expect("batch applied");
    transaction.commit().await.expect("commit");

    for (index, (single, twin)) in one_by_one.iter().zip(&batched).enumerate() {
        let expected = observed(&engine.pool, *single).await;
        assert_eq!(
            observed(&engine.pool, *twin).await,
            expected,
            "saga {index}"
        );
    }
    // The twins' outcomes are the ones the replies call for.
    let state = |saga: Uuid| {
        let pool = engine.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT state FROM sagas WHERE id = $1")
                .bind(saga)
                .fetch_one(&pool)
                .await
                .expect("state")
        }
    };
    let commands = |saga: Uuid| {
        let pool = engine.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE partition_key = $1")
                .bind(saga.to_string())
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(commands(batched[0]).await, 2, "a: reserve, hold");
    assert_eq!(
        commands(batched[2]).await,
        2,
        "c: the stale reply sent nothing"
    );
    assert_eq!(
        commands(batched[3]).await,
        1,
        "d: nothing past its first step"
    );
    assert_eq!(commands(batched[4]).await, 3, "e: reserve, hold, collect");
    assert_eq!(state(batched[1]).await, "compensated", "b: declined");
    for running in [0, 2, 3, 4] {
        assert_eq!(state(batched[running]).await, "running", "saga {running}");
    }
}

/// The saga's timer look, its action's due time, its state and what each
/// step is doing.
async fn timer_view(
    pool: &PgPool,
    saga: Uuid,
) -> (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    Vec<String>,
) {
    let (wake_at, due_at, state) =
        sqlx::query_as("SELECT wake_at, due_at, state FROM sagas WHERE id = $1")
            .bind(saga)
            .fetch_one(pool)
            .await
            .expect("saga row");
    let steps =
        sqlx::query_scalar("SELECT status FROM saga_steps WHERE saga_id = $1 ORDER BY step_index")
            .bind(saga)
            .fetch_all(pool)
            .await
            .expect("step rows");
    (wake_at, due_at, state, steps)
}

async fn sleep_past(instant: DateTime<Utc>) {
    let left = (instant - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_look_kept_through_the_steps_acts_on_nothing_early_and_the_deadline_still_holds() {
    let database = TestDatabase::create("orch_timer").await;
    let engine = engine_with(
        &database,
        Timing {
            step_deadline: Duration::from_secs(2),
            ..Timing::default()
        },
    )
    .await;
    let saga = start_exercise(&engine, Uuid::now_v7(), Uuid::now_v7()).await;
    let (first_look, first_due, _, _) = timer_view(&engine.pool, saga).await;
    assert_eq!(first_look, first_due, "a new saga's look is its deadline");

    // Step 0 answers 1.5 s in: step 1 is due 2 s later, after the look.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut transaction = engine.pool.begin().await.expect("begin");
    engine
        .handle_reply(&mut transaction, &succeeded(saga, 0, reserved()))
        .await
        .expect("reply applied");
    transaction.commit().await.expect("commit");
    let (look, due, state, steps) = timer_view(&engine.pool, saga).await;
    let (look, due) = (look.expect("a look"), due.expect("a deadline"));
    assert_eq!(Some(look), first_look, "the earlier look is kept");
    assert!(
        due > look,
        "step 1's deadline {due} is after the look {look}"
    );
    assert_eq!((state.as_str(), steps[1].as_str()), ("running", "running"));

    // The look comes before step 1's deadline: nothing times out, and the
    // next look is the deadline itself.
    sleep_past(look).await;
    assert_eq!(engine.wake_due().await.expect("timer pass"), 1);
    let (next_look, still_due, state, steps) = timer_view(&engine.pool, saga).await;
    assert!(Utc::now() < due, "the machine stalled past the deadline");
    assert_eq!(still_due, Some(due));
    assert_eq!(next_look, Some(due), "the next look is the deadline");
    assert_eq!(
        (state.as_str(), steps[1].as_str()),
        ("running", "running"),
        "an early look times nothing out"
    );
    assert_eq!(engine.wake_due().await.expect("timer pass"), 0);

    // Past the deadline the hold step times out and is compensated.
    sleep_past(due).await;
    assert_eq!(engine.wake_due().await.expect("timer pass"), 1);
    let (_, _, state, steps) = timer_view(&engine.pool, saga).await;
    assert_eq!(state, "compensating");
    assert_eq!(steps[1], "compensating", "the timed-out hold is undone");
    let compensations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE partition_key = $1 AND subject LIKE '%release%'",
    )
    .bind(saga.to_string())
    .fetch_one(&engine.pool)
    .await
    .expect("count");
    assert_eq!(compensations, 1, "one release command sent");
}
