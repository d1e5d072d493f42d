//! Tenant isolation behind the `company_id` filters: row-level security on
//! every ledger table, reads confined to the request's company, and saga
//! commands confined to theirs and audited under who started the saga.

use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_proto::messaging::v1::saga_command::Command;
use qapmap_proto::messaging::v1::{Initiator, SagaCommand};
use qapmap_proto::ops::v1 as ops;
use qapmap_proto::ops::v1::audit_service_client::AuditServiceClient;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_runtime::tenancy;
use qapmap_testkit::auth::admin_token;
use qapmap_testkit::tenancy::visible_rows;
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::Bus;
use crate::helpers::{TestLedger, date, dec, stakeholder_account};
use crate::ocf_tutorial::{event, granted, plan_created};

type Client = LedgerServiceClient<AuthenticatedChannel>;

/// Every table of the ledger's own schema that holds a company's rows.
const TENANT_TABLES: [&str; 11] = [
    "ledgers",
    "projection_versions",
    "share_classes",
    "accounts",
    "journal_entries",
    "journal_lines",
    "holds",
    "applied_equity_events",
    "equity_plans",
    "option_movements",
    "saga_step_tombstones",
];

/// What one company's data is made of.
struct Company {
    id: Uuid,
    class: Uuid,
    holder: Uuid,
    /// The issuance to `holder`.
    entry_id: Uuid,
}

