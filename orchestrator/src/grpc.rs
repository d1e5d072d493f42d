//! The `qapmap.saga.v1.SagaService` edge: validates and converts requests,
//! calls the engine, converts back. Errors map to `ApiError` at the bottom.

use chrono::{DateTime, NaiveTime, Utc};
use prost::Message;
use qapmap_proto::saga::v1 as api;
use qapmap_proto::saga::v1::saga_service_server::SagaService;
use qapmap_runtime::auth::{self, AuthorizedCall};
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, date, decimal, idempotency, ids};
use sqlx::{PgPool, Postgres, Transaction};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::context::{SagaContext, SagaInput};
use crate::engine::{Engine, EngineError, StartRequest};
use crate::machine::{Event, Refusal};
use crate::sagas;
use crate::store::{self, Initiator, ListFilter, StoredSaga};
use crate::view::to_proto;

#[derive(Debug, Clone)]
pub struct SagaApi {
    pub engine: Engine,
}

macro_rules! method {
    ($name:literal) => {
        concat!("/qapmap.saga.v1.SagaService/", $name)
    };
}

/// A read-only transaction confined to `company_id`, begun in one round
/// trip: GetSaga is polled by every client waiting for a saga. End it by
/// dropping it.
async fn confined_read(
    pool: &PgPool,
    company_id: Uuid,
) -> Result<Transaction<'static, Postgres>, ApiError> {
    Ok(qapmap_runtime::tenancy::begin_read_only(pool, company_id).await?)
}

/// Who is starting a saga, from their verified token.
fn initiator_of(call: &AuthorizedCall) -> Initiator {
    Initiator {
        subject: call.caller.subject.clone(),
        roles: call.caller.roles_text(),
        stakeholder_id: call.self_service(),
    }
}

#[tonic::async_trait]
impl SagaService for SagaApi {
    async fn start_exercise(
        &self,
        request: Request<api::StartExerciseRequest>,
    ) -> Result<Response<api::StartExerciseResponse>, Status> {
        // An employee may start an exercise: the saga carries their
        // stakeholder id, and equity's reservation step refuses an award
        // that is not theirs.
        let call = auth::authorized(&request)?;
        let request = request.into_inner();
        let company_id = ids::parse("company_id", &request.company_id)?;
        idempotency::validate_request_id(&request.request_id)?;
        let input = exercise_input(request.exercise.as_ref())?;
        let saga = self
            .start(
                company_id,
                &request.request_id,
                request.encode_to_vec(),
                (method!("StartExercise"), initiator_of(&call)),
                &sagas::EXERCISE,
                input,
            )
            .await?;
        Ok(Response::new(api::StartExerciseResponse {
            saga: Some(saga),
        }))
    }

    async fn start_buyback(
        &self,
        request: Request<api::StartBuybackRequest>,
    ) -> Result<Response<api::StartBuybackResponse>, Status> {
        let call = auth::authorized(&request)?;
        // The policy keeps employees out already; a buyback moves someone's
        // shares, so it is never self-service, whatever the policy becomes.
        if call.self_service().is_some() {
            return Err(Status::permission_denied(
                "a buyback cannot be started as self-service",
            ));
        }
        let request = request.into_inner();
        let company_id = ids::parse("company_id", &request.company_id)?;
        idempotency::validate_request_id(&request.request_id)?;
        let input = buyback_input(request.buyback.as_ref())?;
        let saga = self
            .start(
                company_id,
                &request.request_id,
                request.encode_to_vec(),
                (method!("StartBuyback"), initiator_of(&call)),
                &sagas::BUYBACK,
                input,
            )
            .await?;
        Ok(Response::new(api::StartBuybackResponse {
            saga: Some(saga),
        }))
    }

