//! Employees and the ledger: their own balance and statement, nobody
//! else's (NOT_FOUND, as if it did not exist), and no cap table.

use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use qapmap_testkit::auth::employee_token;
use uuid::Uuid;

use crate::helpers::{TestLedger, date, stakeholder_account};

type Client = LedgerServiceClient<AuthenticatedChannel>;

async fn balance(
    client: &Client,
    company: Uuid,
    account: proto::AccountRef,
) -> Result<String, tonic::Status> {
    let response = client
        .clone()
        .get_balance(proto::GetBalanceRequest {
            company_id: company.to_string(),
            account: Some(account),
            as_of: None,
        })
        .await?;
    Ok(response.into_inner().balance.expect("balance").value)
}

async fn statement(
    client: &Client,
    company: Uuid,
    stakeholder: Uuid,
) -> Result<Vec<proto::StatementLine>, tonic::Status> {
    let response = client
        .clone()
        .get_statement(proto::GetStatementRequest {
            company_id: company.to_string(),
            stakeholder_id: stakeholder.to_string(),
            page_size: 50,
            page_token: String::new(),
        })
        .await?;
    Ok(response.into_inner().lines)
}

fn assert_not_found(result: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = result.expect_err("someone else's record");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_employee_reads_their_own_balance_and_statement_and_nobody_elses() {
    let ledger = TestLedger::start().await;
    let company = ledger.company_id;
    let class = Uuid::now_v7();
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    ledger
        .issue(class, ada, "10", date(2024, 1, 2))
        .await
        .expect("issued");
    ledger
        .issue(class, bob, "20", date(2024, 1, 2))
        .await
        .expect("issued");
    let as_ada = LedgerServiceClient::new(
        ledger
            .service
            .channel_with_token(&employee_token(company, ada)),
    );

    assert_eq!(
        balance(&as_ada, company, stakeholder_account(ada, class))
            .await
            .expect("her balance"),
        "10"
    );
    let lines = statement(&as_ada, company, ada)
        .await
        .expect("her statement");
    assert_eq!(lines.len(), 1, "{lines:#?}");

    // A colleague's records, and the company's own accounts, do not exist
    // for her; an unknown holder looks the same.
    assert_not_found(balance(&as_ada, company, stakeholder_account(bob, class)).await);
    assert_not_found(balance(&as_ada, company, stakeholder_account(Uuid::now_v7(), class)).await);
    let unissued = proto::AccountRef {
        owner: Some(proto::account_ref::Owner::System(
            proto::SystemAccount::AuthorizedUnissued as i32,
        )),
        unit: Some(proto::account_ref::Unit::ShareClassId(class.to_string())),
    };
    assert_not_found(balance(&as_ada, company, unissued).await);
    assert_not_found(statement(&as_ada, company, bob).await);

    // The cap table shows everyone's holdings: not for employees.
    let status = as_ada
        .clone()
        .get_cap_table(proto::GetCapTableRequest {
            company_id: company.to_string(),
            as_of: None,
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .expect_err("the cap table is for staff");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Staff still read anyone's.
    assert_eq!(ledger.balance(bob, class).await, "20");
}
