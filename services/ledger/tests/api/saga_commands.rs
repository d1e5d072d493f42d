//! The saga command contract over real JetStream: commands published on
//! `<ns>.cmd.ledger.<command>`, replies read from `<ns>.reply.<saga type>`,
//! effects checked in the ledger's database.

use std::time::Duration;

use qapmap_proto::common::v1 as common;
use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use qapmap_testkit::eventually;
use uuid::Uuid;

use crate::bus::Bus;
use crate::helpers::{TestLedger, date, dec};

const EXERCISE: &str = "option_exercise";
const BUYBACK: &str = "share_buyback";
const HOLD_STEP: i32 = 1;
const POST_STEP: i32 = 3;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const EFFECT_TIMEOUT: Duration = Duration::from_secs(20);

struct Fixture {
    ledger: TestLedger,
    bus: Bus,
    class: Uuid,
    holder: Uuid,
}

impl Fixture {
    /// A ledger with 100 authorized shares of one class.
    async fn start() -> Self {
        let ledger = TestLedger::start().await;
        let bus = Bus::connect(&ledger.service.namespace, "ledger").await;
        let class = Uuid::now_v7();
        ledger.authorize(class, "100", date(2024, 1, 1)).await;
        Self {
            ledger,
            bus,
            class,
            holder: Uuid::now_v7(),
        }
    }

    fn envelope(&self, saga_type: &str, saga_id: Uuid, step: i32, command: Command) -> SagaCommand {
        SagaCommand {
            saga_id: saga_id.to_string(),
            saga_type: saga_type.to_owned(),
            step,
            compensation: matches!(command, Command::ReleaseHold(_)),
            company_id: self.ledger.company_id.to_string(),
            command: Some(command),
            ..Default::default()
        }
    }

    fn hold_unissued(&self, saga_id: Uuid, quantity: &str) -> SagaCommand {
        self.envelope(
            EXERCISE,
            saga_id,
            HOLD_STEP,
            Command::HoldUnissuedShares(proto::HoldUnissuedSharesCommand {
                share_class_id: self.class.to_string(),
                quantity: Some(dec(quantity)),
            }),
        )
    }

    fn release(&self, saga_id: Uuid, hold_id: &str) -> SagaCommand {
        self.envelope(
            EXERCISE,
            saga_id,
            HOLD_STEP,
            Command::ReleaseHold(proto::ReleaseHoldCommand {
                hold_id: hold_id.to_owned(),
            }),
        )
    }

    /// Sends and waits for the reply.
    async fn send(&mut self, name: &str, command: &SagaCommand) -> SagaReply {
        self.bus.command(name, command, None).await;
        let saga_id = Uuid::parse_str(&command.saga_id).expect("saga id");
        self.bus
            .reply(saga_id, command.step, command.compensation)
            .await
            .reply
    }

    async fn scalar(&self, sql: &'static str, id: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.ledger.pool)
            .await
            .expect("query")
    }

    async fn holds(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM holds WHERE company_id = $1",
            self.ledger.company_id,
        )
        .await
    }

    async fn hold_status(&self, hold_id: &str) -> String {
        sqlx::query_scalar("SELECT status FROM holds WHERE id = $1")
            .bind(Uuid::parse_str(hold_id).expect("hold id"))
            .fetch_one(&self.ledger.pool)
            .await
            .expect("hold")
    }

    async fn tombstones(&self, saga_id: Uuid) -> i64 {
        self.scalar(
            "SELECT count(*) FROM saga_step_tombstones WHERE saga_id = $1",
            saga_id,
        )
        .await
    }
}

fn hold_id(reply: &SagaReply) -> String {
    match &reply.result {
        Some(ReplyResult::Hold(hold)) => hold.hold_id.clone(),
        other => panic!("expected a hold result, got {other:?} in {reply:?}"),
    }
}

