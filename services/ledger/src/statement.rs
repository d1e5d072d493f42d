//! A stakeholder's statement: every line of every entry that touched one of
//! their accounts, in effective-date order, with the account's running balance.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::accounts::AccountKey;
use crate::journal::EntryType;

#[derive(Debug, Clone, PartialEq)]
pub struct StatementLine {
    pub entry_id: Uuid,
    pub sequence: i64,
    pub entry_type: EntryType,
    pub effective_date: NaiveDate,
    pub account: AccountKey,
    pub amount: Decimal,
    pub running_balance: Decimal,
}

impl StatementLine {
    /// The page key: effective date, then sequence, then account.
    pub fn key(&self) -> String {
        format!("{}|{}", self.effective_date, self.sequence)
    }
}

/// Lines after `after` = (effective date, sequence), at most `limit`.
pub async fn load(
    connection: &mut PgConnection,
    company_id: Uuid,
    stakeholder_id: Uuid,
    after: Option<(NaiveDate, i64)>,
    limit: i64,
) -> sqlx::Result<Vec<StatementLine>> {
    type Row = (
        Uuid,
        i64,
        String,
        NaiveDate,
        String,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Decimal,
        Decimal,
    );
    let (after_date, after_sequence) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(
        "WITH lines AS (
             SELECT e.id, e.sequence, e.entry_type, e.effective_date, a.owner_kind, a.stakeholder_id,
                    a.share_class_id, a.currency, l.amount,
                    SUM(l.amount) OVER (PARTITION BY l.account_id
                                        ORDER BY e.effective_date, e.sequence, l.line_number) AS running
             FROM journal_lines l
             JOIN journal_entries e ON e.id = l.entry_id
             JOIN accounts a ON a.id = l.account_id
             WHERE l.company_id = $1 AND a.stakeholder_id = $2)
         SELECT * FROM lines
         WHERE $3::date IS NULL OR (effective_date, sequence) > ($3, $4)
         ORDER BY effective_date, sequence, share_class_id, currency LIMIT $5",
    )
    .bind(company_id)
    .bind(stakeholder_id)
    .bind(after_date)
    .bind(after_sequence)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                entry_id,
                sequence,
                entry_type,
                effective_date,
                kind,
                stakeholder,
                class,
                currency,
                amount,
                running,
            )| {
                StatementLine {
                    entry_id,
                    sequence,
                    entry_type: EntryType::from_stored(&entry_type),
                    effective_date,
                    account: AccountKey::from_columns(
                        &kind,
                        stakeholder,
                        class,
                        currency.as_deref(),
                    ),
                    amount,
                    running_balance: running,
                }
            },
        )
        .collect())
}
