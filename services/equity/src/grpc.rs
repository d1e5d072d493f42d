//! The gRPC edge: a thin `EquityService` that hands each request to its
//! command and maps errors to `ApiError` (and so to `tonic::Status`) in one
//! place, at the bottom of this file.

use qapmap_proto::equity::v1 as proto;
use qapmap_proto::equity::v1::equity_service_server::EquityService;
use qapmap_runtime::ApiError;
use tonic::{Request, Response, Status};

use crate::commands::{
    CommandError, Equity, award_changes, awards, plans, programs, share_classes,
};

/// The service, sharing the database pool and subject names.
#[derive(Debug, Clone)]
pub struct EquityApi {
    equity: Equity,
}

impl EquityApi {
    pub fn new(equity: Equity) -> Self {
        Self { equity }
    }
}

fn respond<T>(result: Result<T, CommandError>) -> Result<Response<T>, Status> {
    result
        .map(Response::new)
        .map_err(|error| Status::from(ApiError::from(error)))
}

#[tonic::async_trait]
impl EquityService for EquityApi {
    async fn create_share_class(
        &self,
        request: Request<proto::CreateShareClassRequest>,
    ) -> Result<Response<proto::CreateShareClassResponse>, Status> {
        respond(share_classes::create(&self.equity, request.into_inner()).await)
    }

    async fn get_share_class(
        &self,
        request: Request<proto::GetShareClassRequest>,
    ) -> Result<Response<proto::GetShareClassResponse>, Status> {
        respond(share_classes::get(&self.equity, request.into_inner()).await)
    }

    async fn list_share_classes(
        &self,
        request: Request<proto::ListShareClassesRequest>,
    ) -> Result<Response<proto::ListShareClassesResponse>, Status> {
        respond(share_classes::list(&self.equity, request.into_inner()).await)
    }

    async fn adjust_authorized_shares(
        &self,
        request: Request<proto::AdjustAuthorizedSharesRequest>,
    ) -> Result<Response<proto::AdjustAuthorizedSharesResponse>, Status> {
        respond(share_classes::adjust_authorized(&self.equity, request.into_inner()).await)
    }

    async fn create_equity_plan(
        &self,
        request: Request<proto::CreateEquityPlanRequest>,
    ) -> Result<Response<proto::CreateEquityPlanResponse>, Status> {
        respond(plans::create(&self.equity, request.into_inner()).await)
    }

    async fn get_equity_plan(
        &self,
        request: Request<proto::GetEquityPlanRequest>,
    ) -> Result<Response<proto::GetEquityPlanResponse>, Status> {
        respond(plans::get(&self.equity, request.into_inner()).await)
    }

    async fn list_equity_plans(
        &self,
        request: Request<proto::ListEquityPlansRequest>,
    ) -> Result<Response<proto::ListEquityPlansResponse>, Status> {
        respond(plans::list(&self.equity, request.into_inner()).await)
    }

    async fn adjust_pool(
        &self,
        request: Request<proto::AdjustPoolRequest>,
    ) -> Result<Response<proto::AdjustPoolResponse>, Status> {
        respond(plans::adjust_pool(&self.equity, request.into_inner()).await)
    }

    async fn grant_award(
        &self,
        request: Request<proto::GrantAwardRequest>,
    ) -> Result<Response<proto::GrantAwardResponse>, Status> {
        respond(awards::grant(&self.equity, request.into_inner()).await)
    }

    async fn get_award(
        &self,
        request: Request<proto::GetAwardRequest>,
    ) -> Result<Response<proto::GetAwardResponse>, Status> {
        // Employees may call it about themselves only (see `awards::get`).
        let caller = qapmap_runtime::auth::authorized(&request)?;
        respond(awards::get(&self.equity, &caller, request.into_inner()).await)
    }

    async fn list_awards(
        &self,
        request: Request<proto::ListAwardsRequest>,
    ) -> Result<Response<proto::ListAwardsResponse>, Status> {
        // Employees may call it about themselves only (see `awards::list`).
        let caller = qapmap_runtime::auth::authorized(&request)?;
        respond(awards::list(&self.equity, &caller, request.into_inner()).await)
    }

    async fn surrender_award(
        &self,
        request: Request<proto::SurrenderAwardRequest>,
    ) -> Result<Response<proto::SurrenderAwardResponse>, Status> {
        respond(award_changes::surrender(&self.equity, request.into_inner()).await)
    }

    async fn record_award_termination(
        &self,
        request: Request<proto::RecordAwardTerminationRequest>,
    ) -> Result<Response<proto::RecordAwardTerminationResponse>, Status> {
        respond(award_changes::terminate(&self.equity, request.into_inner()).await)
    }

    async fn record_vesting_event(
        &self,
        request: Request<proto::RecordVestingEventRequest>,
    ) -> Result<Response<proto::RecordVestingEventResponse>, Status> {
        respond(award_changes::record_vesting_event(&self.equity, request.into_inner()).await)
    }

    async fn accelerate_vesting(
        &self,
        request: Request<proto::AccelerateVestingRequest>,
    ) -> Result<Response<proto::AccelerateVestingResponse>, Status> {
        respond(award_changes::accelerate(&self.equity, request.into_inner()).await)
    }

    async fn record_award_expiry(
        &self,
        request: Request<proto::RecordAwardExpiryRequest>,
    ) -> Result<Response<proto::RecordAwardExpiryResponse>, Status> {
        respond(award_changes::record_expiry(&self.equity, request.into_inner()).await)
    }

    async fn create_repurchase_program(
        &self,
        request: Request<proto::CreateRepurchaseProgramRequest>,
    ) -> Result<Response<proto::CreateRepurchaseProgramResponse>, Status> {
        respond(programs::create(&self.equity, request.into_inner()).await)
    }

    async fn get_repurchase_program(
        &self,
        request: Request<proto::GetRepurchaseProgramRequest>,
    ) -> Result<Response<proto::GetRepurchaseProgramResponse>, Status> {
        respond(programs::get(&self.equity, request.into_inner()).await)
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound { resource, id } => {
                ApiError::not_found(resource, id.to_string())
            }
            CommandError::Refused {
                reason,
                description,
            } => ApiError::precondition(reason, description),
            CommandError::StaleVersion { .. } => ApiError::Aborted(error.to_string()),
            CommandError::Duplicate(message) => ApiError::AlreadyExists(message),
            CommandError::Api(api) => api,
            CommandError::Database(database) => ApiError::from(database),
        }
    }
}
