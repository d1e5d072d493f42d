//! The read-only calls. Each runs its queries in a transaction confined to
//! the request's company (row-level security behind the `company_id`
//! filters); employees reach only their own balance and statement.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;
use prost::bytes::Bytes;
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
use crate::cap_table::earlier::LaterChanges;
use crate::cap_table::{self, CapTable, Holder, Position, RowKey};
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
        // Today's balance less what entries dated after `as_of` moved (see
        // the cap table's query): no re-summing of the account's history.
        let (balance, held): (Decimal, Decimal) = sqlx::query_as(
            "SELECT a.balance - COALESCE((SELECT SUM(l.amount)
                                          FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id
                                          WHERE e.company_id = $3 AND e.effective_date > $2
                                            AND l.account_id = $1), 0),
                    a.held
             FROM accounts a WHERE a.id = $1",
        )
        .bind(account_id)
        .bind(as_of)
        .bind(company_id)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Response::new(balance_response(balance, held)))
    }

    /// The response's protobuf encoding (see `cap_table_route`): a page of
    /// today's table is copied from memory, other dates are computed.
    pub(super) async fn cap_table_encoded(
        &self,
        request: proto::GetCapTableRequest,
    ) -> Result<EncodedResponse, ApiError> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let as_of = date::effective_or_today("as_of", request.as_of.as_ref())?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let after = page
            .after
            .as_deref()
            .map(|text| {
                RowKey::parse(text).ok_or_else(|| {
                    ApiError::invalid("page_token", "is not a token this service issued")
                })
            })
            .transpose()?;
        let today = date::today();
        if as_of == today {
            let table = self.current_cap_table(company_id, as_of).await?;
            return Ok(table.encode_page(after, &page));
        }
        // Other dates are computed on every read (never kept): from today's
        // table less what came later, or plus what comes up to a later date,
        // when that can be trusted; else from Postgres.
        let table = match self.derived_cap_table(company_id, as_of, today).await? {
            Some(table) => {
                self.other_dates.record_from_today(as_of < today);
                table
            }
            None => {
                self.other_dates.record_from_postgres();
                let mut connection = self.pool.acquire().await?;
                cap_table::query::load(&mut connection, company_id, as_of).await?
            }
        };
        Ok(EncodedResponse::whole(
            page_of_table(&table, after, &page).encode_to_vec().into(),
        ))
    }

    /// The table as of `as_of` from today's positions (`cap_table::earlier`):
    /// a past date's less the changes dated after it, kept beside today's
    /// table once read; a future date's plus the changes dated up to it,
    /// read on every call (usually none: few entries are dated ahead).
    /// `None` when memory is not trusted (no change listener) or the ledger
    /// moved between today's table and the changes read.
    async fn derived_cap_table(
        &self,
        company_id: uuid::Uuid,
        as_of: chrono::NaiveDate,
        today: chrono::NaiveDate,
    ) -> Result<Option<CapTable>, ApiError> {
        if self.tables.stamp(company_id).is_none() {
            return Ok(None);
        }
        let past = as_of < today;
        let current = self.current_cap_table(company_id, today).await?;
        let kept = past
            .then(|| current.later_changes_reaching(as_of))
            .flatten();
        let changes = match kept {
            Some(kept) => kept,
            None => {
                let (after, through) = if past { (as_of, today) } else { (today, as_of) };
                let mut connection = self.pool.acquire().await?;
                let changes =
                    cap_table::earlier::later_changes(&mut connection, company_id, after, through)
                        .await?;
                drop(connection);
                self.other_dates.record_later_changes_read();
                if !current.has_versions_of(&changes) {
                    return Ok(None);
                }
                if past {
                    current.keep_later_changes(changes)
                } else {
                    Arc::new(changes)
                }
            }
        };
        let positions = if past {
            cap_table::earlier::roll_back(&current.positions, &changes, as_of)
        } else {
            cap_table::earlier::roll_forward(&current.positions, &changes, as_of)
        };
        Ok(Some(cap_table::compute_sorted(
            as_of,
            changes.ledger_sequence,
            changes.projection_version,
            positions,
        )))
    }

    /// Today's table: from this process's memory while no change arrived
    /// since it was loaded, else from Redis (shared by the replicas, keyed by
    /// the company's versions), else from Postgres (then kept in both).
    async fn current_cap_table(
        &self,
        company_id: uuid::Uuid,
        as_of: chrono::NaiveDate,
    ) -> Result<Arc<ServedTable>, ApiError> {
        if let Some(table) = self.tables.get(company_id, as_of) {
            return Ok(table);
        }
        // Taken before anything is read, so a change committed meanwhile
        // keeps this load out of memory.
        let stamp = self.tables.stamp(company_id);
        let mut connection = self.pool.acquire().await?;
        let (ledger_sequence, projection_version) =
            cap_table::query::confined_versions(&mut connection, company_id).await?;
        let key = CacheKey {
            company_id,
            as_of,
            ledger_sequence,
            projection_version,
        };
        let shared = self
            .cache
            .get(&key)
            .await
            .and_then(|cached| proto::GetCapTableResponse::decode(cached.as_slice()).ok())
            .and_then(ServedTable::from_response);
        let table = match shared {
            Some(table) => table,
            None => {
                let table = cap_table::query::load(&mut connection, company_id, as_of).await?;
                drop(connection);
                let served = ServedTable::from_table(&table);
                let key = CacheKey {
                    ledger_sequence: table.ledger_sequence,
                    projection_version: table.projection_version,
                    ..key
                };
                self.cache.put(&key, &served.encode_whole()).await;
                served
            }
        };
        let table = Arc::new(table);
        if let Some(stamp) = stamp {
            self.tables
                .put(company_id, stamp, as_of, table.keys.len(), table.clone());
        }
        Ok(table)
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

/// A whole cap table ready to serve a page at a time: every row's
/// protobuf encoding (as field 1 of the response) back to back, converted
/// once per change, so a page is one contiguous copy; the rows' keys to
/// find where a page starts; the other fields of the response.
#[derive(Debug)]
pub(crate) struct ServedTable {
    /// The response without rows.
    header: proto::GetCapTableResponse,
    keys: Vec<RowKey>,
    /// The rows' figures (in key order), from which earlier dates are derived.
    positions: Vec<Position>,
    encoded_rows: Bytes,
    /// Row `i` is `encoded_rows[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    /// The changes dated after some past date, read at this table's
    /// versions: they die with the table when the company changes.
    later_changes: Mutex<Option<Arc<LaterChanges>>>,
}

impl ServedTable {
    fn from_table(table: &CapTable) -> Self {
        let whole = cap_table_to_proto(table, 0..table.len());
        let positions = table.positions().to_vec();
        Self::with_positions(whole, positions)
    }

    /// `None` when a row does not read back (a value from another version).
    fn from_response(response: proto::GetCapTableResponse) -> Option<Self> {
        let positions = response
            .rows
            .iter()
            .map(proto_row_position)
            .collect::<Option<Vec<_>>>()?;
        positions
            .is_sorted_by_key(Position::key)
            .then(|| Self::with_positions(response, positions))
    }

    fn with_positions(mut whole: proto::GetCapTableResponse, positions: Vec<Position>) -> Self {
        let keys = positions.iter().map(Position::key).collect();
        let rows = std::mem::take(&mut whole.rows);
        let mut encoded = prost::bytes::BytesMut::new();
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        for row in &rows {
            prost::encoding::message::encode(1, row, &mut encoded);
            offsets.push(encoded.len());
        }
        whole.next_page_token = String::new();
        Self {
            header: whole,
            keys,
            positions,
            encoded_rows: encoded.freeze(),
            offsets,
            later_changes: Mutex::default(),
        }
    }

    /// Whether `changes` were read at this table's versions (describe the
    /// same ledger).
    fn has_versions_of(&self, changes: &LaterChanges) -> bool {
        (changes.ledger_sequence, changes.projection_version)
            == (self.header.ledger_sequence, self.header.projection_version)
    }

    /// The kept changes, when they reach back to `as_of`.
    fn later_changes_reaching(&self, as_of: chrono::NaiveDate) -> Option<Arc<LaterChanges>> {
        let kept = self
            .later_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        kept.as_ref().filter(|kept| kept.after <= as_of).cloned()
    }

    /// Keeps `changes` (read at this table's versions) unless those kept
    /// reach further back, or they outnumber the table's rows: memory then
    /// stays within the bound on rows kept (`current::MAX_CACHED_ROWS`).
    fn keep_later_changes(&self, changes: LaterChanges) -> Arc<LaterChanges> {
        let changes = Arc::new(changes);
        if changes.len() <= self.keys.len() {
            let mut kept = self
                .later_changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if kept.as_ref().is_none_or(|kept| kept.after > changes.after) {
                *kept = Some(changes.clone());
            }
        }
        changes
    }

    /// The whole table's encoding (the value shared in Redis).
    fn encode_whole(&self) -> Vec<u8> {
        self.encode(0, self.keys.len(), "").to_vec()
    }

    /// Rows after `after`, at most a page; totals always cover the whole table.
    fn encode_page(&self, after: Option<RowKey>, page: &PageRequest) -> EncodedResponse {
        let start = after.map_or(0, |after| self.keys.partition_point(|key| *key <= after));
        let (keys, next_page_token) = page.page_of(&self.keys[start..], RowKey::to_text);
        self.encode(start, start + keys.len(), &next_page_token)
    }

    /// Fields in number order, defaults left out, as prost writes them. The
    /// rows are a slice of the table's encoded rows, not a copy: a read of
    /// today's table copies them once, into the response's frame.
    fn encode(&self, start: usize, end: usize, next_page_token: &str) -> EncodedResponse {
        use prost::encoding::{int64, message, string};
        let header = &self.header;
        let rows = self
            .encoded_rows
            .slice(self.offsets[start]..self.offsets[end]);
        let mut buffer = prost::bytes::BytesMut::with_capacity(256);
        if let Some(totals) = &header.totals {
            message::encode(2, totals, &mut buffer);
        }
        if header.ledger_sequence != 0 {
            int64::encode(3, &header.ledger_sequence, &mut buffer);
        }
        if !next_page_token.is_empty() {
            string::encode(4, &next_page_token.to_owned(), &mut buffer);
        }
        if header.projection_version != 0 {
            int64::encode(5, &header.projection_version, &mut buffer);
        }
        if let Some(as_of) = &header.as_of {
            message::encode(6, as_of, &mut buffer);
        }
        EncodedResponse {
            head: rows,
            tail: buffer.freeze(),
        }
    }
}

/// A GetCapTable response's protobuf encoding in two parts, written one
/// after the other. For today's table `head` is the page's rows (field 1, a
/// slice of the table's buffer) and `tail` the other fields; a computed
/// table's response is all in `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedResponse {
    pub(crate) head: Bytes,
    pub(crate) tail: Bytes,
}

