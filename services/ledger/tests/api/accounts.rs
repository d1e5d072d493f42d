//! Ensuring several accounts in one statement, against the real Postgres.

use qapmap_ledger::accounts::{self, AccountKey, SystemAccount, Unit};
use qapmap_runtime::decimal::Currency;
use uuid::Uuid;

use crate::helpers::TestLedger;

/// Goal: a posting's accounts come back in line order, one row per
/// distinct account, existing rows reused, new ones created; equal keys in
/// one call (both new) get the same account.
#[tokio::test]
async fn ensuring_several_accounts_keeps_line_order_and_makes_each_once() {
    let ledger = TestLedger::start().await;
    let company = ledger.company_id;
    let class = Uuid::now_v7();
    let usd = Unit::Cash(Currency::parse("currency", "USD").expect("usd").into());
    let holder = AccountKey::stakeholder(Uuid::now_v7(), class);
    let unissued = AccountKey::system(SystemAccount::AuthorizedUnissued, Unit::Shares(class));
    let cash = AccountKey::system(SystemAccount::CompanyCash, usd);

    let mut tx = ledger.pool.begin().await.expect("begin");
    let existing = accounts::ensure(&mut tx, company, &unissued)
        .await
        .expect("an existing account");
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut *tx)
        .await
        .expect("count");

    let ids = accounts::ensure_many(&mut tx, company, &[holder, unissued, holder, cash])
        .await
        .expect("accounts ensured");
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[1], existing, "the existing account is reused");
    assert_eq!(ids[0], ids[2], "equal keys are one account");
    assert_ne!(ids[0], ids[3]);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(after - before, 2, "the holder's and the cash account");
    for (id, key) in ids.iter().zip([holder, unissued, holder, cash]) {
        assert_eq!(
            accounts::find(&mut tx, company, &key).await.expect("find"),
            Some(*id),
            "{key:?}"
        );
    }

    let again = accounts::ensure_many(&mut tx, company, &[cash, holder])
        .await
        .expect("ensured again");
    assert_eq!(
        again,
        vec![ids[3], ids[0]],
        "a second call finds the same rows"
    );
}
