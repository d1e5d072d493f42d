//! Stakeholder RPCs. Mutations run `idempotency::begin` -> command ->
//! `idempotency::finish` in one transaction; every input is parsed before the
//! transaction opens, so bad input writes nothing.

use qapmap_proto::shareholder::v1 as proto;
use qapmap_runtime::auth::AuthorizedCall;
use qapmap_runtime::idempotency::{self, RequestKey};
use qapmap_runtime::pagination::PageRequest;
use qapmap_runtime::{ApiError, ApiResult, date, ids, tenancy};
use uuid::Uuid;

use super::{ShareholderApi, method};
use crate::convert;
use crate::stakeholder::commands::{self, ContactChanges, NewStakeholder, Target};
use crate::stakeholder::store::{self, ListFilter};
use crate::stakeholder::{
    Email, InvalidValue, PaymentInstructionRef, PersonName, Stakeholder, StakeholderError,
    Termination,
};

/// Attaches the field name to a newtype's parse error.
fn field<T>(name: &str, parsed: Result<T, InvalidValue>) -> ApiResult<T> {
    parsed.map_err(|InvalidValue(why)| ApiError::invalid(name, why))
}

/// An optional text field: empty means absent.
fn optional<T>(
    name: &str,
    text: &str,
    parse: fn(&str) -> Result<T, InvalidValue>,
) -> ApiResult<Option<T>> {
    if text.is_empty() {
        return Ok(None);
    }
    field(name, parse(text)).map(Some)
}

fn target(company_id: Uuid, stakeholder_id: &str, expected_version: i64) -> ApiResult<Target> {
    let stakeholder_id = ids::parse("stakeholder_id", stakeholder_id)?;
    if expected_version < 1 {
        return Err(ApiError::invalid(
            "expected_version",
            "is required (the version you read)",
        ));
    }
    Ok(Target {
        company_id,
        stakeholder_id,
        expected_version,
    })
}

fn wrap(stakeholder: &Stakeholder) -> Option<proto::Stakeholder> {
    Some(convert::stakeholder_to_proto(stakeholder))
}

pub(super) async fn create(
    api: &ShareholderApi,
    request: proto::CreateStakeholderRequest,
) -> ApiResult<proto::CreateStakeholderResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method("CreateStakeholder"),
        &request,
    )?;
    let new = NewStakeholder {
        company_id,
        stakeholder_type: convert::stakeholder_type_from_proto(
            "stakeholder_type",
            request.stakeholder_type,
        )?,
        name: field("name", PersonName::parse(&request.name))?,
        email: optional("email", &request.email, Email::parse)?,
        relationships: convert::relationships_from_proto("relationships", &request.relationships)?,
        employment_start_date: date::optional(
            "employment_start_date",
            request.employment_start_date.as_ref(),
        )?,
        payment_instruction_ref: optional(
            "payment_instruction_ref",
            &request.payment_instruction_ref,
            PaymentInstructionRef::parse,
        )?,
    };
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let stakeholder = commands::create(&mut transaction, &api.subjects, new).await?;
    let response = proto::CreateStakeholderResponse {
        stakeholder: wrap(&stakeholder),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

/// One stakeholder. An employee (self-service) may read only their own
/// record: anyone else's is NOT_FOUND, as if it did not exist.
pub(super) async fn get(
    api: &ShareholderApi,
    caller: &AuthorizedCall,
    request: proto::GetStakeholderRequest,
) -> ApiResult<proto::GetStakeholderResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let stakeholder_id = ids::parse("stakeholder_id", &request.stakeholder_id)?;
    caller.require_own("stakeholder", stakeholder_id, stakeholder_id)?;
    let mut transaction = tenancy::begin(&api.pool, company_id).await?;
    let stakeholder = store::find(&mut *transaction, company_id, stakeholder_id)
        .await?
        .ok_or(StakeholderError::NotFound(stakeholder_id))?;
    transaction.commit().await?;
    Ok(proto::GetStakeholderResponse {
        stakeholder: wrap(&stakeholder),
    })
}

pub(super) async fn list(
    api: &ShareholderApi,
    request: proto::ListStakeholdersRequest,
) -> ApiResult<proto::ListStakeholdersResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let filter = ListFilter {
        relationship: match request.relationship {
            0 => None,
            value => Some(convert::relationship_from_proto("relationship", value)?),
        },
        status: match request.status {
            0 => None,
            value => Some(convert::status_name_from_proto("status", value)?.to_owned()),
        },
    };
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
        &filter,
        after,
        page.fetch_limit(),
    )
    .await?;
    transaction.commit().await?;
    let next_page_token = page.finish(&mut rows, |row| row.id.to_string());
    Ok(proto::ListStakeholdersResponse {
        stakeholders: rows.iter().map(convert::stakeholder_to_proto).collect(),
        next_page_token,
    })
}

