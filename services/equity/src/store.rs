//! Rows of the equity database and the queries that read and write them.
//! Runtime-checked sqlx queries (no live database at build time). Every
//! query filters on company_id, so another tenant's id reads as absent.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use qapmap_proto::equity::v1 as proto;
use qapmap_runtime::date;
use qapmap_runtime::decimal::{self, Currency, Money};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::convert;
use crate::domain::{
    Award, AwardStatus, AwardType, CancellationBehavior, ShareClassType, TerminationReason,
};

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} is not valid").into())
}

fn stored_money(amount: Decimal, currency: &str) -> Result<Money, sqlx::Error> {
    let currency = Currency::parse("stored", currency).map_err(|_| corrupt("currency"))?;
    Ok(Money { amount, currency })
}

/// `FOR UPDATE` when the caller will change the row in this transaction.
fn lock_clause(lock: bool) -> &'static str {
    if lock { " FOR UPDATE" } else { "" }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShareClassRow {
    pub company_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub class_type: String,
    pub authorized_shares: Decimal,
    pub par_value: Decimal,
    pub par_currency: String,
    pub seniority: i32,
    pub conversion_ratio: Decimal,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
}

impl ShareClassRow {
    pub fn to_proto(&self) -> Result<proto::ShareClass, sqlx::Error> {
        let class_type =
            ShareClassType::from_stored(&self.class_type).ok_or_else(|| corrupt("class type"))?;
        Ok(proto::ShareClass {
            id: self.id.to_string(),
            company_id: self.company_id.to_string(),
            name: self.name.clone(),
            class_type: convert::share_class_type_to_proto(class_type) as i32,
            authorized_shares: Some(decimal::to_proto(self.authorized_shares)),
            par_value: Some(stored_money(self.par_value, &self.par_currency)?.to_proto()),
            seniority: self.seniority,
            conversion_ratio: Some(decimal::to_proto(self.conversion_ratio)),
            version: self.version,
            recorded_at: Some(convert::timestamp(self.recorded_at)),
        })
    }
}

const SHARE_CLASS_COLUMNS: &str = "company_id, id, name, class_type, authorized_shares, par_value, \
     par_currency, seniority, conversion_ratio, version, recorded_at";

