//! Who started a saga, as each of its commands carries it: the subject and
//! roles for the audit trail, and for an employee's own saga the stakeholder
//! its steps are confined to. Read the same way by every service.

use qapmap_proto::messaging::v1::SagaCommand;
use uuid::Uuid;

use crate::audit::Actor;
use crate::error::ApiError;
use crate::ids;

/// The audit subject of a command that names no initiator.
pub const UNNAMED_INITIATOR: &str = "orchestrator";

#[derive(Debug, Clone)]
pub struct SagaInitiator {
    /// For the audit trail: the initiator's subject ([`UNNAMED_INITIATOR`]
    /// when the command names none) and roles.
    pub actor: Actor,
    /// Set when an employee started the saga for themselves: the step must
    /// concern only their own records.
    pub stakeholder_id: Option<Uuid>,
}

/// Reads the command's initiator. A stakeholder id that is not a UUID is
/// refused (field `initiator.stakeholder_id`): the saga would otherwise run
/// unconfined.
pub fn of(command: &SagaCommand) -> Result<SagaInitiator, ApiError> {
    let initiator = command.initiator.clone().unwrap_or_default();
    let stakeholder_id = ids::optional("initiator.stakeholder_id", &initiator.stakeholder_id)?;
    let subject = if initiator.subject.is_empty() {
        UNNAMED_INITIATOR.to_owned()
    } else {
        initiator.subject
    };
    Ok(SagaInitiator {
        actor: Actor {
            subject,
            roles: initiator.roles.join(","),
        },
        stakeholder_id,
    })
}