fn posting(reply: &SagaReply) -> proto::PostingResult {
    match &reply.result {
        Some(ReplyResult::Posting(posting)) => posting.clone(),
        other => panic!("expected a posting result, got {other:?} in {reply:?}"),
    }
}

fn assert_succeeded(reply: &SagaReply) {
    assert_eq!(reply.outcome(), ReplyOutcome::Succeeded, "reply: {reply:?}");
}

fn assert_rejected(reply: &SagaReply, reason_code: &str) {
    assert_eq!(reply.outcome(), ReplyOutcome::Rejected, "reply: {reply:?}");
    assert_eq!(reply.reason_code, reason_code, "reply: {reply:?}");
    assert!(!reply.reason.is_empty(), "a human reason: {reply:?}");
}

fn usd(amount: &str) -> common::Money {
    common::Money {
        amount: Some(dec(amount)),
        currency: "USD".into(),
    }
}

#[tokio::test]
async fn an_exercise_holds_and_posts_once_even_when_its_commands_are_sent_again() {
    let mut fixture = Fixture::start().await;
    let saga_id = Uuid::now_v7();
    let hold = fixture.hold_unissued(saga_id, "40");
    fixture
        .bus
        .command("hold_unissued_shares", &hold, Some(TRACEPARENT))
        .await;
    let first = fixture.bus.reply(saga_id, HOLD_STEP, false).await;
    assert_succeeded(&first.reply);
    assert_eq!(
        first.reply.company_id,
        fixture.ledger.company_id.to_string()
    );
    assert_eq!(first.traceparent.as_deref(), Some(TRACEPARENT));
    let hold_id = hold_id(&first.reply);
    assert_eq!(fixture.hold_status(&hold_id).await, "active");

    // The orchestrator's deadline passed: the same step under a new message id.
    let again = fixture.send("hold_unissued_shares", &hold).await;
    assert_eq!(again, first.reply, "the first result, again");
    assert_eq!(fixture.holds().await, 1);

    let post = fixture.envelope(
        EXERCISE,
        saga_id,
        POST_STEP,
        Command::PostExercise(proto::PostExerciseCommand {
            hold_id: hold_id.clone(),
            stakeholder_id: fixture.holder.to_string(),
            share_class_id: fixture.class.to_string(),
            quantity: Some(dec("40")),
            amount_paid: Some(usd("20")),
            effective_date: Some(date(2024, 2, 1)),
        }),
    );
    let posted = fixture.send("post_exercise", &post).await;
    assert_succeeded(&posted);
    let entry = posting(&posted);
    assert!(entry.sequence > 0);
    assert_eq!(
        fixture.ledger.balance(fixture.holder, fixture.class).await,
        "40"
    );
    assert_eq!(fixture.hold_status(&hold_id).await, "consumed");

    let reposted = fixture.send("post_exercise", &post).await;
    assert_eq!(
        posting(&reposted),
        entry,
        "the same entry, not a second one"
    );
    assert_eq!(
        fixture.ledger.balance(fixture.holder, fixture.class).await,
        "40"
    );
    let entries = fixture
        .scalar(
            "SELECT count(*) FROM journal_entries WHERE company_id = $1",
            fixture.ledger.company_id,
        )
        .await;
    assert_eq!(entries, 2, "the authorization and one exercise");
}

