//! The read-only calls. Each runs its queries in a transaction confined to
//! the request's company (row-level security behind the `company_id`
//! filters); employees reach only their own balance and statement.

use prost::Message;
use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::auth::AuthorizedCall;
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, date, decimal, ids};
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use tonic::Response;

use super::LedgerApi;
use crate::accounts::Owner;
use crate::cap_table::cache::CacheKey;
use crate::cap_table::{self, CapTable, Holder};
use crate::convert::{self, entry_to_proto};
use crate::journal::reading;
use crate::{accounts, statement};

type ApiResponse<T> = Result<Response<T>, ApiError>;

impl LedgerApi {
    /// A read-only transaction confined to `company_id`, begun in one round trip.
    async fn confined_read(
        &self,
        company_id: uuid::Uuid,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(qapmap_runtime::tenancy::begin_read_only(&self.pool, company_id).await?)
    }
}

impl LedgerApi {
    pub(super) async fn entry(
        &self,
        request: proto::GetEntryRequest,
    ) -> ApiResponse<proto::GetEntryResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let entry_id = ids::parse("entry_id", &request.entry_id)?;
        let mut transaction = self.confined_read(company_id).await?;
        let entry = reading::find_by_id(&mut transaction, company_id, entry_id).await?;
        transaction.commit().await?;
        let entry = entry.ok_or_else(|| ApiError::not_found("entry", entry_id.to_string()))?;
        Ok(Response::new(proto::GetEntryResponse {
            entry: Some(entry_to_proto(&entry)),
        }))
    }

    pub(super) async fn entries(
        &self,
        request: proto::ListEntriesRequest,
    ) -> ApiResponse<proto::ListEntriesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let after = match &page.after {
            Some(text) => text.parse::<i64>().map_err(|_| {
                ApiError::invalid("page_token", "is not a token this service issued")
            })?,
            None => 0,
        };
        let mut transaction = self.confined_read(company_id).await?;
        let mut entries =
            reading::list(&mut transaction, company_id, after, page.fetch_limit()).await?;
        transaction.commit().await?;
        let next_page_token = page.finish(&mut entries, |entry| entry.sequence.to_string());
        Ok(Response::new(proto::ListEntriesResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn balance(
        &self,
        call: &AuthorizedCall,
        request: proto::GetBalanceRequest,
    ) -> ApiResponse<proto::GetBalanceResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let account = convert::parse_account("account", request.account.as_ref())?;
        let as_of = date::effective_or_today("as_of", request.as_of.as_ref())?;
        // An employee holds only their own stakeholder accounts; the
        // company's system accounts are not theirs either.
        if call.self_service().is_some() {
            match account.owner {
                Owner::Stakeholder(owner) => call.require_own("account", owner, owner)?,
                Owner::System(_) => return Err(ApiError::not_found("account", "system")),
            }
        }
        let mut transaction = self.confined_read(company_id).await?;
        let Some(account_id) = accounts::find(&mut transaction, company_id, &account).await? else {
            transaction.commit().await?;
            return Ok(Response::new(balance_response(
                Decimal::ZERO,
                Decimal::ZERO,
            )));
        };
        let (balance, held): (Decimal, Decimal) = sqlx::query_as(
            "SELECT COALESCE((SELECT SUM(l.amount) FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id
                              WHERE l.account_id = $1 AND e.effective_date <= $2), 0),
                    (SELECT held FROM accounts WHERE id = $1)",
        )
        .bind(account_id)
        .bind(as_of)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Response::new(balance_response(balance, held)))
    }

    pub(super) async fn cap_table(
        &self,
        request: proto::GetCapTableRequest,
    ) -> ApiResponse<proto::GetCapTableResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let as_of = date::effective_or_today("as_of", request.as_of.as_ref())?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let whole = self.whole_cap_table(company_id, as_of).await?;
        Ok(Response::new(page_of(whole, &page)))
    }

    /// The whole table: from the cache for today's date, else from Postgres
    /// (and then cached). Past dates are not cached: they are rarer and the
    /// issue asks for the current table.
    async fn whole_cap_table(
        &self,
        company_id: uuid::Uuid,
        as_of: chrono::NaiveDate,
    ) -> Result<proto::GetCapTableResponse, ApiError> {
        let mut connection = self.pool.acquire().await?;
        let cacheable = as_of == date::today();
        if cacheable {
            let (ledger_sequence, projection_version) =
                cap_table::query::confined_versions(&mut connection, company_id).await?;
            let key = CacheKey {
                company_id,
                as_of,
                ledger_sequence,
                projection_version,
            };
            if let Some(cached) = self.cache.get(&key).await
                && let Ok(decoded) = proto::GetCapTableResponse::decode(cached.as_slice())
            {
                return Ok(decoded);
            }
        }
        let table = cap_table::query::load(&mut connection, company_id, as_of).await?;
        let whole = cap_table_to_proto(&table);
        if cacheable {
            let key = CacheKey {
                company_id,
                as_of,
                ledger_sequence: table.ledger_sequence,
                projection_version: table.projection_version,
            };
            self.cache.put(&key, &whole.encode_to_vec()).await;
        }
        Ok(whole)
    }

    pub(super) async fn statement(
        &self,
        call: &AuthorizedCall,
        request: proto::GetStatementRequest,
    ) -> ApiResponse<proto::GetStatementResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let stakeholder_id = ids::parse("stakeholder_id", &request.stakeholder_id)?;
        call.require_own("stakeholder", stakeholder_id, stakeholder_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let after = page
            .after
            .as_deref()
            .map(parse_statement_token)
            .transpose()?;
        let mut transaction = self.confined_read(company_id).await?;
        let mut lines = statement::load(
            &mut transaction,
            company_id,
            stakeholder_id,
            after,
            page.fetch_limit(),
        )
        .await?;
        transaction.commit().await?;
        let next_page_token = page.finish(&mut lines, statement::StatementLine::key);
        let lines = lines
            .iter()
            .map(|line| proto::StatementLine {
                entry_id: line.entry_id.to_string(),
                sequence: line.sequence,
                entry_type: proto::EntryType::from(line.entry_type) as i32,
                effective_date: Some(date::to_proto(line.effective_date)),
                account: Some(convert::account_to_proto(&line.account)),
                amount: Some(decimal::to_proto(line.amount)),
                running_balance: Some(decimal::to_proto(line.running_balance)),
            })
            .collect();
        Ok(Response::new(proto::GetStatementResponse {
            lines,
            next_page_token,
        }))
    }
}

