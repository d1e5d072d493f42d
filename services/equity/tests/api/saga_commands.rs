//! The saga command contract over real NATS JetStream and Postgres: the test
//! plays the orchestrator, publishing `SagaCommand`s to
//! `<ns>.cmd.equity.<command>` (a fresh `Nats-Msg-Id` for every send, as the
//! orchestrator does for re-sends) and reading the `SagaReply`s the relay
//! publishes to `<ns>.reply.<saga_type>`.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::CancellationBehavior::ReturnToPool;
use qapmap_proto::messaging::v1::SagaCommand;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_runtime::messaging::StreamKind;
use qapmap_testkit::eventually;
use qapmap_testkit::saga_bus::{REPLY_TIMEOUT, ReceivedReply, SagaBus};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::helpers::{TestApp, date, dec, request_id, usd};

pub(crate) const EXERCISE: &str = "option_exercise";
pub(crate) const BUYBACK: &str = "share_buyback";
pub(crate) const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(crate) fn envelope(
    app: &TestApp,
    saga_type: &str,
    saga_id: Uuid,
    step: i32,
    compensation: bool,
    command: Command,
) -> SagaCommand {
    SagaCommand {
        saga_id: saga_id.to_string(),
        saga_type: saga_type.to_owned(),
        step,
        compensation,
        company_id: app.company_id.to_string(),
        command: Some(command),
        ..SagaCommand::default()
    }
}

pub(crate) fn reserve_options(
    app: &TestApp,
    saga_id: Uuid,
    award_id: &str,
    quantity: &str,
) -> SagaCommand {
    let body = Command::ReserveOptions(proto::ReserveOptionsCommand {
        award_id: award_id.to_owned(),
        quantity: dec(quantity),
        exercise_date: date(2024, 1, 31),
    });
    envelope(app, EXERCISE, saga_id, 0, false, body)
}

pub(crate) fn release_options(app: &TestApp, saga_id: Uuid, reservation_id: &str) -> SagaCommand {
    let body = Command::ReleaseOptionReservation(proto::ReleaseOptionReservationCommand {
        reservation_id: reservation_id.to_owned(),
    });
    envelope(app, EXERCISE, saga_id, 0, true, body)
}

pub(crate) fn confirm_exercise(app: &TestApp, saga_id: Uuid, reservation_id: &str) -> SagaCommand {
    let body = Command::ConfirmExercise(proto::ConfirmExerciseCommand {
        reservation_id: reservation_id.to_owned(),
    });
    envelope(app, EXERCISE, saga_id, 4, false, body)
}

pub(crate) fn reserved_options(reply: &ReceivedReply) -> proto::ReserveOptionsResult {
    match &reply.reply.result {
        Some(ReplyResult::ReserveOptions(result)) => result.clone(),
        other => panic!("not a ReserveOptionsResult: {other:?}"),
    }
}

/// (reservations, their statuses joined, reserved on awards, equity events
/// written to the outbox): what an equity saga step may change.
pub(crate) async fn effects(app: &TestApp) -> (i64, String, Decimal, i64) {
    let reservations =
        app.count("option_reservations").await + app.count("repurchase_reservations").await;
    let statuses: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(status, ',' ORDER BY id) FROM
           (SELECT id, status FROM option_reservations
            UNION ALL SELECT id, status FROM repurchase_reservations) AS r",
    )
    .fetch_one(&app.pool)
    .await
    .expect("statuses");
    let reserved: Option<Decimal> = sqlx::query_scalar("SELECT sum(reserved) FROM awards")
        .fetch_one(&app.pool)
        .await
        .expect("reserved");
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%.evt.%'")
            .fetch_one(&app.pool)
            .await
            .expect("events");
    (
        reservations,
        statuses.unwrap_or_default(),
        reserved.unwrap_or_default(),
        events,
    )
}

/// A granted award with 27,083 options vested on 2024-01-31.
async fn award(app: &mut TestApp) -> proto::Award {
    let plan = app.create_plan("10000000", ReturnToPool).await;
    app.grant(&plan.id, "100000").await
}

#[tokio::test]
async fn reserve_options_replies_with_the_reservation_and_a_resend_changes_nothing() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let saga = Uuid::now_v7();
    let command = reserve_options(&app, saga, &award.id, "25000");
    let (_, _, _, events_before) = effects(&app).await;

    let first = bus
        .call("reserve_options", &command, Some(TRACEPARENT))
        .await;
    assert!(first.succeeded(), "{:?}", first.reply);
    assert_eq!(first.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(first.reply.company_id, app.company_id.to_string());
    let reserved = reserved_options(&first);
    assert_eq!(reserved.stakeholder_id, award.stakeholder_id);
    assert_eq!(
        reserved
            .exercise_price
            .as_ref()
            .map(|price| price.currency.as_str()),
        Some("USD")
    );
    let after_first = effects(&app).await;
    assert_eq!(
        after_first,
        (
            1,
            "reserved".to_owned(),
            Decimal::from(25_000),
            events_before + 1
        ),
        "one reservation and one OptionsReserved event"
    );

    // The orchestrator's deadline passed: it sends the same step again.
    let again = bus
        .call("reserve_options", &command, Some(TRACEPARENT))
        .await;
    assert_eq!(again.reply, first.reply, "the first result, again");
    assert_eq!(effects(&app).await, after_first, "no second effect");
}