#[tokio::test]
async fn a_buyback_holds_the_holders_shares_and_posts_the_repurchase() {
    let mut fixture = Fixture::start().await;
    let (company, class, holder) = (fixture.ledger.company_id, fixture.class, fixture.holder);
    fixture
        .ledger
        .issue(class, holder, "30", date(2024, 1, 2))
        .await
        .expect("issue");
    let saga_id = Uuid::now_v7();
    let hold = fixture.envelope(
        BUYBACK,
        saga_id,
        HOLD_STEP,
        Command::HoldHolderShares(proto::HoldHolderSharesCommand {
            share_class_id: class.to_string(),
            stakeholder_id: holder.to_string(),
            quantity: Some(dec("10")),
        }),
    );
    let held = fixture.send("hold_holder_shares", &hold).await;
    assert_succeeded(&held);
    let post = fixture.envelope(
        BUYBACK,
        saga_id,
        POST_STEP,
        Command::PostRepurchase(proto::PostRepurchaseCommand {
            hold_id: hold_id(&held),
            stakeholder_id: holder.to_string(),
            share_class_id: class.to_string(),
            quantity: Some(dec("10")),
            amount_paid: Some(usd("0")),
            effective_date: Some(date(2024, 3, 1)),
        }),
    );
    let posted = fixture.send("post_repurchase", &post).await;
    assert_succeeded(&posted);
    posting(&posted);
    assert_eq!(fixture.ledger.balance(holder, class).await, "20");
    assert_eq!(
        fixture
            .scalar(
                "SELECT count(*) FROM holds WHERE company_id = $1 AND status = 'consumed'",
                company
            )
            .await,
        1
    );
}

#[tokio::test]
async fn a_refused_hold_is_rejected_with_its_reason_and_writes_nothing() {
    let mut fixture = Fixture::start().await;
    let company = fixture.ledger.company_id;
    let accounts_before = fixture
        .scalar(
            "SELECT count(*) FROM accounts WHERE company_id = $1",
            company,
        )
        .await;

    let too_many = fixture.hold_unissued(Uuid::now_v7(), "101");
    let refused = fixture.send("hold_unissued_shares", &too_many).await;
    assert_rejected(&refused, "hold_exceeds_available");
    assert!(refused.result.is_none());

    // Holding shares of a holder who has none would open their account
    // before refusing: the savepoint takes that back too.
    let nothing_to_hold = fixture.envelope(
        BUYBACK,
        Uuid::now_v7(),
        HOLD_STEP,
        Command::HoldHolderShares(proto::HoldHolderSharesCommand {
            share_class_id: fixture.class.to_string(),
            stakeholder_id: fixture.holder.to_string(),
            quantity: Some(dec("1")),
        }),
    );
    let refused = fixture.send("hold_holder_shares", &nothing_to_hold).await;
    assert_rejected(&refused, "hold_exceeds_available");

    let mut negative = fixture.hold_unissued(Uuid::now_v7(), "1");
    if let Some(Command::HoldUnissuedShares(hold)) = &mut negative.command {
        hold.quantity = Some(dec("-1"));
    }
    let refused = fixture.send("hold_unissued_shares", &negative).await;
    assert_rejected(&refused, "invalid_argument");

    assert_eq!(fixture.holds().await, 0);
    assert_eq!(
        fixture
            .scalar(
                "SELECT count(*) FROM accounts WHERE company_id = $1",
                company
            )
            .await,
        accounts_before
    );
    assert_eq!(
        fixture
            .scalar(
                "SELECT count(*) FROM accounts WHERE company_id = $1 AND held <> 0",
                company
            )
            .await,
        0
    );
}

#[tokio::test]
async fn a_compensation_without_the_hold_id_finds_and_releases_the_steps_hold() {
    let mut fixture = Fixture::start().await;
    let saga_id = Uuid::now_v7();
    let held = fixture
        .send(
            "hold_unissued_shares",
            &fixture.hold_unissued(saga_id, "40"),
        )
        .await;
    assert_succeeded(&held);
    let hold_id = hold_id(&held);

    // The hold's reply came too late: the orchestrator compensates blind.
    let release = fixture.release(saga_id, "");
    let released = fixture.send("release_hold", &release).await;
    assert_succeeded(&released);
    assert!(released.compensation);
    assert_eq!(released.step, HOLD_STEP);
    assert_eq!(self::hold_id(&released), hold_id);
    assert_eq!(fixture.hold_status(&hold_id).await, "released");
    let held_shares = fixture
        .scalar(
            "SELECT count(*) FROM accounts WHERE company_id = $1 AND held <> 0",
            fixture.ledger.company_id,
        )
        .await;
    assert_eq!(held_shares, 0);

    // Compensating again (by step, then by id) changes nothing and succeeds.
    let again = fixture.send("release_hold", &release).await;
    assert_eq!(again, released);
    let by_id = fixture
        .send("release_hold", &fixture.release(saga_id, &hold_id))
        .await;
    assert_succeeded(&by_id);
    assert_eq!(fixture.tombstones(saga_id).await, 0);
    assert_eq!(fixture.holds().await, 1);
}

