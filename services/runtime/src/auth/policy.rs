//! Which roles may call which method. Default deny: a method this table
//! does not know is refused to everyone.
//!
//! - Reads (`Get*`, `List*`): admin, operator, and partners holding the
//!   service's `<area>:read` scope.
//! - Writes: admin, and partners holding `<area>:write`.
//! - Saga retry/abort, and settling a payment whose outcome is unknown
//!   (`ResolvePayment`): admin and operator. Dead letters: operator only
//!   (they span companies).
//! - Employees: only the self-service methods listed in [`SELF_SERVICE`],
//!   confined to their own stakeholder by the handler.

use super::{Caller, Role};

/// Methods an employee may call about themselves.
pub const SELF_SERVICE: &[&str] = &[
    "/qapmap.shareholder.v1.ShareholderService/GetStakeholder",
    "/qapmap.equity.v1.EquityService/GetAward",
    "/qapmap.equity.v1.EquityService/ListAwards",
    "/qapmap.ledger.v1.LedgerService/GetBalance",
    "/qapmap.ledger.v1.LedgerService/GetStatement",
    "/qapmap.saga.v1.SagaService/StartExercise",
    "/qapmap.saga.v1.SagaService/GetSaga",
    "/qapmap.saga.v1.SagaService/ListSagas",
];

/// What a method requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Roles with full access (within the caller's companies).
    pub roles: &'static [Role],
    /// The scope a partner needs, e.g. `equity:read`.
    pub partner_scope: Option<String>,
    /// Employees may call it about themselves.
    pub self_service: bool,
    /// The method names no company (platform operations).
    pub platform: bool,
}

/// The decision for one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Full access in the caller's companies.
    Company,
    /// Employee access to their own records only.
    SelfService,
    Denied,
}

impl MethodPolicy {
    pub fn decide(&self, caller: &Caller) -> Decision {
        if self.roles.iter().any(|role| caller.has_role(*role)) {
            return Decision::Company;
        }
        if caller.has_role(Role::Partner)
            && let Some(scope) = &self.partner_scope
            && caller.scopes.contains(scope)
        {
            return Decision::Company;
        }
        if self.self_service && caller.has_role(Role::Employee) {
            return Decision::SelfService;
        }
        Decision::Denied
    }
}