#[tokio::test]
async fn a_refused_reservation_is_rejected_and_writes_nothing() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let before = effects(&app).await;

    let command = reserve_options(&app, Uuid::now_v7(), &award.id, "27084");
    let reply = bus
        .call("reserve_options", &command, Some(TRACEPARENT))
        .await;
    assert_eq!(reply.rejected_with(), "insufficient_vested_options");
    assert!(!reply.reply.reason.is_empty());
    assert_eq!(effects(&app).await, before);

    // The inbox row and the REJECTED reply committed even though the step
    // rolled back.
    let handled: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.pool)
        .await
        .expect("inbox");
    assert_eq!(handled, 1);
}

#[tokio::test]
async fn a_release_without_the_id_undoes_the_reservation_of_its_step() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let saga = Uuid::now_v7();
    let reserved = bus
        .call(
            "reserve_options",
            &reserve_options(&app, saga, &award.id, "1000"),
            Some(TRACEPARENT),
        )
        .await;
    assert!(reserved.succeeded(), "{:?}", reserved.reply);

    // The reserve timed out for the orchestrator: it never learned the id.
    let release = release_options(&app, saga, "");
    let released = bus
        .call("release_option_reservation", &release, Some(TRACEPARENT))
        .await;
    assert!(released.succeeded(), "{:?}", released.reply);
    assert!(released.reply.compensation);
    let after = effects(&app).await;
    assert_eq!(after.0, 1);
    assert_eq!(after.1, "released");
    assert_eq!(
        after.2,
        Decimal::ZERO,
        "the options are back with the holder"
    );

    // Compensating twice, with or without the id, succeeds and changes nothing.
    let again = bus
        .call("release_option_reservation", &release, Some(TRACEPARENT))
        .await;
    assert!(again.succeeded(), "{:?}", again.reply);
    let with_id = release_options(&app, saga, &reserved_options(&reserved).reservation_id);
    let with_id = bus
        .call("release_option_reservation", &with_id, Some(TRACEPARENT))
        .await;
    assert!(with_id.succeeded(), "{:?}", with_id.reply);
    assert_eq!(effects(&app).await, after);
}

#[tokio::test]
async fn a_release_before_the_reserve_leaves_a_tombstone_and_refuses_the_late_reserve() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let saga = Uuid::now_v7();
    let before = effects(&app).await;

    let release = release_options(&app, saga, "");
    let released = bus
        .call("release_option_reservation", &release, Some(TRACEPARENT))
        .await;
    assert!(released.succeeded(), "{:?}", released.reply);
    let tombstones: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_tombstones WHERE saga_id = $1 AND step = 0")
            .bind(saga)
            .fetch_one(&app.pool)
            .await
            .expect("tombstones");
    assert_eq!(tombstones, 1);

    // The reserve command was only delayed; it lands after its compensation.
    let late = bus
        .call(
            "reserve_options",
            &reserve_options(&app, saga, &award.id, "1000"),
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(late.rejected_with(), "compensated_before_applied");
    assert_eq!(effects(&app).await, before, "the late reserve did nothing");

    let again = bus
        .call("release_option_reservation", &release, Some(TRACEPARENT))
        .await;
    assert!(again.succeeded(), "compensating twice succeeds");
}

#[tokio::test]
async fn a_confirm_after_the_pivot_exercises_once_and_repeats_succeed() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let saga = Uuid::now_v7();
    let reserved = bus
        .call(
            "reserve_options",
            &reserve_options(&app, saga, &award.id, "25000"),
            Some(TRACEPARENT),
        )
        .await;
    let reservation_id = reserved_options(&reserved).reservation_id;

    let confirm = confirm_exercise(&app, saga, &reservation_id);
    for _ in 0..2 {
        let confirmed = bus
            .call("confirm_exercise", &confirm, Some(TRACEPARENT))
            .await;
        assert!(confirmed.succeeded(), "{:?}", confirmed.reply);
        assert_eq!(confirmed.reply.step, 4);
    }
    let exercised: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subject LIKE '%.options_exercised'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        exercised, 1,
        "one OptionsExercised, however often confirmed"
    );
    let position = app
        .position(&award.id, date(2024, 1, 31))
        .await
        .position
        .expect("position");
    assert_eq!(crate::helpers::value(&position.exercised), "25000");

    // The relay publishes the events the ledger's cap table consumes.
    let subjects = app.service.namespace.subjects();
    let stream = bus
        .jetstream
        .get_stream(subjects.stream_name(StreamKind::Events))
        .await
        .expect("EVENTS stream");
    let exercised_subject = subjects.event("equity", "options_exercised");
    let published = eventually(REPLY_TIMEOUT, || {
        let stream = stream.clone();
        let subject = exercised_subject.clone();
        async move {
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .is_ok()
        }
    })
    .await;
    assert!(published, "OptionsExercised reached {exercised_subject}");
}