#[tokio::test]
async fn a_compensation_before_its_hold_leaves_a_tombstone_that_refuses_the_late_hold() {
    let mut fixture = Fixture::start().await;
    let saga_id = Uuid::now_v7();
    let release = fixture.release(saga_id, "");
    let released = fixture.send("release_hold", &release).await;
    assert_succeeded(&released);
    assert!(released.result.is_none(), "no hold to name: {released:?}");
    assert_eq!(fixture.tombstones(saga_id).await, 1);

    let late = fixture
        .send(
            "hold_unissued_shares",
            &fixture.hold_unissued(saga_id, "40"),
        )
        .await;
    assert_rejected(&late, "compensated_before_applied");
    assert_eq!(fixture.holds().await, 0);

    let again = fixture.send("release_hold", &release).await;
    assert_succeeded(&again);
    assert_eq!(fixture.tombstones(saga_id).await, 1);
}

#[tokio::test]
async fn a_command_naming_another_companys_hold_is_rejected_as_not_found() {
    let mut fixture = Fixture::start().await;
    let saga_id = Uuid::now_v7();
    let held = fixture
        .send(
            "hold_unissued_shares",
            &fixture.hold_unissued(saga_id, "40"),
        )
        .await;
    let hold_id = hold_id(&held);

    let other_saga = Uuid::now_v7();
    let mut release = fixture.release(other_saga, &hold_id);
    release.company_id = Uuid::now_v7().to_string();
    let refused = fixture.send("release_hold", &release).await;
    assert_rejected(&refused, "not_found");
    assert_eq!(refused.company_id, release.company_id);

    let mut post = fixture.envelope(
        EXERCISE,
        other_saga,
        POST_STEP,
        Command::PostExercise(proto::PostExerciseCommand {
            hold_id: hold_id.clone(),
            stakeholder_id: fixture.holder.to_string(),
            share_class_id: fixture.class.to_string(),
            quantity: Some(dec("40")),
            amount_paid: None,
            effective_date: Some(date(2024, 2, 1)),
        }),
    );
    post.company_id = release.company_id.clone();
    let refused = fixture.send("post_exercise", &post).await;
    assert_eq!(refused.outcome(), ReplyOutcome::Rejected, "{refused:?}");

    assert_eq!(fixture.hold_status(&hold_id).await, "active");
    assert_eq!(
        fixture.ledger.balance(fixture.holder, fixture.class).await,
        "0"
    );
}

#[tokio::test]
async fn a_command_the_ledger_does_not_handle_becomes_a_dead_letter() {
    let fixture = Fixture::start().await;
    let mut wrong_flag = fixture.hold_unissued(Uuid::now_v7(), "1");
    wrong_flag.compensation = true;
    fixture
        .bus
        .command("hold_unissued_shares", &wrong_flag, None)
        .await;
    let subject = fixture.bus.subjects.command("ledger", "garbage");
    fixture
        .bus
        .publish(subject, &Uuid::now_v7().to_string(), vec![0xff, 0xff], None)
        .await;
    let pool = fixture.ledger.pool.clone();
    let dead = eventually(EFFECT_TIMEOUT, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM dead_letters WHERE consumer = 'ledger-commands'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|count| count == 2)
        }
    })
    .await;
    assert!(dead, "both commands are dead letters");
    assert_eq!(fixture.holds().await, 0);
}