/// The policy of a full gRPC method path, or `None` for an unknown method.
pub fn for_method(path: &str) -> Option<MethodPolicy> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let self_service = SELF_SERVICE.contains(&path);
    let is_read = method.starts_with("Get") || method.starts_with("List");
    let area = match service {
        "qapmap.equity.v1.EquityService" => "equity",
        "qapmap.shareholder.v1.ShareholderService" => "shareholder",
        "qapmap.ledger.v1.LedgerService" => "ledger",
        "qapmap.saga.v1.SagaService" => "sagas",
        "qapmap.ops.v1.AuditService" => {
            return Some(MethodPolicy {
                roles: &[Role::Admin, Role::Operator],
                partner_scope: None,
                self_service: false,
                platform: false,
            });
        }
        "qapmap.ops.v1.DeadLetterService" => {
            return Some(MethodPolicy {
                roles: &[Role::Operator],
                partner_scope: None,
                self_service: false,
                platform: true,
            });
        }
        _ => return None,
    };
    // Settling an unknown payment outcome is reconciliation, like a saga
    // retry: operators may, partners may not declare money moved.
    if area == "shareholder" && method == "ResolvePayment" {
        return Some(MethodPolicy {
            roles: &[Role::Admin, Role::Operator],
            partner_scope: None,
            self_service: false,
            platform: false,
        });
    }
    let operations = area == "sagas" && matches!(method, "RetrySaga" | "AbortSaga");
    let roles: &'static [Role] = if is_read || operations {
        &[Role::Admin, Role::Operator]
    } else {
        &[Role::Admin]
    };
    let access = if is_read { "read" } else { "write" };
    Some(MethodPolicy {
        roles,
        partner_scope: Some(format!("{area}:{access}")),
        self_service,
        platform: false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::auth::Companies;

    fn caller(roles: &[Role], scopes: &[&str]) -> Caller {
        Caller {
            subject: "someone".to_owned(),
            companies: Companies::All,
            roles: roles.iter().copied().collect(),
            stakeholders: BTreeMap::new(),
            scopes: scopes
                .iter()
                .map(|scope| (*scope).to_owned())
                .collect::<BTreeSet<_>>(),
        }
    }

    fn decide(path: &str, roles: &[Role], scopes: &[&str]) -> Decision {
        for_method(path)
            .expect("known method")
            .decide(&caller(roles, scopes))
    }

    #[test]
    fn every_method_in_the_api_has_a_policy() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(qapmap_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(for_method(&path).is_some(), "{path} has no policy");
                    seen += 1;
                }
            }
        }
        assert!(seen > 50, "only {seen} methods found");
    }

    #[test]
    fn only_admins_and_operators_settle_an_unknown_payment_outcome() {
        let resolve = "/qapmap.shareholder.v1.ShareholderService/ResolvePayment";
        assert_eq!(decide(resolve, &[Role::Admin], &[]), Decision::Company);
        assert_eq!(decide(resolve, &[Role::Operator], &[]), Decision::Company);
        assert_eq!(
            decide(resolve, &[Role::Partner], &["shareholder:write"]),
            Decision::Denied
        );
        assert_eq!(decide(resolve, &[Role::Employee], &[]), Decision::Denied);
    }

    #[test]
    fn unknown_methods_are_denied() {
        assert_eq!(for_method("/qapmap.secret.v1.Vault/Open"), None);
        assert_eq!(for_method("nonsense"), None);
    }

    #[test]
    fn employees_reach_only_self_service_methods() {
        let grant = "/qapmap.equity.v1.EquityService/GrantAward";
        let own_award = "/qapmap.equity.v1.EquityService/GetAward";
        let cap_table = "/qapmap.ledger.v1.LedgerService/GetCapTable";
        assert_eq!(decide(grant, &[Role::Employee], &[]), Decision::Denied);
        assert_eq!(decide(cap_table, &[Role::Employee], &[]), Decision::Denied);
        assert_eq!(
            decide(own_award, &[Role::Employee], &[]),
            Decision::SelfService
        );
        assert_eq!(
            decide(own_award, &[Role::Employee, Role::Admin], &[]),
            Decision::Company
        );
    }

    #[test]
    fn partners_need_the_matching_scope() {
        let cap_table = "/qapmap.ledger.v1.LedgerService/GetCapTable";
        let issue = "/qapmap.ledger.v1.LedgerService/IssueShares";
        assert_eq!(decide(cap_table, &[Role::Partner], &[]), Decision::Denied);
        assert_eq!(
            decide(cap_table, &[Role::Partner], &["equity:read"]),
            Decision::Denied
        );
        assert_eq!(
            decide(cap_table, &[Role::Partner], &["ledger:read"]),
            Decision::Company
        );
        assert_eq!(
            decide(issue, &[Role::Partner], &["ledger:read"]),
            Decision::Denied
        );
        assert_eq!(
            decide(issue, &[Role::Partner], &["ledger:write"]),
            Decision::Company
        );
    }

    #[test]
    fn operators_read_and_run_operations_but_do_not_write() {
        let issue = "/qapmap.ledger.v1.LedgerService/IssueShares";
        let abort = "/qapmap.saga.v1.SagaService/AbortSaga";
        let replay = "/qapmap.ops.v1.DeadLetterService/ReplayDeadLetter";
        assert_eq!(decide(issue, &[Role::Operator], &[]), Decision::Denied);
        assert_eq!(decide(abort, &[Role::Operator], &[]), Decision::Company);
        assert_eq!(decide(replay, &[Role::Operator], &[]), Decision::Company);
        assert_eq!(decide(replay, &[Role::Admin], &[]), Decision::Denied);
    }
}