    async fn get_saga(
        &self,
        request: Request<api::GetSagaRequest>,
    ) -> Result<Response<api::GetSagaResponse>, Status> {
        let call = auth::authorized(&request)?;
        let request = request.into_inner();
        let company_id = ids::parse("company_id", &request.company_id)?;
        let saga_id = ids::parse("saga_id", &request.saga_id)?;
        let mut transaction = confined_read(&self.engine.pool, company_id).await?;
        let stored = store::load(&mut transaction, saga_id, false)
            .await
            .map_err(EngineError::from)?;
        // Read only: dropping it rolls back, sent with the ping the pool
        // makes on release anyway (one round trip fewer than a COMMIT).
        drop(transaction);
        // Another company's saga, or (for an employee) one they did not
        // start for themselves, is as unknown as a missing one.
        let stored = stored
            .filter(|stored| stored.company_id == company_id)
            .filter(|stored| {
                call.self_service()
                    .is_none_or(|own| stored.initiator.stakeholder_id == Some(own))
            })
            .ok_or(EngineError::NotFound(saga_id))?;
        Ok(Response::new(api::GetSagaResponse {
            saga: Some(to_proto(&stored)),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<api::ListSagasRequest>,
    ) -> Result<Response<api::ListSagasResponse>, Status> {
        let call = auth::authorized(&request)?;
        let request = request.into_inner();
        let (mut filter, page) = list_filter(&request)?;
        // Employees see only the sagas they started for themselves.
        filter.initiator_stakeholder_id = call.self_service();
        let mut transaction = confined_read(&self.engine.pool, filter.company_id).await?;
        let mut rows = store::list(&mut transaction, &filter)
            .await
            .map_err(EngineError::from)?;
        drop(transaction);
        let next_page_token = page.finish(&mut rows, |saga: &StoredSaga| {
            format!("{}/{}", saga.created_at.timestamp_micros(), saga.id)
        });
        Ok(Response::new(api::ListSagasResponse {
            sagas: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<api::RetrySagaRequest>,
    ) -> Result<Response<api::RetrySagaResponse>, Status> {
        let request = request.into_inner();
        let company_id = ids::parse("company_id", &request.company_id)?;
        let saga_id = ids::parse("saga_id", &request.saga_id)?;
        let saga = self
            .engine
            .operate(
                company_id,
                saga_id,
                (method!("RetrySaga"), &request.request_id),
                Event::Retry,
            )
            .await?;
        Ok(Response::new(api::RetrySagaResponse {
            saga: Some(to_proto(&saga)),
        }))
    }

    async fn abort_saga(
        &self,
        request: Request<api::AbortSagaRequest>,
    ) -> Result<Response<api::AbortSagaResponse>, Status> {
        let request = request.into_inner();
        let company_id = ids::parse("company_id", &request.company_id)?;
        let saga_id = ids::parse("saga_id", &request.saga_id)?;
        if request.reason.len() > 500 {
            return Err(ApiError::invalid("reason", "must be at most 500 characters").into());
        }
        let reason = if request.reason.is_empty() {
            "operator request"
        } else {
            request.reason.as_str()
        };
        let saga = self
            .engine
            .operate(
                company_id,
                saga_id,
                (method!("AbortSaga"), &request.request_id),
                Event::Abort { reason },
            )
            .await?;
        Ok(Response::new(api::AbortSagaResponse {
            saga: Some(to_proto(&saga)),
        }))
    }
}

impl SagaApi {
    async fn start(
        &self,
        company_id: Uuid,
        request_id: &str,
        request: Vec<u8>,
        (method, initiator): (&str, Initiator),
        definition: &'static crate::definition::SagaDefinition,
        input: SagaInput,
    ) -> Result<api::Saga, EngineError> {
        // The saga's root span: its context is stored on the saga row, and
        // every step and compensation hangs under it, even after a restart.
        // `saga.id` is known once the engine made the row.
        let span = tracing::info_span!(
            "saga",
            otel.name = %format!("saga {}", definition.saga_type),
            saga.id = tracing::field::Empty,
            "saga.type" = definition.saga_type,
            company.id = %company_id,
        );
        let started = self
            .engine
            .start(StartRequest {
                company_id,
                request_id,
                request,
                method,
                initiator,
                definition,
                context: SagaContext::new(input),
            })
            .instrument(span.clone())
            .await?;
        span.record("saga.id", tracing::field::display(started.saga.id));
        Ok(to_proto(&started.saga))
    }
}

fn exercise_input(exercise: Option<&api::ExerciseInput>) -> Result<SagaInput, ApiError> {
    let exercise = exercise.ok_or_else(|| ApiError::invalid("exercise", "is required"))?;
    Ok(SagaInput::Exercise {
        award_id: ids::parse("exercise.award_id", &exercise.award_id)?,
        quantity: decimal::positive("exercise.quantity", exercise.quantity.as_ref())?,
        exercise_date: date::effective_or_today(
            "exercise.exercise_date",
            exercise.exercise_date.as_ref(),
        )?,
    })
}

fn buyback_input(buyback: Option<&api::BuybackInput>) -> Result<SagaInput, ApiError> {
    let buyback = buyback.ok_or_else(|| ApiError::invalid("buyback", "is required"))?;
    let price =
        decimal::Money::required("buyback.price_per_share", buyback.price_per_share.as_ref())?;
    if price.amount <= rust_decimal::Decimal::ZERO {
        return Err(ApiError::invalid(
            "buyback.price_per_share.amount",
            "must be above 0",
        ));
    }
    Ok(SagaInput::Buyback {
        program_id: ids::parse("buyback.program_id", &buyback.program_id)?,
        stakeholder_id: ids::parse("buyback.stakeholder_id", &buyback.stakeholder_id)?,
        quantity: decimal::positive("buyback.quantity", buyback.quantity.as_ref())?,
        price_per_share: price.amount,
        currency: price.currency.to_string(),
        repurchase_date: date::effective_or_today(
            "buyback.repurchase_date",
            buyback.repurchase_date.as_ref(),
        )?,
    })
}

fn list_filter(request: &api::ListSagasRequest) -> Result<(ListFilter, PageRequest), ApiError> {
    let page = PageRequest::parse(request.page_size, &request.page_token)?;
    let state = match api::SagaState::try_from(request.state) {
        Ok(api::SagaState::Unspecified) => None,
        Ok(state) => Some(crate::view::state_from_proto(state)),
        Err(_) => return Err(ApiError::invalid("state", "is not a SagaState value")),
    };
    let saga_type = match api::SagaType::try_from(request.saga_type) {
        Ok(api::SagaType::Unspecified) => None,
        Ok(api::SagaType::OptionExercise) => Some(sagas::OPTION_EXERCISE),
        Ok(api::SagaType::ShareBuyback) => Some(sagas::SHARE_BUYBACK),
        Err(_) => return Err(ApiError::invalid("saga_type", "is not a SagaType value")),
    };
    let start_of = |day: chrono::NaiveDate| {
        DateTime::<Utc>::from_naive_utc_and_offset(day.and_time(NaiveTime::MIN), Utc)
    };
    let created_from = date::optional("created_from", request.created_from.as_ref())?.map(start_of);
    let created_to = date::optional("created_to", request.created_to.as_ref())?;
    let created_before = created_to.and_then(|day| day.succ_opt()).map(start_of);
    let after = page.after.as_deref().map(parse_cursor).transpose()?;
    let filter = ListFilter {
        company_id: ids::parse("company_id", &request.company_id)?,
        initiator_stakeholder_id: None,
        state,
        saga_type,
        created_from,
        created_before,
        after,
        limit: page.fetch_limit(),
    };
    Ok((filter, page))
}

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::invalid("page_token", "is not a token this service issued");
    let (micros, id) = cursor.split_once('/').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let created_at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((created_at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound(id) => ApiError::not_found("saga", id.to_string()),
            EngineError::RequestIdReused(_) => ApiError::AlreadyExists(error.to_string()),
            EngineError::Refused(Refusal::PastPivot) => {
                ApiError::precondition("saga_past_pivot", error.to_string())
            }
            EngineError::Refused(Refusal::WrongState(_)) => {
                ApiError::precondition("saga_state", error.to_string())
            }
            EngineError::Store(error) => ApiError::internal(error),
            EngineError::Database(error) => ApiError::from(error),
        }
    }
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Self {
        ApiError::from(error).into()
    }
}
