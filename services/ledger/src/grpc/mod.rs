//! The gRPC edge of `qapmap.ledger.v1.LedgerService`: parse requests into
//! domain values, run the command in one transaction with request-id
//! idempotency, convert results back. Domain errors become `ApiError` here.

mod cap_table_route;
mod mutations;
mod queries;

use std::sync::Arc;

use prost::Message;
use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::ledger::v1::ledger_service_server::LedgerService;
use qapmap_runtime::ApiError;
use qapmap_runtime::auth;
use qapmap_runtime::idempotency::{self, RequestKey};
use qapmap_runtime::messaging::Subjects;
use sqlx::{PgPool, Postgres, Transaction};
use tonic::{Request, Response, Status};

use crate::cap_table::cache::CapTableCache;
use crate::cap_table::current::CurrentTables;
use crate::cap_table::metrics::OtherDateMetrics;
use crate::commands::CommandError;
use crate::holds::HoldError;
use crate::journal::PostingError;
pub(crate) use cap_table_route::LedgerRoutes;
pub(crate) use queries::ServedTable;

/// The service state shared by every call.
#[derive(Debug, Clone)]
pub(crate) struct LedgerApi {
    pub(crate) pool: PgPool,
    pub(crate) subjects: Subjects,
    pub(crate) cache: CapTableCache,
    /// Today's cap tables in memory; `close` drops a company's after its commit.
    pub(crate) tables: CurrentTables<ServedTable>,
    pub(crate) other_dates: Arc<OtherDateMetrics>,
}

impl LedgerApi {
    /// Opens the transaction of a mutating call, confined to the request's
    /// company by `idempotency::begin`; a repeat of a handled request
    /// returns its stored response instead.
    async fn open<R: prost::Message + Default>(
        &self,
        key: &RequestKey,
    ) -> Result<(Transaction<'static, Postgres>, Option<R>), ApiError> {
        let mut tx = self.pool.begin().await?;
        let stored = idempotency::begin::<R>(&mut tx, key).await?;
        Ok((tx, stored))
    }

    /// Stores the response for repeats and commits; the company's table in
    /// memory goes at once, so the caller's next read shows its write.
    async fn close<R: prost::Message>(
        &self,
        mut tx: Transaction<'static, Postgres>,
        key: &RequestKey,
        response: R,
    ) -> Result<Response<R>, ApiError> {
        idempotency::finish(&mut tx, key, &response).await?;
        tx.commit().await?;
        self.tables.changed(key.company_id);
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl LedgerService for LedgerApi {
    async fn issue_shares(
        &self,
        request: Request<proto::IssueSharesRequest>,
    ) -> Result<Response<proto::IssueSharesResponse>, Status> {
        Ok(self.issue(request.into_inner()).await?)
    }
    async fn transfer_shares(
        &self,
        request: Request<proto::TransferSharesRequest>,
    ) -> Result<Response<proto::TransferSharesResponse>, Status> {
        Ok(self.transfer(request.into_inner()).await?)
    }
    async fn cancel_shares(
        &self,
        request: Request<proto::CancelSharesRequest>,
    ) -> Result<Response<proto::CancelSharesResponse>, Status> {
        Ok(self.cancel(request.into_inner()).await?)
    }
    async fn retire_treasury_shares(
        &self,
        request: Request<proto::RetireTreasurySharesRequest>,
    ) -> Result<Response<proto::RetireTreasurySharesResponse>, Status> {
        Ok(self.retire(request.into_inner()).await?)
    }
    async fn adjust_authorized_shares(
        &self,
        request: Request<proto::AdjustAuthorizedSharesRequest>,
    ) -> Result<Response<proto::AdjustAuthorizedSharesResponse>, Status> {
        Ok(self.adjust_authorized(request.into_inner()).await?)
    }
    async fn reverse_entry(
        &self,
        request: Request<proto::ReverseEntryRequest>,
    ) -> Result<Response<proto::ReverseEntryResponse>, Status> {
        Ok(self.reverse(request.into_inner()).await?)
    }
    async fn post_entry(
        &self,
        request: Request<proto::PostEntryRequest>,
    ) -> Result<Response<proto::PostEntryResponse>, Status> {
        Ok(self.post_general(request.into_inner()).await?)
    }
    async fn place_hold(
        &self,
        request: Request<proto::PlaceHoldRequest>,
    ) -> Result<Response<proto::PlaceHoldResponse>, Status> {
        Ok(self.place(request.into_inner()).await?)
    }
    async fn release_hold(
        &self,
        request: Request<proto::ReleaseHoldRequest>,
    ) -> Result<Response<proto::ReleaseHoldResponse>, Status> {
        Ok(self.release(request.into_inner()).await?)
    }
    async fn get_entry(
        &self,
        request: Request<proto::GetEntryRequest>,
    ) -> Result<Response<proto::GetEntryResponse>, Status> {
        Ok(self.entry(request.into_inner()).await?)
    }
    async fn list_entries(
        &self,
        request: Request<proto::ListEntriesRequest>,
    ) -> Result<Response<proto::ListEntriesResponse>, Status> {
        Ok(self.entries(request.into_inner()).await?)
    }
    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::GetBalanceResponse>, Status> {
        let call = auth::authorized(&request)?;
        Ok(self.balance(&call, request.into_inner()).await?)
    }
    async fn get_cap_table(
        &self,
        request: Request<proto::GetCapTableRequest>,
    ) -> Result<Response<proto::GetCapTableResponse>, Status> {
        // Served by `cap_table_route`; this path (unused by the server)
        // answers the same by decoding its bytes.
        let encoded = self.cap_table_encoded(request.into_inner()).await?;
        proto::GetCapTableResponse::decode(encoded.to_vec().as_slice())
            .map(Response::new)
            .map_err(|error| Status::internal(error.to_string()))
    }
    async fn get_statement(
        &self,
        request: Request<proto::GetStatementRequest>,
    ) -> Result<Response<proto::GetStatementResponse>, Status> {
        let call = auth::authorized(&request)?;
        Ok(self.statement(&call, request.into_inner()).await?)
    }
}

impl From<PostingError> for ApiError {
    fn from(error: PostingError) -> Self {
        match error {
            PostingError::Database(error) => error.into(),
            PostingError::UnknownShareClass(id) => {
                ApiError::not_found("share class", id.to_string())
            }
            PostingError::HoldNotFound(id) => ApiError::not_found("hold", id.to_string()),
            other => ApiError::precondition(other.reason_code(), other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Posting(error) => error.into(),
            CommandError::Database(error) => error.into(),
            CommandError::EntryNotFound(id) => ApiError::not_found("entry", id.to_string()),
            CommandError::AlreadyReversed(_) => {
                ApiError::precondition("already_reversed", error.to_string())
            }
            CommandError::ReversalOfReversal => {
                ApiError::precondition("reversal_of_reversal", error.to_string())
            }
            CommandError::AuthorizedUnchanged(_) => {
                ApiError::precondition("authorized_unchanged", error.to_string())
            }
        }
    }
}

impl From<HoldError> for ApiError {
    fn from(error: HoldError) -> Self {
        match error {
            HoldError::Database(error) => error.into(),
            HoldError::NotFound(id) => ApiError::not_found("hold", id.to_string()),
            HoldError::UnknownShareClass(id) => ApiError::not_found("share class", id.to_string()),
            HoldError::NotAShareAccount => ApiError::invalid("account", error.to_string()),
            other => ApiError::precondition(other.reason_code(), other.to_string()),
        }
    }
}
