//! SQL for stakeholders and their event log. Every query is scoped by
//! `company_id`, so another company's id reads as "not found".

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::model::{
    Email, PaymentInstructionRef, PersonName, Relationship, Relationships, Stakeholder,
    StakeholderType, Status,
};

const COLUMNS: &str = "id, company_id, stakeholder_type, name, email, relationships, status, \
    employment_start_date, termination_date, payment_instruction_ref, version, created_at";

/// Filters of a stakeholder list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub relationship: Option<Relationship>,
    /// The OCF status string to match exactly.
    pub status: Option<String>,
}

/// Inserts a new stakeholder at its version.
pub async fn insert(connection: &mut PgConnection, stakeholder: &Stakeholder) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stakeholders (id, company_id, stakeholder_type, name, email, relationships,
             status, employment_start_date, termination_date, payment_instruction_ref, version,
             created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(stakeholder.id)
    .bind(stakeholder.company_id)
    .bind(stakeholder.stakeholder_type.as_ocf())
    .bind(stakeholder.name.as_str())
    .bind(stakeholder.email.as_ref().map(Email::as_str))
    .bind(stakeholder.relationships.to_ocf())
    .bind(stakeholder.status.as_ocf())
    .bind(stakeholder.employment_start_date)
    .bind(stakeholder.status.termination().map(|t| t.date))
    .bind(
        stakeholder
            .payment_instruction_ref
            .as_ref()
            .map(PaymentInstructionRef::as_str),
    )
    .bind(stakeholder.version)
    .bind(stakeholder.recorded_at)
    .execute(connection)
    .await?;
    Ok(())
}

/// Writes a changed stakeholder, whose version the caller already bumped.
pub async fn update(connection: &mut PgConnection, stakeholder: &Stakeholder) -> sqlx::Result<()> {
    let updated = sqlx::query(
        "UPDATE stakeholders SET name = $3, email = $4, relationships = $5, status = $6,
             termination_date = $7, payment_instruction_ref = $8, version = $9, updated_at = now()
         WHERE company_id = $1 AND id = $2 AND version = $9 - 1",
    )
    .bind(stakeholder.company_id)
    .bind(stakeholder.id)
    .bind(stakeholder.name.as_str())
    .bind(stakeholder.email.as_ref().map(Email::as_str))
    .bind(stakeholder.relationships.to_ocf())
    .bind(stakeholder.status.as_ocf())
    .bind(stakeholder.status.termination().map(|t| t.date))
    .bind(
        stakeholder
            .payment_instruction_ref
            .as_ref()
            .map(PaymentInstructionRef::as_str),
    )
    .bind(stakeholder.version)
    .execute(connection)
    .await?;
    // The row was locked FOR UPDATE at the previous version by the caller.
    assert_eq!(updated.rows_affected(), 1, "stakeholder row must be locked");
    Ok(())
}

/// Appends one version to the stakeholder's event log.
pub async fn append_event(
    connection: &mut PgConnection,
    stakeholder: &Stakeholder,
    event_type: &str,
    effective_date: NaiveDate,
    snapshot: Vec<u8>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO stakeholder_events
             (company_id, stakeholder_id, version, event_type, effective_date, snapshot)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(stakeholder.company_id)
    .bind(stakeholder.id)
    .bind(stakeholder.version)
    .bind(event_type)
    .bind(effective_date)
    .bind(snapshot)
    .execute(connection)
    .await?;
    Ok(())
}

/// One stakeholder, or `None` if the company has no such stakeholder.
pub async fn find<'e>(
    executor: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Stakeholder>> {
    let sql = format!("SELECT {COLUMNS} FROM stakeholders WHERE company_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .try_map(|row: PgRow| from_row(&row))
        .fetch_optional(executor)
        .await
}

/// Like [`find`], and locks the row until the transaction ends.
pub async fn find_for_update(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Stakeholder>> {
    let sql =
        format!("SELECT {COLUMNS} FROM stakeholders WHERE company_id = $1 AND id = $2 FOR UPDATE");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .try_map(|row: PgRow| from_row(&row))
        .fetch_optional(connection)
        .await
}

/// Up to `limit` stakeholders after `after` (by id, i.e. creation order).
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    company_id: Uuid,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Stakeholder>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM stakeholders
         WHERE company_id = $1
           AND ($2::uuid IS NULL OR id > $2)
           AND ($3::text IS NULL OR $3 = ANY (relationships))
           AND ($4::text IS NULL OR status = $4)
         ORDER BY id
         LIMIT $5"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(after)
        .bind(filter.relationship.map(Relationship::as_ocf))
        .bind(filter.status.as_deref())
        .bind(limit)
        .try_map(|row: PgRow| from_row(&row))
        .fetch_all(executor)
        .await
}

fn from_row(row: &PgRow) -> sqlx::Result<Stakeholder> {
    let corrupt = |column: &str| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("stored {column} does not parse").into(),
    };
    let relationships: Vec<String> = row.try_get("relationships")?;
    let relationships = relationships
        .iter()
        .map(|text| Relationship::from_ocf(text).ok_or_else(|| corrupt("relationships")))
        .collect::<sqlx::Result<Vec<_>>>()?;
    let status: String = row.try_get("status")?;
    let termination_date: Option<NaiveDate> = row.try_get("termination_date")?;
    let email: Option<String> = row.try_get("email")?;
    let payment_instruction_ref: Option<String> = row.try_get("payment_instruction_ref")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    Ok(Stakeholder {
        id: row.try_get("id")?,
        company_id: row.try_get("company_id")?,
        stakeholder_type: StakeholderType::from_ocf(row.try_get("stakeholder_type")?)
            .ok_or_else(|| corrupt("stakeholder_type"))?,
        name: PersonName::parse(row.try_get("name")?).map_err(|_| corrupt("name"))?,
        email: email
            .map(|text| Email::parse(&text).map_err(|_| corrupt("email")))
            .transpose()?,
        relationships: Relationships::new(relationships),
        status: Status::from_parts(&status, termination_date).ok_or_else(|| corrupt("status"))?,
        employment_start_date: row.try_get("employment_start_date")?,
        payment_instruction_ref: payment_instruction_ref
            .map(|text| {
                PaymentInstructionRef::parse(&text).map_err(|_| corrupt("payment_instruction_ref"))
            })
            .transpose()?,
        version: row.try_get("version")?,
        recorded_at: created_at,
    })
}
