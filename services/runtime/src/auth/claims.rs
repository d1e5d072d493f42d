//! The JWT claims QapMap reads, and their conversion to a [`Caller`].
//!
//! ```json
//! { "sub": "user-42", "exp": 1790000000, "iss": "...", "aud": "qapmap",
//!   "companies": ["<company uuid>"] | ["*"],
//!   "roles": ["admin" | "operator" | "employee" | "partner"],
//!   "stakeholders": { "<company uuid>": "<own stakeholder uuid>" },
//!   "scope": "equity:read ledger:read" }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Caller, Companies, Role};

/// Longest subject accepted; it lands in audit rows and saga commands.
pub const MAX_SUBJECT_LENGTH: usize = 256;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default)]
    pub companies: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stakeholders: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl Claims {
    /// The caller these claims describe; a malformed claim refuses the token.
    pub fn into_caller(self) -> Result<Caller, String> {
        if self.sub.is_empty() || self.sub.len() > MAX_SUBJECT_LENGTH {
            return Err("the token's sub must be 1-256 characters".to_owned());
        }
        let companies = if self.companies.iter().any(|company| company == "*") {
            Companies::All
        } else {
            let listed = self
                .companies
                .iter()
                .map(|company| {
                    Uuid::parse_str(company)
                        .map_err(|_| format!("company {company:?} is not a UUID"))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            Companies::Listed(listed)
        };
        let roles = self
            .roles
            .iter()
            .map(|role| role.parse::<Role>())
            .collect::<Result<BTreeSet<_>, _>>()?;
        if roles.is_empty() {
            return Err("the token names no role".to_owned());
        }
        let stakeholders = self
            .stakeholders
            .iter()
            .map(|(company, stakeholder)| {
                let company = Uuid::parse_str(company)
                    .map_err(|_| format!("stakeholders key {company:?} is not a UUID"))?;
                let stakeholder = Uuid::parse_str(stakeholder)
                    .map_err(|_| format!("stakeholder {stakeholder:?} is not a UUID"))?;
                Ok((company, stakeholder))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let scopes = self.scope.split_whitespace().map(str::to_owned).collect();
        Ok(Caller {
            subject: self.sub,
            companies,
            roles,
            stakeholders,
            scopes,
        })
    }
}
