//! The `qapmap.shareholder.v1.ShareholderService` edge: each RPC parses its
//! request into domain types, runs the command, and converts the result.
//! Errors become `tonic::Status` through `qapmap_runtime::ApiError`.

mod payments;
mod stakeholders;

use qapmap_proto::shareholder::v1 as proto;
use qapmap_proto::shareholder::v1::shareholder_service_server::ShareholderService;
use qapmap_runtime::ApiResult;
use qapmap_runtime::messaging::Subjects;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::payment::Payments;

/// The gRPC service's state.
#[derive(Debug, Clone)]
pub struct ShareholderApi {
    pool: PgPool,
    subjects: Subjects,
    payments: Payments,
}

impl ShareholderApi {
    pub fn new(pool: PgPool, subjects: Subjects, payments: Payments) -> Self {
        Self {
            pool,
            subjects,
            payments,
        }
    }
}

/// The full gRPC method name, the idempotency record's `method`.
fn method(name: &str) -> &'static str {
    match name {
        "CreateStakeholder" => "/qapmap.shareholder.v1.ShareholderService/CreateStakeholder",
        "UpdateStakeholder" => "/qapmap.shareholder.v1.ShareholderService/UpdateStakeholder",
        "RecordTermination" => "/qapmap.shareholder.v1.ShareholderService/RecordTermination",
        "ChangeStakeholderStatus" => {
            "/qapmap.shareholder.v1.ShareholderService/ChangeStakeholderStatus"
        }
        "ChangeStakeholderRelationship" => {
            "/qapmap.shareholder.v1.ShareholderService/ChangeStakeholderRelationship"
        }
        "CollectPayment" => "/qapmap.shareholder.v1.ShareholderService/CollectPayment",
        "DisbursePayment" => "/qapmap.shareholder.v1.ShareholderService/DisbursePayment",
        "ResolvePayment" => "/qapmap.shareholder.v1.ShareholderService/ResolvePayment",
        other => unreachable!("no mutating method {other}"),
    }
}

fn respond<T>(result: ApiResult<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl ShareholderService for ShareholderApi {
    async fn create_stakeholder(
        &self,
        request: Request<proto::CreateStakeholderRequest>,
    ) -> Result<Response<proto::CreateStakeholderResponse>, Status> {
        respond(stakeholders::create(self, request.into_inner()).await)
    }

    async fn get_stakeholder(
        &self,
        request: Request<proto::GetStakeholderRequest>,
    ) -> Result<Response<proto::GetStakeholderResponse>, Status> {
        // Employees may call it about themselves only (see `stakeholders::get`).
        let caller = qapmap_runtime::auth::authorized(&request)?;
        respond(stakeholders::get(self, &caller, request.into_inner()).await)
    }

    async fn list_stakeholders(
        &self,
        request: Request<proto::ListStakeholdersRequest>,
    ) -> Result<Response<proto::ListStakeholdersResponse>, Status> {
        respond(stakeholders::list(self, request.into_inner()).await)
    }

    async fn update_stakeholder(
        &self,
        request: Request<proto::UpdateStakeholderRequest>,
    ) -> Result<Response<proto::UpdateStakeholderResponse>, Status> {
        respond(stakeholders::update(self, request.into_inner()).await)
    }

    async fn record_termination(
        &self,
        request: Request<proto::RecordTerminationRequest>,
    ) -> Result<Response<proto::RecordTerminationResponse>, Status> {
        respond(stakeholders::terminate(self, request.into_inner()).await)
    }

    async fn change_stakeholder_status(
        &self,
        request: Request<proto::ChangeStakeholderStatusRequest>,
    ) -> Result<Response<proto::ChangeStakeholderStatusResponse>, Status> {
        respond(stakeholders::change_status(self, request.into_inner()).await)
    }

    async fn change_stakeholder_relationship(
        &self,
        request: Request<proto::ChangeStakeholderRelationshipRequest>,
    ) -> Result<Response<proto::ChangeStakeholderRelationshipResponse>, Status> {
        respond(stakeholders::change_relationships(self, request.into_inner()).await)
    }

    async fn collect_payment(
        &self,
        request: Request<proto::CollectPaymentRequest>,
    ) -> Result<Response<proto::CollectPaymentResponse>, Status> {
        respond(payments::collect(self, request.into_inner()).await)
    }

    async fn disburse_payment(
        &self,
        request: Request<proto::DisbursePaymentRequest>,
    ) -> Result<Response<proto::DisbursePaymentResponse>, Status> {
        respond(payments::disburse(self, request.into_inner()).await)
    }

    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::GetPaymentResponse>, Status> {
        respond(payments::get(self, request.into_inner()).await)
    }

    async fn list_payments(
        &self,
        request: Request<proto::ListPaymentsRequest>,
    ) -> Result<Response<proto::ListPaymentsResponse>, Status> {
        respond(payments::list(self, request.into_inner()).await)
    }

    async fn resolve_payment(
        &self,
        request: Request<proto::ResolvePaymentRequest>,
    ) -> Result<Response<proto::ResolvePaymentResponse>, Status> {
        respond(payments::resolve(self, request.into_inner()).await)
    }
}
