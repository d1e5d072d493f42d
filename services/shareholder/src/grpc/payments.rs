//! Payment RPCs. The payment's own row (unique per company and key) is what
//! makes it execute at most once; the request-id record is checked first (a
//! reused id for another method is refused before any money moves) and
//! written once the result is final. A gateway call cannot sit inside one
//! database transaction, so these are the two ends of it. The audit record
//! is written with the final outcome and its event, before the response is
//! stored.

use prost::Message;
use qapmap_proto::shareholder::v1 as proto;
use qapmap_runtime::audit::Actor;
use qapmap_runtime::decimal::Money;
use qapmap_runtime::idempotency::{self, RequestKey};
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, ApiResult, ids, tenancy};
use uuid::Uuid;

use super::{ShareholderApi, method};
use crate::convert;
use crate::payment::reconcile::{self, Resolution};
use crate::payment::{
    Direction, IdempotencyKey, PaymentAmount, PaymentAudit, PaymentError, PaymentIntent, store,
};

/// The fields collect and disburse share.
struct PaymentCall<'a> {
    request_id: &'a str,
    company_id: &'a str,
    stakeholder_id: &'a str,
    amount: Option<&'a qapmap_proto::common::v1::Money>,
}

pub(super) async fn collect(
    api: &ShareholderApi,
    request: proto::CollectPaymentRequest,
) -> ApiResult<proto::CollectPaymentResponse> {
    let call = PaymentCall {
        request_id: &request.request_id,
        company_id: &request.company_id,
        stakeholder_id: &request.stakeholder_id,
        amount: request.amount.as_ref(),
    };
    let wrap = |payment| proto::CollectPaymentResponse {
        payment: Some(payment),
    };
    pay(
        api,
        call,
        Direction::Collection,
        method("CollectPayment"),
        &request,
        wrap,
    )
    .await
}

pub(super) async fn disburse(
    api: &ShareholderApi,
    request: proto::DisbursePaymentRequest,
) -> ApiResult<proto::DisbursePaymentResponse> {
    let call = PaymentCall {
        request_id: &request.request_id,
        company_id: &request.company_id,
        stakeholder_id: &request.stakeholder_id,
        amount: request.amount.as_ref(),
    };
    let wrap = |payment| proto::DisbursePaymentResponse {
        payment: Some(payment),
    };
    pay(
        api,
        call,
        Direction::Disbursement,
        method("DisbursePayment"),
        &request,
        wrap,
    )
    .await
}

fn parse_intent(
    call: &PaymentCall<'_>,
    company_id: Uuid,
    direction: Direction,
    method: &str,
) -> ApiResult<PaymentIntent> {
    let stakeholder_id = ids::parse("stakeholder_id", call.stakeholder_id)?;
    let money = Money::required("amount", call.amount)?;
    let amount = PaymentAmount::new(money)
        .map_err(|invalid| ApiError::invalid("amount.amount", invalid.0))?;
    Ok(PaymentIntent {
        company_id,
        stakeholder_id,
        direction,
        amount,
        key: IdempotencyKey::for_request(call.request_id),
        // Recorded with the final outcome, so the record names its event
        // (the response is stored in a later transaction).
        audit: Some(PaymentAudit {
            actor: Actor::current_or_system(),
            method: method.to_owned(),
            request_id: call.request_id.to_owned(),
        }),
    })
}