pub async fn share_class(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<ShareClassRow>> {
    let sql = format!(
        "SELECT {SHARE_CLASS_COLUMNS} FROM share_classes WHERE company_id = $1 AND id = $2{}",
        lock_clause(lock)
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .fetch_optional(connection)
        .await
}

pub async fn share_classes_page(
    connection: &mut PgConnection,
    company_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ShareClassRow>> {
    let sql = format!(
        "SELECT {SHARE_CLASS_COLUMNS} FROM share_classes
         WHERE company_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(after)
        .bind(limit)
        .fetch_all(connection)
        .await
}

/// Shares reserved by every plan of a class.
pub async fn reserved_for_plans(
    connection: &mut PgConnection,
    company_id: Uuid,
    share_class_id: Uuid,
) -> sqlx::Result<Decimal> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(pool_size), 0) FROM equity_plans WHERE company_id = $1 AND share_class_id = $2",
    )
    .bind(company_id)
    .bind(share_class_id)
    .fetch_one(connection)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanRow {
    pub company_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub share_class_id: Uuid,
    pub pool_size: Decimal,
    pub cancellation_behavior: String,
    pub board_approval_date: NaiveDate,
    pub granted: Decimal,
    pub exercised: Decimal,
    pub returned: Decimal,
    pub retired: Decimal,
    pub version: i64,
}

impl PlanRow {
    pub fn behavior(&self) -> Result<CancellationBehavior, sqlx::Error> {
        CancellationBehavior::from_stored(&self.cancellation_behavior)
            .ok_or_else(|| corrupt("cancellation behavior"))
    }

    /// What new grants may still take.
    pub fn available(&self) -> Decimal {
        self.pool_size - self.granted + self.returned
    }

    pub fn to_proto(&self) -> Result<proto::EquityPlan, sqlx::Error> {
        Ok(proto::EquityPlan {
            id: self.id.to_string(),
            company_id: self.company_id.to_string(),
            name: self.name.clone(),
            share_class_id: self.share_class_id.to_string(),
            pool_size: Some(decimal::to_proto(self.pool_size)),
            cancellation_behavior: convert::cancellation_behavior_to_proto(self.behavior()?) as i32,
            board_approval_date: Some(date::to_proto(self.board_approval_date)),
            version: self.version,
        })
    }

    /// See OVERVIEW.md: pool_size = available + outstanding + exercised - returned.
    pub fn pool_summary(&self) -> proto::PoolSummary {
        let outstanding = self.granted - self.exercised;
        let live = outstanding - self.returned - self.retired;
        debug_assert_eq!(
            self.available() + outstanding + self.exercised - self.returned,
            self.pool_size
        );
        let number = |value: Decimal| Some(decimal::to_proto(value));
        proto::PoolSummary {
            pool_size: number(self.pool_size),
            available: number(self.available()),
            outstanding: number(outstanding),
            exercised: number(self.exercised),
            returned: number(self.returned),
            retired: number(self.retired),
            live: number(live),
        }
    }
}

const PLAN_COLUMNS: &str = "company_id, id, name, share_class_id, pool_size, cancellation_behavior, \
     board_approval_date, granted, exercised, returned, retired, version";

pub async fn plan(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<PlanRow>> {
    let sql = format!(
        "SELECT {PLAN_COLUMNS} FROM equity_plans WHERE company_id = $1 AND id = $2{}",
        lock_clause(lock)
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .fetch_optional(connection)
        .await
}

pub async fn plans_page(
    connection: &mut PgConnection,
    company_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<PlanRow>> {
    let sql = format!(
        "SELECT {PLAN_COLUMNS} FROM equity_plans
         WHERE company_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(after)
        .bind(limit)
        .fetch_all(connection)
        .await
}

/// Adds to the plan's counters and bumps nothing else: grants, exercises and
/// cancellations are events of the award, not of the plan.
pub async fn add_to_plan_counters(
    connection: &mut PgConnection,
    plan_id: Uuid,
    granted: Decimal,
    exercised: Decimal,
    returned: Decimal,
    retired: Decimal,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE equity_plans SET granted = granted + $2, exercised = exercised + $3,
             returned = returned + $4, retired = retired + $5 WHERE id = $1",
    )
    .bind(plan_id)
    .bind(granted)
    .bind(exercised)
    .bind(returned)
    .bind(retired)
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
struct AwardRow {
    company_id: Uuid,
    id: Uuid,
    plan_id: Uuid,
    stakeholder_id: Uuid,
    award_type: String,
    quantity: Decimal,
    exercise_price: Option<Decimal>,
    exercise_currency: Option<String>,
    grant_date: NaiveDate,
    expiration_date: Option<NaiveDate>,
    vesting_start_date: NaiveDate,
    early_exercisable: bool,
    vesting_terms: Option<String>,
    termination_windows: String,
    vesting_events: String,
    accelerations: String,
    exercised: Decimal,
    reserved: Decimal,
    cancelled_vested: Decimal,
    cancelled_unvested: Decimal,
    termination_date: Option<NaiveDate>,
    termination_reason: Option<String>,
    status: String,
    version: i64,
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|error| sqlx::Error::Encode(error.into()))
}

impl TryFrom<AwardRow> for Award {
    type Error = sqlx::Error;

    fn try_from(row: AwardRow) -> Result<Self, Self::Error> {
        let exercise_price = match (row.exercise_price, row.exercise_currency.as_deref()) {
            (Some(amount), Some(currency)) => Some(stored_money(amount, currency)?),
            _ => None,
        };
        let termination = match (row.termination_date, row.termination_reason.as_deref()) {
            (Some(on), Some(reason)) => Some((
                on,
                TerminationReason::from_stored(reason).ok_or_else(|| corrupt("reason"))?,
            )),
            _ => None,
        };
        Ok(Award {
            id: row.id,
            company_id: row.company_id,
            plan_id: row.plan_id,
            stakeholder_id: row.stakeholder_id,
            award_type: AwardType::from_stored(&row.award_type)
                .ok_or_else(|| corrupt("award type"))?,
            quantity: row.quantity,
            exercise_price,
            grant_date: row.grant_date,
            expiration_date: row.expiration_date,
            vesting_start: row.vesting_start_date,
            early_exercisable: row.early_exercisable,
            vesting_terms: row
                .vesting_terms
                .as_deref()
                .map(|text| from_json(text, "vesting terms"))
                .transpose()?,
            termination_windows: from_json(&row.termination_windows, "termination windows")?,
            vesting_events: from_json::<BTreeMap<String, NaiveDate>>(
                &row.vesting_events,
                "vesting events",
            )?,
            accelerations: from_json(&row.accelerations, "accelerations")?,
            exercised: row.exercised,
            reserved: row.reserved,
            cancelled_vested: row.cancelled_vested,
            cancelled_unvested: row.cancelled_unvested,
            termination,
            status: AwardStatus::from_stored(&row.status).ok_or_else(|| corrupt("status"))?,
            version: row.version,
        })
    }
}

const AWARD_COLUMNS: &str = "company_id, id, plan_id, stakeholder_id, award_type, quantity, exercise_price, \
     exercise_currency, grant_date, expiration_date, vesting_start_date, early_exercisable, \
     vesting_terms::text AS vesting_terms, termination_windows::text AS termination_windows, \
     vesting_events::text AS vesting_events, accelerations::text AS accelerations, exercised, reserved, \
     cancelled_vested, cancelled_unvested, termination_date, termination_reason, status, version";

pub async fn award(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<Award>> {
    let sql = format!(
        "SELECT {AWARD_COLUMNS} FROM awards WHERE company_id = $1 AND id = $2{}",
        lock_clause(lock)
    );
    let row: Option<AwardRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .fetch_optional(connection)
        .await?;
    row.map(Award::try_from).transpose()
}

/// Filters of a list of awards.
#[derive(Debug, Clone, Copy)]
pub struct AwardFilter {
    pub plan_id: Option<Uuid>,
    pub stakeholder_id: Option<Uuid>,
}

pub async fn awards_page(
    connection: &mut PgConnection,
    company_id: Uuid,
    filter: AwardFilter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Award>> {
    let sql = format!(
        "SELECT {AWARD_COLUMNS} FROM awards WHERE company_id = $1
           AND ($2::uuid IS NULL OR plan_id = $2) AND ($3::uuid IS NULL OR stakeholder_id = $3)
           AND ($4::uuid IS NULL OR id > $4) ORDER BY id LIMIT $5"
    );
    let rows: Vec<AwardRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(filter.plan_id)
        .bind(filter.stakeholder_id)
        .bind(after)
        .bind(limit)
        .fetch_all(connection)
        .await?;
    rows.into_iter().map(Award::try_from).collect()
}

pub async fn insert_award(connection: &mut PgConnection, award: &Award) -> sqlx::Result<()> {
    let terms = award.vesting_terms.as_ref().map(to_json).transpose()?;
    sqlx::query(
        "INSERT INTO awards (company_id, id, plan_id, stakeholder_id, award_type, quantity, exercise_price,
             exercise_currency, grant_date, expiration_date, vesting_start_date, early_exercisable,
             vesting_terms, termination_windows, status, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::jsonb, $14::text::jsonb, $15, $16)",
    )
    .bind(award.company_id)
    .bind(award.id)
    .bind(award.plan_id)
    .bind(award.stakeholder_id)
    .bind(award.award_type.as_str())
    .bind(award.quantity)
    .bind(award.exercise_price.map(|price| price.amount))
    .bind(award.exercise_price.map(|price| price.currency.to_string()))
    .bind(award.grant_date)
    .bind(award.expiration_date)
    .bind(award.vesting_start)
    .bind(award.early_exercisable)
    .bind(terms)
    .bind(to_json(&award.termination_windows)?)
    .bind(award.status.as_str())
    .bind(award.version)
    .execute(connection)
    .await?;
    Ok(())
}

/// Writes what changes after a grant. `loaded_version` is the version the
/// caller read under its row lock; `award.version` is the new one.
pub async fn update_award(
    connection: &mut PgConnection,
    award: &Award,
    loaded_version: i64,
) -> sqlx::Result<()> {
    let updated = sqlx::query(
        "UPDATE awards SET vesting_events = $3::text::jsonb, accelerations = $4::text::jsonb, exercised = $5,
             reserved = $6, cancelled_vested = $7, cancelled_unvested = $8, termination_date = $9,
             termination_reason = $10, status = $11, version = $12
         WHERE company_id = $1 AND id = $2 AND version = $13",
    )
    .bind(award.company_id)
    .bind(award.id)
    .bind(to_json(&award.vesting_events)?)
    .bind(to_json(&award.accelerations)?)
    .bind(award.exercised)
    .bind(award.reserved)
    .bind(award.cancelled_vested)
    .bind(award.cancelled_unvested)
    .bind(award.termination.map(|(on, _)| on))
    .bind(award.termination.map(|(_, reason)| reason.as_str()))
    .bind(award.status.as_str())
    .bind(award.version)
    .bind(loaded_version)
    .execute(connection)
    .await?;
    // The row is locked by the caller, so the version cannot have moved.
    assert_eq!(
        updated.rows_affected(),
        1,
        "award {} changed under its row lock",
        award.id
    );
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProgramRow {
    pub company_id: Uuid,
    pub id: Uuid,
    pub share_class_id: Uuid,
    pub max_shares: Decimal,
    pub max_price_per_share: Decimal,
    pub price_currency: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub reserved_shares: Decimal,
    pub repurchased_shares: Decimal,
    pub version: i64,
}

impl ProgramRow {
    pub fn max_price(&self) -> Result<Money, sqlx::Error> {
        stored_money(self.max_price_per_share, &self.price_currency)
    }

    pub fn to_proto(&self) -> Result<proto::RepurchaseProgram, sqlx::Error> {
        Ok(proto::RepurchaseProgram {
            id: self.id.to_string(),
            company_id: self.company_id.to_string(),
            share_class_id: self.share_class_id.to_string(),
            max_shares: Some(decimal::to_proto(self.max_shares)),
            max_price_per_share: Some(self.max_price()?.to_proto()),
            start_date: Some(date::to_proto(self.start_date)),
            end_date: Some(date::to_proto(self.end_date)),
            reserved_shares: Some(decimal::to_proto(self.reserved_shares)),
            repurchased_shares: Some(decimal::to_proto(self.repurchased_shares)),
        })
    }
}

pub async fn program(
    connection: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<ProgramRow>> {
    let sql = format!(
        "SELECT company_id, id, share_class_id, max_shares, max_price_per_share, price_currency, start_date,
                end_date, reserved_shares, repurchased_shares, version
         FROM repurchase_programs WHERE company_id = $1 AND id = $2{}",
        lock_clause(lock)
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(company_id)
        .bind(id)
        .fetch_optional(connection)
        .await
}
