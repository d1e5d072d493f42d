//! Rule breaks are FAILED_PRECONDITION with a reason code, and write nothing.

use qapmap_proto::ledger::v1 as proto;
use uuid::Uuid;

use crate::helpers::{TestLedger, date, dec, reason, stakeholder_account};

const WRITTEN_TABLES: [&str; 4] = [
    "journal_entries",
    "journal_lines",
    "outbox",
    "idempotent_requests",
];

async fn counts(ledger: &TestLedger) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in WRITTEN_TABLES {
        counts.push(ledger.count(table).await);
    }
    counts
}

#[tokio::test]
async fn an_unbalanced_entry_an_overdraft_and_issuing_past_authorized_write_nothing() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    ledger.authorize(class, "100", date(2024, 1, 1)).await;
    ledger
        .issue(class, alice, "60", date(2024, 1, 2))
        .await
        .expect("issue within authorized");
    let before = counts(&ledger).await;

    let unbalanced = proto::PostEntryRequest {
        request_id: Uuid::now_v7().to_string(),
        company_id: ledger.company_id.to_string(),
        entry_type: proto::EntryType::Transfer as i32,
        lines: vec![
            proto::EntryLine {
                account: Some(stakeholder_account(alice, class)),
                amount: Some(dec("-10")),
            },
            proto::EntryLine {
                account: Some(stakeholder_account(bob, class)),
                amount: Some(dec("9")),
            },
        ],
        effective_date: Some(date(2024, 2, 1)),
        memo: String::new(),
    };
    let status = ledger
        .client
        .clone()
        .post_entry(unbalanced)
        .await
        .expect_err("unbalanced");
    assert_eq!(reason(&status), "unbalanced_entry");

    let overdraft = proto::TransferSharesRequest {
        request_id: Uuid::now_v7().to_string(),
        company_id: ledger.company_id.to_string(),
        share_class_id: class.to_string(),
        from_stakeholder_id: alice.to_string(),
        to_stakeholder_id: bob.to_string(),
        quantity: Some(dec("61")),
        effective_date: Some(date(2024, 2, 1)),
    };
    let status = ledger
        .client
        .clone()
        .transfer_shares(overdraft)
        .await
        .expect_err("overdraft");
    assert_eq!(reason(&status), "insufficient_shares");

    let status = ledger
        .issue(class, bob, "41", date(2024, 2, 1))
        .await
        .expect_err("past authorized");
    assert_eq!(reason(&status), "authorized_shares_exceeded");

    let status = ledger
        .issue(class, bob, "1", date(2023, 12, 31))
        .await
        .expect_err("before authorization");
    assert_eq!(reason(&status), "dated_before_dependency");

    assert_eq!(counts(&ledger).await, before, "nothing was written");
    assert_eq!(ledger.balance(alice, class).await, "60");
    assert_eq!(ledger.balance(bob, class).await, "0");
    ledger
        .issue(class, bob, "40", date(2024, 2, 1))
        .await
        .expect("exactly the rest of authorized");
}

#[tokio::test]
async fn a_repeated_request_posts_once_and_a_bad_field_is_named() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    ledger.authorize(class, "100", date(2024, 1, 1)).await;
    let request = proto::IssueSharesRequest {
        request_id: "issue-1".into(),
        company_id: ledger.company_id.to_string(),
        share_class_id: class.to_string(),
        stakeholder_id: Uuid::now_v7().to_string(),
        quantity: Some(dec("10")),
        price_per_share: None,
        effective_date: Some(date(2024, 1, 2)),
    };
    let first = ledger
        .client
        .clone()
        .issue_shares(request.clone())
        .await
        .expect("first")
        .into_inner();
    let again = ledger
        .client
        .clone()
        .issue_shares(request.clone())
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(ledger.count("journal_entries").await, 2);

    let bad = proto::IssueSharesRequest {
        request_id: "issue-2".into(),
        quantity: Some(dec("1e3")),
        ..request
    };
    let status = ledger
        .client
        .clone()
        .issue_shares(bad)
        .await
        .expect_err("bad quantity");
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "quantity"
    );
    let unknown_class = proto::IssueSharesRequest {
        request_id: "issue-3".into(),
        company_id: ledger.company_id.to_string(),
        share_class_id: Uuid::now_v7().to_string(),
        stakeholder_id: Uuid::now_v7().to_string(),
        quantity: Some(dec("1")),
        price_per_share: None,
        effective_date: None,
    };
    let status = ledger
        .client
        .clone()
        .issue_shares(unknown_class)
        .await
        .expect_err("unknown class");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn the_journal_refuses_updates_and_deletes() {
    let ledger = TestLedger::start().await;
    ledger
        .authorize(Uuid::now_v7(), "100", date(2024, 1, 1))
        .await;
    let update = sqlx::query("UPDATE journal_entries SET memo = 'x'")
        .execute(&ledger.pool)
        .await;
    assert!(update.is_err());
    let delete = sqlx::query("DELETE FROM journal_lines")
        .execute(&ledger.pool)
        .await;
    assert!(delete.is_err());
    assert_eq!(ledger.count("journal_lines").await, 2);
}
