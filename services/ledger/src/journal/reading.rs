//! Reading entries back with their lines.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{EntryType, Line, PostedEntry};
use crate::accounts::AccountKey;

type HeaderRow = (
    Uuid,
    i64,
    String,
    NaiveDate,
    DateTime<Utc>,
    String,
    Option<Uuid>,
    String,
);

/// owner kind, stakeholder, share class, currency, amount.
type LineRow = (String, Option<Uuid>, Option<Uuid>, Option<String>, Decimal);

const HEADER_COLUMNS: &str =
    "id, sequence, entry_type, effective_date, recorded_at, cause, reverses_entry_id, memo";

/// The entry posted for `cause`, if any.
pub async fn find_by_cause(
    connection: &mut PgConnection,
    company_id: Uuid,
    cause: &str,
) -> sqlx::Result<Option<PostedEntry>> {
    let sql = format!(
        "SELECT {HEADER_COLUMNS} FROM journal_entries WHERE company_id = $1 AND cause = $2"
    );
    let header: Option<HeaderRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(cause)
        .fetch_optional(&mut *connection)
        .await?;
    with_lines(connection, company_id, header).await
}

/// The entry with `entry_id` in this company (another company's id is not found).
pub async fn find_by_id(
    connection: &mut PgConnection,
    company_id: Uuid,
    entry_id: Uuid,
) -> sqlx::Result<Option<PostedEntry>> {
    let sql =
        format!("SELECT {HEADER_COLUMNS} FROM journal_entries WHERE company_id = $1 AND id = $2");
    let header: Option<HeaderRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(entry_id)
        .fetch_optional(&mut *connection)
        .await?;
    with_lines(connection, company_id, header).await
}

/// Entries in sequence order after `after_sequence`, at most `limit`.
pub async fn list(
    connection: &mut PgConnection,
    company_id: Uuid,
    after_sequence: i64,
    limit: i64,
) -> sqlx::Result<Vec<PostedEntry>> {
    let sql = format!(
        "SELECT {HEADER_COLUMNS} FROM journal_entries
         WHERE company_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
    );
    let headers: Vec<HeaderRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&mut *connection)
        .await?;
    let mut entries = Vec::with_capacity(headers.len());
    for header in headers {
        if let Some(entry) = with_lines(connection, company_id, Some(header)).await? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

async fn with_lines(
    connection: &mut PgConnection,
    company_id: Uuid,
    header: Option<HeaderRow>,
) -> sqlx::Result<Option<PostedEntry>> {
    let Some((id, sequence, entry_type, effective_date, recorded_at, cause, reverses, memo)) =
        header
    else {
        return Ok(None);
    };
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT a.owner_kind, a.stakeholder_id, a.share_class_id, a.currency, l.amount
         FROM journal_lines l JOIN accounts a ON a.id = l.account_id
         WHERE l.entry_id = $1 ORDER BY l.line_number",
    )
    .bind(id)
    .fetch_all(&mut *connection)
    .await?;
    let lines = rows
        .into_iter()
        .map(|(kind, stakeholder, class, currency, amount)| Line {
            account: AccountKey::from_columns(&kind, stakeholder, class, currency.as_deref()),
            amount,
        })
        .collect();
    Ok(Some(PostedEntry {
        id,
        company_id,
        sequence,
        entry_type: EntryType::from_stored(&entry_type),
        effective_date,
        recorded_at,
        cause,
        lines,
        reverses_entry_id: reverses,
        memo,
    }))
}