impl EncodedResponse {
    /// A response encoded in one piece.
    fn whole(encoded: Bytes) -> Self {
        Self {
            head: encoded,
            tail: Bytes::new(),
        }
    }

    /// Both parts in one buffer.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        [self.head.as_ref(), self.tail.as_ref()].concat()
    }
}

/// The text of a row's key, as [`RowKey::to_text`] writes it.
fn proto_row_key(row: &proto::CapTableRow) -> String {
    let (kind, id) = if row.plan_id.is_empty() {
        ("0", &row.stakeholder_id)
    } else {
        ("1", &row.plan_id)
    };
    format!("{}|{kind}|{id}", row.share_class_id)
}

/// A row's figures read back from its protobuf form (a pool row's
/// available pool is its fully diluted count less the rest); `None` for a
/// row this service did not write.
fn proto_row_position(row: &proto::CapTableRow) -> Option<Position> {
    let value = |field: &Option<qapmap_proto::common::v1::Decimal>| {
        field.as_ref()?.value.parse::<Decimal>().ok()
    };
    let shares = value(&row.shares)?;
    let options_outstanding = value(&row.options_outstanding)?;
    let fully_diluted = value(&row.fully_diluted)?;
    let key = RowKey::parse(&proto_row_key(row))?;
    let (holder, pool_available) = if key.pool {
        (
            Holder::Pool(key.id),
            fully_diluted - shares - options_outstanding,
        )
    } else {
        (Holder::Stakeholder(key.id), Decimal::ZERO)
    };
    Some(Position {
        holder,
        share_class_id: key.share_class_id,
        shares,
        options_outstanding,
        pool_available,
    })
}

