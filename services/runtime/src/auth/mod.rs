//! Who is calling, and what they may do.
//!
//! Every gRPC call except health and reflection carries a bearer JWT. The
//! [`layer::AuthLayer`] verifies it ([`verifier`]), checks the method's
//! [`policy`] against the caller's roles, reads the request's `company_id`
//! and refuses companies the token does not name (NOT_FOUND, so existence
//! never leaks), applies the [`rate_limit`], and hands the handler an
//! [`AuthorizedCall`] in the request's extensions. Handlers that serve
//! employees narrow further with [`AuthorizedCall::self_service`].
//!
//! The same call is also kept in a task-local ([`current_call`]) for the
//! audit record written by the idempotency layer, and for the initiator a
//! saga command carries.

pub mod claims;
pub mod client;
pub mod layer;
pub mod policy;
pub mod rate_limit;
pub mod signing;
pub mod verifier;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::ApiError;

/// What a caller may be. A token may hold several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs the company's cap table: every read and write for its companies.
    Admin,
    /// Platform operations: reads, saga retry/abort, dead letters.
    Operator,
    /// Self-service: their own stakeholder record, grants, holdings and exercises.
    Employee,
    /// An integration: the reads (and writes) its `scope` claim grants.
    Partner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Employee, Role::Partner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Employee => "employee",
            Role::Partner => "partner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "employee" => Ok(Role::Employee),
            "partner" => Ok(Role::Partner),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// The companies a token may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Companies {
    /// `"*"`: platform staff acting for every company.
    All,
    Listed(BTreeSet<Uuid>),
}

impl Companies {
    pub fn includes(&self, company_id: Uuid) -> bool {
        match self {
            Companies::All => true,
            Companies::Listed(companies) => companies.contains(&company_id),
        }
    }
}

/// A verified token's subject and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub companies: Companies,
    pub roles: BTreeSet<Role>,
    /// An employee's own stakeholder id in each company.
    pub stakeholders: BTreeMap<Uuid, Uuid>,
    /// OAuth-style scopes, e.g. `equity:read`, for partners.
    pub scopes: BTreeSet<String>,
}

impl Caller {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Roles as one comma-separated string, for audit rows and spans.
    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|role| role.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How much of a company a call may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything the method covers in the company.
    Company,
    /// Only what belongs to this stakeholder (an employee).
    SelfService { stakeholder_id: Uuid },
    /// A platform-wide method with no company (dead letters).
    Platform,
}

/// A call that passed authentication, the method policy, the company check
/// and the rate limit.
#[derive(Debug, Clone)]
pub struct AuthorizedCall {
    pub caller: Arc<Caller>,
    /// The full gRPC method, e.g. `/qapmap.equity.v1.EquityService/GrantAward`.
    pub method: String,
    /// The request's `company_id`, when it named a valid one.
    pub company_id: Option<Uuid>,
    pub access: Access,
}

impl AuthorizedCall {
    /// The stakeholder the call is confined to, for employees.
    pub fn self_service(&self) -> Option<Uuid> {
        match self.access {
            Access::SelfService { stakeholder_id } => Some(stakeholder_id),
            _ => None,
        }
    }

    /// NOT_FOUND unless a self-service call concerns its own stakeholder.
    /// Staff calls always pass.
    pub fn require_own(
        &self,
        resource: &'static str,
        id: impl fmt::Display,
        owner: Uuid,
    ) -> Result<(), ApiError> {
        match self.self_service() {
            Some(own) if own != owner => Err(ApiError::not_found(resource, id.to_string())),
            _ => Ok(()),
        }
    }

    /// A call made by the system itself (saga steps the orchestrator drives,
    /// relays), named for the audit trail.
    pub fn system(subject: &str, company_id: Option<Uuid>) -> Self {
        Self {
            caller: Arc::new(Caller {
                subject: subject.to_owned(),
                companies: Companies::All,
                roles: BTreeSet::new(),
                stakeholders: BTreeMap::new(),
                scopes: BTreeSet::new(),
            }),
            method: String::new(),
            company_id,
            access: Access::Company,
        }
    }
}

/// The authorized call of a request, placed there by the auth layer.
/// INTERNAL when missing: a handler served without the layer is a bug, and
/// failing closed is the only safe answer.
pub fn authorized<T>(request: &tonic::Request<T>) -> Result<AuthorizedCall, tonic::Status> {
    request
        .extensions()
        .get::<AuthorizedCall>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a request reached a handler without passing the auth layer");
            tonic::Status::internal("internal error")
        })
}

tokio::task_local! {
    static CURRENT_CALL: AuthorizedCall;
}

/// Runs `future` with `call` as the current call (see [`current_call`]).
pub async fn with_call<F: std::future::Future>(call: AuthorizedCall, future: F) -> F::Output {
    CURRENT_CALL.scope(call, future).await
}

/// The call being served on this task, if any.
pub fn current_call() -> Option<AuthorizedCall> {
    CURRENT_CALL.try_with(Clone::clone).ok()
}