fn parse_statement_token(text: &str) -> Result<(chrono::NaiveDate, i64), ApiError> {
    let invalid = || ApiError::invalid("page_token", "is not a token this service issued");
    let (date, sequence) = text.split_once('|').ok_or_else(invalid)?;
    Ok((
        date.parse().map_err(|_| invalid())?,
        sequence.parse().map_err(|_| invalid())?,
    ))
}

fn balance_response(balance: Decimal, held: Decimal) -> proto::GetBalanceResponse {
    proto::GetBalanceResponse {
        balance: Some(decimal::to_proto(balance)),
        held: Some(decimal::to_proto(held)),
        available: Some(decimal::to_proto(balance - held)),
    }
}

/// Rows after the token's key, at most a page; totals always cover the whole table.
fn page_of(
    mut whole: proto::GetCapTableResponse,
    page: &PageRequest,
) -> proto::GetCapTableResponse {
    let key = |row: &proto::CapTableRow| {
        let (kind, id) = if row.plan_id.is_empty() {
            ("0", &row.stakeholder_id)
        } else {
            ("1", &row.plan_id)
        };
        format!("{}|{kind}|{id}", row.share_class_id)
    };
    let mut rows: Vec<proto::CapTableRow> = whole
        .rows
        .drain(..)
        .filter(|row| page.after.as_ref().is_none_or(|after| key(row) > *after))
        .take(page.fetch_limit() as usize)
        .collect();
    whole.next_page_token = page.finish(&mut rows, key);
    whole.rows = rows;
    whole
}

fn cap_table_to_proto(table: &CapTable) -> proto::GetCapTableResponse {
    let rows = table
        .rows
        .iter()
        .map(|row| {
            let (stakeholder_id, plan_id) = match row.position.holder {
                Holder::Stakeholder(id) => (id.to_string(), String::new()),
                Holder::Pool(id) => (String::new(), id.to_string()),
            };
            proto::CapTableRow {
                stakeholder_id,
                plan_id,
                share_class_id: row.position.share_class_id.to_string(),
                shares: Some(decimal::to_proto(row.position.shares)),
                options_outstanding: Some(decimal::to_proto(row.position.options_outstanding)),
                fully_diluted: Some(decimal::to_proto(row.position.fully_diluted())),
                ownership_basic_percent: Some(decimal::to_proto(row.basic_percent)),
                ownership_fully_diluted_percent: Some(decimal::to_proto(row.fully_diluted_percent)),
                ownership_basic_percent_display: Some(decimal::to_proto(row.basic_percent_display)),
                ownership_fully_diluted_percent_display: Some(decimal::to_proto(
                    row.fully_diluted_percent_display,
                )),
            }
        })
        .collect();
    proto::GetCapTableResponse {
        rows,
        totals: Some(proto::CapTableTotals {
            outstanding_shares: Some(decimal::to_proto(table.totals.outstanding_shares)),
            options_outstanding: Some(decimal::to_proto(table.totals.options_outstanding)),
            pool_available: Some(decimal::to_proto(table.totals.pool_available)),
            fully_diluted: Some(decimal::to_proto(table.totals.fully_diluted)),
        }),
        ledger_sequence: table.ledger_sequence,
        next_page_token: String::new(),
        projection_version: table.projection_version,
        as_of: Some(date::to_proto(table.as_of)),
    }
}