/// One page of a table computed for this read: only its rows are converted.
fn page_of_table(
    table: &CapTable,
    after: Option<RowKey>,
    page: &PageRequest,
) -> proto::GetCapTableResponse {
    let start = after.map_or(0, |after| {
        table
            .positions()
            .partition_point(|position| position.key() <= after)
    });
    let end = start
        .saturating_add(page.fetch_limit() as usize)
        .min(table.len());
    let mut response = cap_table_to_proto(table, start..end);
    response.next_page_token = page.finish(&mut response.rows, proto_row_key);
    response
}

fn cap_table_to_proto(table: &CapTable, rows: Range<usize>) -> proto::GetCapTableResponse {
    let rows = table
        .rows(rows)
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
                ownership_basic_percent: Some(decimal::to_proto(table.basic_percent(&row))),
                ownership_fully_diluted_percent: Some(decimal::to_proto(
                    table.fully_diluted_percent(&row),
                )),
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    use super::*;
    use crate::cap_table::{Position, compute};

    fn table(holders: u128) -> CapTable {
        let positions = (1..=holders)
            .map(|i| Position {
                holder: if i % 4 == 0 {
                    Holder::Pool(Uuid::from_u128(i * 7919))
                } else {
                    Holder::Stakeholder(Uuid::from_u128(i * 7919))
                },
                share_class_id: Uuid::from_u128(i % 2),
                shares: Decimal::from(i as u64 * 10),
                options_outstanding: Decimal::from(i as u64),
                pool_available: Decimal::ZERO,
            })
            .collect();
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 2).expect("date");
        compute(as_of, 12, 3, positions)
    }

    /// A page copied from memory is byte for byte what prost would encode
    /// for the same page, and its token leads to the next page.
    #[test]
    fn an_encoded_page_equals_prosts_encoding_of_that_page() {
        let table = table(7);
        let served = ServedTable::from_table(&table);
        let whole = cap_table_to_proto(&table, 0..table.len());
        let page = PageRequest::parse(3, "").expect("page");
        let first = served.encode_page(None, &page);
        let expected = page_of_table(&table, None, &page);
        assert_eq!(first.to_vec(), expected.encode_to_vec());
        assert_eq!(expected.rows, whole.rows[..3]);

        let next = PageRequest::parse(3, &expected.next_page_token).expect("token");
        let after = next.after.as_deref().and_then(RowKey::parse);
        let second_page = served.encode_page(after, &next);
        let second =
            proto::GetCapTableResponse::decode(second_page.to_vec().as_slice()).expect("decodes");
        assert_eq!(second.rows, whole.rows[3..6]);
        assert_eq!(second.totals, whole.totals);
        assert_eq!(
            second_page.to_vec(),
            page_of_table(&table, after, &next).encode_to_vec()
        );

        // The last page: the rest of the rows, and no token.
        let last = PageRequest::parse(3, &second.next_page_token).expect("token");
        let last_after = last.after.as_deref().and_then(RowKey::parse);
        let last_page = served.encode_page(last_after, &last);
        let expected_last = page_of_table(&table, last_after, &last);
        assert_eq!(expected_last.rows, whole.rows[6..]);
        assert!(expected_last.next_page_token.is_empty());
        assert_eq!(last_page.to_vec(), expected_last.encode_to_vec());

        let shared =
            proto::GetCapTableResponse::decode(served.encode_whole().as_slice()).expect("decodes");
        assert_eq!(shared, whole);
        let again = ServedTable::from_response(shared).expect("reads back");
        assert_eq!(again.encode_page(None, &page), first);
    }

    /// A page of today's table points into the table's encoded rows (the
    /// read copies nothing before the frame), and a page that reaches the
    /// table's end, exactly or with room to spare, has no token.
    #[test]
    fn a_page_shares_the_tables_rows_and_the_last_one_has_no_token() {
        let table = table(6);
        let served = ServedTable::from_table(&table);
        let page = PageRequest::parse(4, "").expect("page");
        let first = served.encode_page(None, &page);
        let whole = served.encoded_rows.as_ptr_range();
        assert!(whole.contains(&first.head.as_ptr()));
        assert_eq!(first.head.as_ptr(), whole.start);

        for size in [6, 7, 500] {
            let page = PageRequest::parse(size, "").expect("page");
            let all = served.encode_page(None, &page);
            let expected = page_of_table(&table, None, &page);
            assert_eq!(expected.rows.len(), 6);
            assert!(expected.next_page_token.is_empty());
            assert_eq!(all.to_vec(), expected.encode_to_vec(), "page size {size}");
        }
    }

    /// Today's table read back from Redis gives the positions a past date
    /// is derived from, a pool's available shares included.
    #[test]
    fn a_table_read_back_from_its_shared_encoding_has_the_same_positions() {
        let class = Uuid::from_u128(5);
        let positions = vec![
            Position {
                holder: Holder::Stakeholder(Uuid::from_u128(1)),
                share_class_id: class,
                shares: "1250.5".parse().expect("decimal"),
                options_outstanding: Decimal::from(300),
                pool_available: Decimal::ZERO,
            },
            Position {
                holder: Holder::Pool(Uuid::from_u128(2)),
                share_class_id: class,
                shares: Decimal::ZERO,
                options_outstanding: Decimal::ZERO,
                pool_available: "9700.25".parse().expect("decimal"),
            },
        ];
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 2).expect("date");
        let table = compute(as_of, 4, 2, positions);
        let shared = ServedTable::from_table(&table).encode_whole();
        let decoded = proto::GetCapTableResponse::decode(shared.as_slice()).expect("decodes");
        let again = ServedTable::from_response(decoded).expect("reads back");
        assert_eq!(again.positions, table.positions());
    }

    /// Changes after `after` for a table of `table(3)`'s versions: `moves`
    /// share movements the day after.
    fn changes_after(after: NaiveDate, moves: usize) -> LaterChanges {
        let day = after + chrono::Days::new(1);
        LaterChanges {
            ledger_sequence: 12,
            projection_version: 3,
            shares: (0..moves as u128)
                .map(|i| cap_table::earlier::SharesMoved {
                    effective_date: day,
                    stakeholder_id: Uuid::from_u128(i),
                    share_class_id: Uuid::from_u128(1),
                    quantity: Decimal::ONE,
                })
                .collect(),
            ..LaterChanges::none_after(after)
        }
    }

    /// Kept changes serve their date and later ones; those reaching further
    /// back replace them, not the reverse; changes outnumbering the table's
    /// rows are used once and never kept (the memory bound).
    #[test]
    fn later_changes_are_kept_within_the_tables_size_and_the_furthest_back_win() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2025, 6, d).expect("date");
        let served = ServedTable::from_table(&table(3));
        assert!(served.has_versions_of(&changes_after(day(10), 0)));
        assert!(served.later_changes_reaching(day(10)).is_none());

        served.keep_later_changes(changes_after(day(10), 3));
        let kept = served.later_changes_reaching(day(20)).expect("kept");
        assert_eq!(kept.after, day(10));
        assert!(
            served.later_changes_reaching(day(9)).is_none(),
            "not that far back"
        );

        served.keep_later_changes(changes_after(day(15), 1));
        let kept = served.later_changes_reaching(day(20)).expect("kept");
        assert_eq!(kept.after, day(10), "the further-reaching ones stay");

        let used = served.keep_later_changes(changes_after(day(1), 4));
        assert_eq!(used.len(), 4, "used for this read");
        let kept = served.later_changes_reaching(day(20)).expect("kept");
        assert_eq!(kept.after, day(10), "4 movements for 3 rows are not kept");

        served.keep_later_changes(changes_after(day(5), 2));
        assert_eq!(
            served.later_changes_reaching(day(5)).expect("kept").after,
            day(5)
        );
    }
}
