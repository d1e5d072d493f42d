//! Sagas as the API shows them.

use chrono::{DateTime, Utc};
use qapmap_proto::saga::v1 as api;
use qapmap_runtime::{date, decimal};

use crate::context::SagaInput;
use crate::definition::StepKind;
use crate::machine::{SagaState, StepStatus};
use crate::sagas;
use crate::store::StoredSaga;

pub fn to_proto(stored: &StoredSaga) -> api::Saga {
    let saga = &stored.saga;
    let steps = saga
        .definition
        .steps()
        .zip(&saga.steps)
        .map(|(view, record)| api::SagaStep {
            index: i32::try_from(view.index).unwrap_or(i32::MAX),
            name: view.info.name.to_owned(),
            service: view.info.service.to_owned(),
            kind: kind_to_proto(view.kind) as i32,
            status: status_to_proto(record.status) as i32,
            attempts: i32::try_from(record.attempts).unwrap_or(i32::MAX),
            started_at: record.started_at.map(timestamp),
            finished_at: record.finished_at.map(timestamp),
            last_error: record.last_error.clone(),
        })
        .collect();
    api::Saga {
        id: stored.id.to_string(),
        company_id: stored.company_id.to_string(),
        saga_type: type_to_proto(saga.definition.saga_type) as i32,
        state: state_to_proto(saga.state) as i32,
        state_reason: saga.state_reason.clone(),
        request_id: stored.request_id.clone(),
        trace_id: stored.trace_id.clone(),
        steps,
        created_at: Some(timestamp(stored.created_at)),
        updated_at: Some(timestamp(stored.updated_at)),
        input: Some(input_to_proto(&saga.context.input)),
    }
}

fn input_to_proto(input: &SagaInput) -> api::saga::Input {
    match input {
        SagaInput::Exercise {
            award_id,
            quantity,
            exercise_date,
        } => api::saga::Input::Exercise(api::ExerciseInput {
            award_id: award_id.to_string(),
            quantity: Some(decimal::to_proto(*quantity)),
            exercise_date: Some(date::to_proto(*exercise_date)),
        }),
        SagaInput::Buyback {
            program_id,
            stakeholder_id,
            quantity,
            price_per_share,
            currency,
            repurchase_date,
        } => api::saga::Input::Buyback(api::BuybackInput {
            program_id: program_id.to_string(),
            stakeholder_id: stakeholder_id.to_string(),
            quantity: Some(decimal::to_proto(*quantity)),
            price_per_share: Some(qapmap_proto::common::v1::Money {
                amount: Some(decimal::to_proto(*price_per_share)),
                currency: currency.clone(),
            }),
            repurchase_date: Some(date::to_proto(*repurchase_date)),
        }),
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn type_to_proto(saga_type: &str) -> api::SagaType {
    match saga_type {
        sagas::OPTION_EXERCISE => api::SagaType::OptionExercise,
        sagas::SHARE_BUYBACK => api::SagaType::ShareBuyback,
        _ => api::SagaType::Unspecified,
    }
}

pub fn state_to_proto(state: SagaState) -> api::SagaState {
    match state {
        SagaState::Running => api::SagaState::Running,
        SagaState::Compensating => api::SagaState::Compensating,
        SagaState::Completed => api::SagaState::Completed,
        SagaState::Compensated => api::SagaState::Compensated,
        SagaState::Parked => api::SagaState::Parked,
    }
}

/// The inverse of [`state_to_proto`]; `Unspecified` is handled by callers.
pub fn state_from_proto(state: api::SagaState) -> SagaState {
    match state {
        api::SagaState::Running | api::SagaState::Unspecified => SagaState::Running,
        api::SagaState::Compensating => SagaState::Compensating,
        api::SagaState::Completed => SagaState::Completed,
        api::SagaState::Compensated => SagaState::Compensated,
        api::SagaState::Parked => SagaState::Parked,
    }
}

fn kind_to_proto(kind: StepKind) -> api::StepKind {
    match kind {
        StepKind::Compensatable => api::StepKind::Compensatable,
        StepKind::Pivot => api::StepKind::Pivot,
        StepKind::Retriable => api::StepKind::Retriable,
    }
}

fn status_to_proto(status: StepStatus) -> api::StepStatus {
    match status {
        StepStatus::Pending => api::StepStatus::Pending,
        StepStatus::Running => api::StepStatus::Running,
        StepStatus::Succeeded => api::StepStatus::Succeeded,
        StepStatus::Failed => api::StepStatus::Failed,
        StepStatus::Compensating => api::StepStatus::Compensating,
        StepStatus::Compensated => api::StepStatus::Compensated,
        StepStatus::Skipped => api::StepStatus::Skipped,
    }
}