/// A company with a row in every tenant table, each written through the
/// code that writes it in production (the projection and the tombstone
/// confined, as their consumer runs them).
async fn company_with_rows(client: &Client, pool: &PgPool) -> Company {
    let company = Uuid::now_v7();
    let class = crate::ocf_tutorial::COMMON;
    let holder = Uuid::now_v7();
    client
        .clone()
        .adjust_authorized_shares(proto::AdjustAuthorizedSharesRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: company.to_string(),
            share_class_id: class.to_string(),
            new_authorized_shares: Some(dec("100")),
            effective_date: Some(date(2024, 1, 1)),
        })
        .await
        .expect("authorized");
    let issued = client
        .clone()
        .issue_shares(proto::IssueSharesRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: company.to_string(),
            share_class_id: class.to_string(),
            stakeholder_id: holder.to_string(),
            quantity: Some(dec("10")),
            price_per_share: None,
            effective_date: Some(date(2024, 1, 2)),
        })
        .await
        .expect("issued")
        .into_inner()
        .entry
        .expect("entry");
    client
        .clone()
        .place_hold(proto::PlaceHoldRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: company.to_string(),
            account: Some(stakeholder_account(holder, class)),
            quantity: Some(dec("1")),
        })
        .await
        .expect("hold placed");
    for body in [plan_created("1000"), granted("100")] {
        let mut transaction = pool.begin().await.expect("begin");
        tenancy::confine(&mut transaction, company)
            .await
            .expect("confine");
        qapmap_ledger::apply_equity_event(
            &mut transaction,
            &event(company, date(2024, 1, 3), body),
        )
        .await
        .expect("event applies confined");
        transaction.commit().await.expect("commit");
    }
    let mut transaction = pool.begin().await.expect("begin");
    tenancy::confine(&mut transaction, company)
        .await
        .expect("confine");
    let step = qapmap_ledger::saga_operations::SagaStep {
        saga_id: Uuid::now_v7(),
        step: 1,
    };
    let released =
        qapmap_ledger::saga_operations::release_hold(&mut transaction, company, step, None)
            .await
            .expect("a release before its hold");
    assert_eq!(
        released,
        qapmap_ledger::saga_operations::Released::NeverApplied
    );
    transaction.commit().await.expect("commit");
    Company {
        id: company,
        class,
        holder,
        entry_id: Uuid::parse_str(&issued.id).expect("entry id"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_transaction_sees_and_writes_only_its_companys_rows_in_every_ledger_table() {
    let ledger = TestLedger::start().await;
    let a = company_with_rows(&ledger.client, &ledger.pool).await;
    let b = company_with_rows(&ledger.client, &ledger.pool).await;

    // Every table of the schema with a company_id is in the list.
    let with_company: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'company_id'
           AND table_name NOT IN ('outbox', 'inbox', 'dead_letters', 'idempotent_requests', 'audit_log')
         ORDER BY 1",
    )
    .fetch_all(&ledger.pool)
    .await
    .expect("schema");
    let mut listed: Vec<&str> = TENANT_TABLES.to_vec();
    listed.sort_unstable();
    assert_eq!(
        with_company, listed,
        "a tenant table is missing from the test"
    );

    for table in TENANT_TABLES {
        let companies: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(DISTINCT company_id) FROM {table} WHERE company_id IN ($1, $2)"
        )))
        .bind(a.id)
        .bind(b.id)
        .fetch_one(&ledger.pool)
        .await
        .expect("owner count");
        assert_eq!(companies, 2, "{table}: both companies have rows");
        let (all, own) = visible_rows(&ledger.pool, table, Some(a.id)).await;
        assert!(own > 0, "{table}: A sees its rows");
        assert_eq!(all, own, "{table}: A sees only its rows");
        assert_eq!(
            visible_rows(&ledger.pool, table, None).await,
            (0, 0),
            "{table}: no company, no rows"
        );
    }

    // A row of B written while confined to A is refused, in every table.
    let b_account: Uuid =
        sqlx::query_scalar("SELECT id FROM accounts WHERE company_id = $1 AND stakeholder_id = $2")
            .bind(b.id)
            .bind(b.holder)
            .fetch_one(&ledger.pool)
            .await
            .expect("B's holder account");
    let inserts = [
        "INSERT INTO ledgers (company_id) VALUES ($1)",
        "INSERT INTO projection_versions (company_id, version) VALUES ($1, 1)",
        "INSERT INTO share_classes (company_id, share_class_id) VALUES ($1, gen_random_uuid())",
        "INSERT INTO accounts (id, company_id, owner_kind, share_class_id, must_stay_non_negative)
         VALUES (gen_random_uuid(), $1, 'treasury', gen_random_uuid(), true)",
        "INSERT INTO journal_entries (id, company_id, sequence, entry_type, effective_date, cause)
         VALUES (gen_random_uuid(), $1, 999, 'issuance', '2024-01-01', 'rls-probe')",
        "INSERT INTO journal_lines (entry_id, line_number, company_id, account_id, amount)
         VALUES ($2, 99, $1, $3, 1)",
        "INSERT INTO holds (id, company_id, account_id, quantity, cause, status)
         VALUES (gen_random_uuid(), $1, $3, 1, 'rls-probe', 'active')",
        "INSERT INTO applied_equity_events (company_id, event_id) VALUES ($1, 'rls-probe')",
        "INSERT INTO equity_plans (company_id, plan_id, share_class_id, pool_size)
         VALUES ($1, gen_random_uuid(), gen_random_uuid(), 1)",
        "INSERT INTO option_movements (company_id, event_id, plan_id, share_class_id, effective_date,
                                       outstanding_delta, pool_available_delta)
         VALUES ($1, 'rls-probe', gen_random_uuid(), gen_random_uuid(), '2024-01-01', 0, 1)",
        "INSERT INTO saga_step_tombstones (saga_id, step, company_id) VALUES (gen_random_uuid(), 1, $1)",
    ];
    assert_eq!(inserts.len(), TENANT_TABLES.len());
    for insert in inserts {
        let mut transaction = ledger.pool.begin().await.expect("begin");
        tenancy::confine(&mut transaction, a.id)
            .await
            .expect("confine");
        let error = sqlx::query(insert)
            .bind(b.id)
            .bind(b.entry_id)
            .bind(b_account)
            .execute(&mut *transaction)
            .await
            .expect_err("a row of another company is refused");
        assert!(
            error.to_string().contains("row-level security"),
            "{insert}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_row_of_another_company_never_reaches_a_read() {
    // Goal: reads are confined, not only filtered. A line of company B on
    // A's account and entry (which only the owner could write) escapes the
    // queries that join by account or entry id; confinement hides it.
    let ledger = TestLedger::start().await;
    let a = company_with_rows(&ledger.client, &ledger.pool).await;
    let b = Uuid::now_v7();
    let a_account: Uuid =
        sqlx::query_scalar("SELECT id FROM accounts WHERE company_id = $1 AND stakeholder_id = $2")
            .bind(a.id)
            .bind(a.holder)
            .fetch_one(&ledger.pool)
            .await
            .expect("A's holder account");
    sqlx::query(
        "INSERT INTO journal_lines (entry_id, line_number, company_id, account_id, amount)
         VALUES ($1, 99, $2, $3, 1000)",
    )
    .bind(a.entry_id)
    .bind(b)
    .bind(a_account)
    .execute(&ledger.pool)
    .await
    .expect("the owner writes a stray line");
    let unconfined: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT SUM(amount) FROM journal_lines WHERE account_id = $1")
            .bind(a_account)
            .fetch_one(&ledger.pool)
            .await
            .expect("sum");
    assert_eq!(
        unconfined,
        rust_decimal::Decimal::from(1010),
        "the stray line is there"
    );

    let balance = ledger
        .client
        .clone()
        .get_balance(proto::GetBalanceRequest {
            company_id: a.id.to_string(),
            account: Some(stakeholder_account(a.holder, a.class)),
            as_of: None,
        })
        .await
        .expect("balance")
        .into_inner();
    assert_eq!(balance.balance.expect("balance").value, "10");
    let entry = ledger
        .client
        .clone()
        .get_entry(proto::GetEntryRequest {
            company_id: a.id.to_string(),
            entry_id: a.entry_id.to_string(),
        })
        .await
        .expect("entry")
        .into_inner()
        .entry
        .expect("entry");
    assert_eq!(entry.lines.len(), 2, "{entry:#?}");
    let statement = ledger
        .client
        .clone()
        .get_statement(proto::GetStatementRequest {
            company_id: a.id.to_string(),
            stakeholder_id: a.holder.to_string(),
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .expect("statement")
        .into_inner();
    assert_eq!(statement.lines.len(), 1, "{statement:#?}");
}

fn hold_command(company: Uuid, class: Uuid, saga_id: Uuid, quantity: &str) -> SagaCommand {
    SagaCommand {
        saga_id: saga_id.to_string(),
        saga_type: "option_exercise".to_owned(),
        step: 1,
        company_id: company.to_string(),
        command: Some(Command::HoldUnissuedShares(
            proto::HoldUnissuedSharesCommand {
                share_class_id: class.to_string(),
                quantity: Some(dec(quantity)),
            },
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_applied_saga_command_is_audited_under_the_sagas_initiator() {
    let ledger = TestLedger::start().await;
    let mut bus = Bus::connect(&ledger.service.namespace, "ledger").await;
    let company = ledger.company_id;
    let class = Uuid::now_v7();
    ledger.authorize(class, "100", date(2024, 1, 1)).await;
    let employee = Uuid::now_v7();

    // Started by an employee for themselves: the hold is theirs to audit.
    let saga_id = Uuid::now_v7();
    let mut hold = hold_command(company, class, saga_id, "10");
    hold.initiator = Some(Initiator {
        subject: format!("employee-{employee}"),
        request_id: "start-1".to_owned(),
        roles: vec!["employee".to_owned()],
        stakeholder_id: employee.to_string(),
    });
    let reply = bus.call("hold_unissued_shares", &hold, None).await;
    assert!(reply.succeeded(), "{:?}", reply.reply);
    // Its compensation names nobody: the orchestrator is the actor.
    let mut release = hold.clone();
    release.compensation = true;
    release.initiator = None;
    release.command = Some(Command::ReleaseHold(proto::ReleaseHoldCommand {
        hold_id: String::new(),
    }));
    let reply = bus.call("release_hold", &release, None).await;
    assert!(reply.succeeded(), "{:?}", reply.reply);
    // A refused step applied nothing, so it records nothing.
    let refused = hold_command(company, class, Uuid::now_v7(), "1000");
    let reply = bus.call("hold_unissued_shares", &refused, None).await;
    assert_eq!(reply.rejected_with(), "hold_exceeds_available");

    let audit = AuditServiceClient::new(ledger.service.channel_with_token(&admin_token(company)))
        .list_audit_records(ops::ListAuditRecordsRequest {
            company_id: company.to_string(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .expect("audit trail")
        .into_inner()
        .records;
    let saga_records: Vec<(&str, &[String], &str, &str)> = audit
        .iter()
        .filter(|record| record.method.starts_with("saga:"))
        .map(|record| {
            (
                record.subject.as_str(),
                record.roles.as_slice(),
                record.method.as_str(),
                record.request_id.as_str(),
            )
        })
        .collect();
    let employee_subject = format!("employee-{employee}");
    let employee_roles = ["employee".to_owned()];
    let hold_step = format!("{saga_id}/1");
    let release_step = format!("{saga_id}/1/compensation");
    // Newest first.
    assert_eq!(
        saga_records,
        [
            (
                "orchestrator",
                &[][..],
                "saga:release_hold",
                release_step.as_str()
            ),
            (
                employee_subject.as_str(),
                &employee_roles[..],
                "saga:hold_unissued_shares",
                hold_step.as_str()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employees_own_saga_moves_only_their_own_shares() {
    let ledger = TestLedger::start().await;
    let mut bus = Bus::connect(&ledger.service.namespace, "ledger").await;
    let company = ledger.company_id;
    let class = Uuid::now_v7();
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    ledger.authorize(class, "100", date(2024, 1, 1)).await;
    ledger
        .issue(class, ada, "10", date(2024, 1, 2))
        .await
        .expect("issued");
    let hold_adas = |initiator: Option<Initiator>| SagaCommand {
        saga_id: Uuid::now_v7().to_string(),
        saga_type: "share_buyback".to_owned(),
        step: 1,
        company_id: company.to_string(),
        initiator,
        command: Some(Command::HoldHolderShares(proto::HoldHolderSharesCommand {
            share_class_id: class.to_string(),
            stakeholder_id: ada.to_string(),
            quantity: Some(dec("5")),
        })),
        ..Default::default()
    };
    let as_employee = |stakeholder: &str| {
        Some(Initiator {
            subject: format!("employee-{stakeholder}"),
            roles: vec!["employee".to_owned()],
            stakeholder_id: stakeholder.to_owned(),
            ..Default::default()
        })
    };

    // Bob's own saga reaching for Ada's shares, and an initiator whose
    // stakeholder is not an id (it would run unconfined): refused.
    let reply = bus
        .call(
            "hold_holder_shares",
            &hold_adas(as_employee(&bob.to_string())),
            None,
        )
        .await;
    assert_eq!(reply.rejected_with(), "not_own_shares");
    let reply = bus
        .call("hold_holder_shares", &hold_adas(as_employee("bob")), None)
        .await;
    assert_eq!(reply.rejected_with(), "invalid_argument");
    assert_eq!(ledger.count("holds").await, 0, "nothing held");

    // Her own saga, and staff's, may.
    let reply = bus
        .call(
            "hold_holder_shares",
            &hold_adas(as_employee(&ada.to_string())),
            None,
        )
        .await;
    assert!(reply.succeeded(), "{:?}", reply.reply);
    let reply = bus.call("hold_holder_shares", &hold_adas(None), None).await;
    assert!(reply.succeeded(), "{:?}", reply.reply);
    assert_eq!(ledger.count("holds").await, 2);
}
