//! The outbox under the tenant policy: a transaction confined to a company
//! writes and reads only that company's messages.

use qapmap_runtime::outbox::{self, OutboxMessage};
use qapmap_runtime::tenancy;
use uuid::Uuid;

use crate::support::Harness;

fn message_for(harness: &Harness, company_id: Option<Uuid>) -> OutboxMessage {
    OutboxMessage {
        message_id: Uuid::now_v7(),
        company_id,
        subject: harness.subjects.event("test", "happened"),
        payload: b"payload".to_vec(),
        headers: Default::default(),
        partition_key: "key".to_owned(),
    }
}

/// Whether a transaction confined to `confined_to` may enqueue `message`;
/// rolled back either way.
async fn may_enqueue(harness: &Harness, confined_to: Uuid, message: &OutboxMessage) -> bool {
    let mut transaction = tenancy::begin(&harness.pool, confined_to)
        .await
        .expect("begin");
    let enqueued = outbox::enqueue(&mut transaction, message).await;
    if let Err(error) = &enqueued {
        let code = error
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "refused by the policy: {error}"
        );
    }
    enqueued.is_ok()
}

/// Goal: a confined transaction cannot enqueue another company's message
/// (or one of no company), nor see another company's messages; the relay's
/// own reads (as the owner) still see them all.
#[tokio::test]
async fn a_confined_transaction_writes_and_reads_only_its_companys_messages() {
    let harness = Harness::start().await;
    let (ours, theirs) = (Uuid::now_v7(), Uuid::now_v7());

    assert!(may_enqueue(&harness, ours, &message_for(&harness, Some(ours))).await);
    assert!(!may_enqueue(&harness, ours, &message_for(&harness, Some(theirs))).await);
    assert!(!may_enqueue(&harness, ours, &message_for(&harness, None)).await);

    for company in [ours, theirs] {
        let mut transaction = tenancy::begin(&harness.pool, company).await.expect("begin");
        outbox::enqueue(&mut transaction, &message_for(&harness, Some(company)))
            .await
            .expect("its own message");
        transaction.commit().await.expect("commit");
    }
    let mut confined = tenancy::begin(&harness.pool, ours).await.expect("begin");
    let visible: Vec<Option<Uuid>> = sqlx::query_scalar("SELECT company_id FROM outbox")
        .fetch_all(&mut *confined)
        .await
        .expect("confined read");
    assert_eq!(visible, [Some(ours)]);
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&harness.pool)
        .await
        .expect("owner read");
    assert_eq!(all, 2);
}
