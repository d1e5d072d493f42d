//! Many concurrent postings against one balance never overdraw it.

use futures::future::join_all;
use qapmap_proto::ledger::v1 as proto;
use uuid::Uuid;

use crate::helpers::{TestLedger, date, dec, reason};

#[tokio::test]
async fn fifty_concurrent_one_share_transfers_out_of_ten_shares_let_exactly_ten_through() {
    let ledger = TestLedger::start().await;
    let class = Uuid::now_v7();
    let seller = Uuid::now_v7();
    ledger.authorize(class, "1000", date(2024, 1, 1)).await;
    ledger
        .issue(class, seller, "10", date(2024, 1, 1))
        .await
        .expect("issue");

    let transfers = (0..50).map(|_| {
        let mut client = ledger.client.clone();
        let request = proto::TransferSharesRequest {
            request_id: Uuid::now_v7().to_string(),
            company_id: ledger.company_id.to_string(),
            share_class_id: class.to_string(),
            from_stakeholder_id: seller.to_string(),
            to_stakeholder_id: Uuid::now_v7().to_string(),
            quantity: Some(dec("1")),
            effective_date: Some(date(2024, 2, 1)),
        };
        async move { client.transfer_shares(request).await }
    });
    let results = join_all(transfers).await;

    let succeeded = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(succeeded, 10);
    for refused in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(reason(refused), "insufficient_shares");
    }
    assert_eq!(ledger.balance(seller, class).await, "0");
    assert_eq!(ledger.count("journal_entries").await, 2 + 10);
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM journal_entries ORDER BY sequence")
            .fetch_all(&ledger.pool)
            .await
            .expect("sequences");
    assert_eq!(
        sequences,
        (1..=12).collect::<Vec<i64>>(),
        "gap-free per company"
    );
}