async fn pay<Req: Message, Resp: Message + Default>(
    api: &ShareholderApi,
    call: PaymentCall<'_>,
    direction: Direction,
    method: &'static str,
    request: &Req,
    wrap: impl Fn(proto::Payment) -> Resp,
) -> ApiResult<Resp> {
    let company_id = ids::parse("company_id", call.company_id)?;
    let key = RequestKey::new(company_id, call.request_id, method, request)?;
    let intent = parse_intent(&call, company_id, direction, method)?;
    if let Some(stored) = stored_response(api, &key).await? {
        return Ok(stored);
    }
    let payment = api.payments.execute(&intent).await?;
    let response = wrap(convert::payment_to_proto(&payment));
    let mut transaction = api.pool.begin().await?;
    // A concurrent repeat may have stored the (identical) response first.
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    // The payment's audit record was written with its outcome.
    idempotency::store_response(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

/// The stored response of an earlier identical request; ALREADY_EXISTS if
/// the id was used for something else. Writes nothing.
async fn stored_response<Resp: Message + Default>(
    api: &ShareholderApi,
    key: &RequestKey,
) -> ApiResult<Option<Resp>> {
    let mut transaction = api.pool.begin().await?;
    let stored = idempotency::begin(&mut transaction, key).await?;
    transaction.rollback().await?;
    Ok(stored)
}

/// Settles a payment whose outcome is unknown (see `payment::reconcile`),
/// with its audit record and, when the money moved, its event.
pub(super) async fn resolve(
    api: &ShareholderApi,
    request: proto::ResolvePaymentRequest,
) -> ApiResult<proto::ResolvePaymentResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method("ResolvePayment"),
        &request,
    )?;
    let payment_id = ids::parse("payment_id", &request.payment_id)?;
    let resolution = resolution_from_proto(&request)?;
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let payment = reconcile::resolve(
        &mut transaction,
        &api.subjects,
        company_id,
        payment_id,
        resolution,
    )
    .await?;
    let response = proto::ResolvePaymentResponse {
        payment: Some(convert::payment_to_proto(&payment)),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

fn resolution_from_proto(request: &proto::ResolvePaymentRequest) -> ApiResult<Resolution> {
    let reference = request.gateway_reference.trim();
    match proto::PaymentResolution::try_from(request.resolution) {
        Ok(proto::PaymentResolution::MoneyMoved) if reference.is_empty() => Err(ApiError::invalid(
            "gateway_reference",
            "required when the money moved",
        )),
        Ok(proto::PaymentResolution::MoneyMoved) if reference.len() > 256 => Err(
            ApiError::invalid("gateway_reference", "at most 256 characters"),
        ),
        Ok(proto::PaymentResolution::MoneyMoved) => Ok(Resolution::MoneyMoved {
            gateway_reference: reference.to_owned(),
        }),
        Ok(proto::PaymentResolution::MoneyNotMoved) if !reference.is_empty() => Err(
            ApiError::invalid("gateway_reference", "must be empty when no money moved"),
        ),
        Ok(proto::PaymentResolution::MoneyNotMoved) => Ok(Resolution::MoneyNotMoved),
        Ok(proto::PaymentResolution::Unspecified) | Err(_) => Err(ApiError::invalid(
            "resolution",
            "must be PAYMENT_RESOLUTION_MONEY_MOVED or PAYMENT_RESOLUTION_MONEY_NOT_MOVED",
        )),
    }
}

pub(super) async fn get(
    api: &ShareholderApi,
    request: proto::GetPaymentRequest,
) -> ApiResult<proto::GetPaymentResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let payment_id = ids::parse("payment_id", &request.payment_id)?;
    let payment = api.payments.find(company_id, payment_id).await?;
    Ok(proto::GetPaymentResponse {
        payment: Some(convert::payment_to_proto(&payment)),
    })
}

pub(super) async fn list(
    api: &ShareholderApi,
    request: proto::ListPaymentsRequest,
) -> ApiResult<proto::ListPaymentsResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let stakeholder_id = ids::optional("stakeholder_id", &request.stakeholder_id)?;
    let page = PageRequest::parse(request.page_size, &request.page_token)?;
    let after = page
        .after
        .as_deref()
        .map(|token| ids::parse("page_token", token))
        .transpose()?;
    let mut transaction = tenancy::begin(&api.pool, company_id).await?;
    let mut rows = store::list(
        &mut *transaction,
        company_id,
        stakeholder_id,
        after,
        page.fetch_limit(),
    )
    .await?;
    transaction.commit().await?;
    let next_page_token = page.finish(&mut rows, |row| row.id.to_string());
    Ok(proto::ListPaymentsResponse {
        payments: rows.iter().map(convert::payment_to_proto).collect(),
        next_page_token,
    })
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> Self {
        let reason = error.reason_code();
        match error {
            PaymentError::StakeholderNotFound(id) => {
                ApiError::not_found("stakeholder", id.to_string())
            }
            PaymentError::NotFound(id) => ApiError::not_found("payment", id.to_string()),
            PaymentError::KeyReused(_) => ApiError::AlreadyExists(error.to_string()),
            PaymentError::GatewayUnavailable(_) | PaymentError::InProgress => {
                ApiError::Unavailable(error.to_string())
            }
            PaymentError::PaymentInstructionMissing
            | PaymentError::OutcomeUnknown(_)
            | PaymentError::NotOutcomeUnknown { .. } => {
                ApiError::precondition(reason, error.to_string())
            }
            PaymentError::Database(error) => ApiError::from(error),
        }
    }
}