pub(super) async fn update(
    api: &ShareholderApi,
    request: proto::UpdateStakeholderRequest,
) -> ApiResult<proto::UpdateStakeholderResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method("UpdateStakeholder"),
        &request,
    )?;
    let target = target(
        company_id,
        &request.stakeholder_id,
        request.expected_version,
    )?;
    let changes = ContactChanges {
        name: request
            .name
            .as_deref()
            .map(|name| field("name", PersonName::parse(name)))
            .transpose()?,
        email: request
            .email
            .as_deref()
            .map(|email| optional("email", email, Email::parse))
            .transpose()?,
        payment_instruction_ref: request
            .payment_instruction_ref
            .as_deref()
            .map(|text| {
                optional(
                    "payment_instruction_ref",
                    text,
                    PaymentInstructionRef::parse,
                )
            })
            .transpose()?,
    };
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let stakeholder =
        commands::update_contact(&mut transaction, &api.subjects, target, changes).await?;
    let response = proto::UpdateStakeholderResponse {
        stakeholder: wrap(&stakeholder),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

pub(super) async fn terminate(
    api: &ShareholderApi,
    request: proto::RecordTerminationRequest,
) -> ApiResult<proto::RecordTerminationResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method("RecordTermination"),
        &request,
    )?;
    let target = target(
        company_id,
        &request.stakeholder_id,
        request.expected_version,
    )?;
    let termination = Termination {
        date: date::required("termination_date", request.termination_date.as_ref())?,
        reason: convert::termination_reason_from_proto(
            "termination_reason",
            request.termination_reason,
        )?,
    };
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let stakeholder =
        commands::record_termination(&mut transaction, &api.subjects, target, termination).await?;
    let response = proto::RecordTerminationResponse {
        stakeholder: wrap(&stakeholder),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

pub(super) async fn change_status(
    api: &ShareholderApi,
    request: proto::ChangeStakeholderStatusRequest,
) -> ApiResult<proto::ChangeStakeholderStatusResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let key = RequestKey::new(
        company_id,
        &request.request_id,
        method("ChangeStakeholderStatus"),
        &request,
    )?;
    let target = target(
        company_id,
        &request.stakeholder_id,
        request.expected_version,
    )?;
    let new_status = convert::active_status_from_proto("new_status", request.new_status)?;
    let effective_date =
        date::effective_or_today("effective_date", request.effective_date.as_ref())?;
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let stakeholder = commands::change_status(
        &mut transaction,
        &api.subjects,
        target,
        new_status,
        effective_date,
    )
    .await?;
    let response = proto::ChangeStakeholderStatusResponse {
        stakeholder: wrap(&stakeholder),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

pub(super) async fn change_relationships(
    api: &ShareholderApi,
    request: proto::ChangeStakeholderRelationshipRequest,
) -> ApiResult<proto::ChangeStakeholderRelationshipResponse> {
    let company_id = ids::parse("company_id", &request.company_id)?;
    let method = method("ChangeStakeholderRelationship");
    let key = RequestKey::new(company_id, &request.request_id, method, &request)?;
    let target = target(
        company_id,
        &request.stakeholder_id,
        request.expected_version,
    )?;
    let relationships =
        convert::relationships_from_proto("new_relationships", &request.new_relationships)?;
    if relationships.is_empty() {
        return Err(ApiError::invalid(
            "new_relationships",
            "needs at least one relationship",
        ));
    }
    let effective_date =
        date::effective_or_today("effective_date", request.effective_date.as_ref())?;
    let mut transaction = api.pool.begin().await?;
    if let Some(stored) = idempotency::begin(&mut transaction, &key).await? {
        return Ok(stored);
    }
    let stakeholder = commands::change_relationships(
        &mut transaction,
        &api.subjects,
        target,
        relationships,
        effective_date,
    )
    .await?;
    let response = proto::ChangeStakeholderRelationshipResponse {
        stakeholder: wrap(&stakeholder),
    };
    idempotency::finish(&mut transaction, &key, &response).await?;
    transaction.commit().await?;
    Ok(response)
}

impl From<StakeholderError> for ApiError {
    fn from(error: StakeholderError) -> Self {
        let reason = error.reason_code();
        match error {
            StakeholderError::NotFound(id) => ApiError::not_found("stakeholder", id.to_string()),
            StakeholderError::StaleVersion { .. } => ApiError::Aborted(error.to_string()),
            StakeholderError::AlreadyTerminated
            | StakeholderError::TerminationBeforeEmploymentStart
            | StakeholderError::Terminated => ApiError::precondition(reason, error.to_string()),
            StakeholderError::Database(error) => ApiError::from(error),
        }
    }
}