#[tokio::test]
async fn another_companys_award_or_reservation_is_not_found() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let award = award(&mut app).await;
    let saga = Uuid::now_v7();
    let reserved = bus
        .call(
            "reserve_options",
            &reserve_options(&app, saga, &award.id, "1000"),
            Some(TRACEPARENT),
        )
        .await;
    let reservation_id = reserved_options(&reserved).reservation_id;
    let before = effects(&app).await;
    let stranger = Uuid::now_v7().to_string();

    let mut foreign_reserve = reserve_options(&app, Uuid::now_v7(), &award.id, "1000");
    foreign_reserve.company_id = stranger.clone();
    let reply = bus
        .call("reserve_options", &foreign_reserve, Some(TRACEPARENT))
        .await;
    assert_eq!(reply.rejected_with(), "not_found");
    assert_eq!(reply.reply.company_id, stranger);

    let mut foreign_release = release_options(&app, saga, &reservation_id);
    foreign_release.company_id = stranger.clone();
    let reply = bus
        .call(
            "release_option_reservation",
            &foreign_release,
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(reply.rejected_with(), "not_found");

    // Without the id, the release finds the step's reservation, of another company.
    let mut foreign_blind_release = release_options(&app, saga, "");
    foreign_blind_release.company_id = stranger.clone();
    let reply = bus
        .call(
            "release_option_reservation",
            &foreign_blind_release,
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(reply.rejected_with(), "not_found");

    let mut foreign_confirm = confirm_exercise(&app, saga, &reservation_id);
    foreign_confirm.company_id = stranger;
    let reply = bus
        .call("confirm_exercise", &foreign_confirm, Some(TRACEPARENT))
        .await;
    assert_eq!(reply.rejected_with(), "not_found");
    assert_eq!(effects(&app).await, before, "nothing changed");
}

#[tokio::test]
async fn a_buyback_reserves_confirms_and_a_late_reserve_after_its_release_is_refused() {
    let mut app = TestApp::spawn().await;
    let mut bus = SagaBus::connect(&app.service.namespace, "equity").await;
    let class = app.create_class("1000000").await;
    let program = app
        .client
        .create_repurchase_program(proto::CreateRepurchaseProgramRequest {
            request_id: request_id(),
            company_id: app.company_id.to_string(),
            share_class_id: class.id.clone(),
            max_shares: dec("1000"),
            max_price_per_share: usd("2.50"),
            start_date: date(2025, 1, 1),
            end_date: date(2025, 12, 31),
        })
        .await
        .expect("program")
        .into_inner()
        .program
        .expect("program");
    let reserve = |app: &TestApp, saga: Uuid, quantity: &str| {
        let body = Command::ReserveRepurchase(proto::ReserveRepurchaseCommand {
            program_id: program.id.clone(),
            stakeholder_id: Uuid::now_v7().to_string(),
            quantity: dec(quantity),
            price_per_share: usd("2.00"),
            repurchase_date: date(2025, 6, 30),
        });
        envelope(app, BUYBACK, saga, 0, false, body)
    };

    let saga = Uuid::now_v7();
    let reserved = bus
        .call(
            "reserve_repurchase",
            &reserve(&app, saga, "600"),
            Some(TRACEPARENT),
        )
        .await;
    let reservation_id = match &reserved.reply.result {
        Some(ReplyResult::ReserveRepurchase(result)) => {
            assert_eq!(result.share_class_id, class.id);
            result.reservation_id.clone()
        }
        other => panic!("not a ReserveRepurchaseResult: {other:?}"),
    };
    let refused = bus
        .call(
            "reserve_repurchase",
            &reserve(&app, Uuid::now_v7(), "401"),
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(refused.rejected_with(), "program_exhausted");

    let confirm = envelope(
        &app,
        BUYBACK,
        saga,
        4,
        false,
        Command::ConfirmRepurchase(proto::ConfirmRepurchaseCommand { reservation_id }),
    );
    for _ in 0..2 {
        let confirmed = bus
            .call("confirm_repurchase", &confirm, Some(TRACEPARENT))
            .await;
        assert!(confirmed.succeeded(), "{:?}", confirmed.reply);
    }
    assert_eq!(effects(&app).await.1, "confirmed");

    let timed_out = Uuid::now_v7();
    let release = envelope(
        &app,
        BUYBACK,
        timed_out,
        0,
        true,
        Command::ReleaseRepurchaseReservation(proto::ReleaseRepurchaseReservationCommand {
            reservation_id: String::new(),
        }),
    );
    let released = bus
        .call(
            "release_repurchase_reservation",
            &release,
            Some(TRACEPARENT),
        )
        .await;
    assert!(released.succeeded(), "{:?}", released.reply);
    let before = effects(&app).await;
    let late = bus
        .call(
            "reserve_repurchase",
            &reserve(&app, timed_out, "100"),
            Some(TRACEPARENT),
        )
        .await;
    assert_eq!(late.rejected_with(), "compensated_before_applied");
    assert_eq!(effects(&app).await, before);
}
