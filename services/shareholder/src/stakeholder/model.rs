//! Stakeholder domain types. Enum values are spelled as OCF spells them
//! (`as_ocf` / `from_ocf`), which is also how Postgres stores them. Newtypes
//! parse their input once, so a `Stakeholder` never holds a bad value.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// A value that failed to parse; the edge adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub &'static str);

/// Declares a plain enum with its OCF spelling both ways.
macro_rules! ocf_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $ocf:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_ocf(self) -> &'static str {
                match self { $(Self::$variant => $ocf),+ }
            }

            pub fn from_ocf(text: &str) -> Option<Self> {
                match text { $($ocf => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

ocf_enum!(
    /// OCF StakeholderType.
    StakeholderType { Individual => "INDIVIDUAL", Institution => "INSTITUTION" }
);

ocf_enum!(
    /// OCF StakeholderRelationshipType.
    Relationship {
        Advisor => "ADVISOR",
        BoardMember => "BOARD_MEMBER",
        Consultant => "CONSULTANT",
        Employee => "EMPLOYEE",
        ExAdvisor => "EX_ADVISOR",
        ExConsultant => "EX_CONSULTANT",
        ExEmployee => "EX_EMPLOYEE",
        Executive => "EXECUTIVE",
        Founder => "FOUNDER",
        Investor => "INVESTOR",
        NonUsEmployee => "NON_US_EMPLOYEE",
        Officer => "OFFICER",
        Other => "OTHER",
    }
);

ocf_enum!(
    /// OCF TerminationWindowType: why a stakeholder left.
    TerminationReason {
        VoluntaryOther => "VOLUNTARY_OTHER",
        VoluntaryGoodCause => "VOLUNTARY_GOOD_CAUSE",
        VoluntaryRetirement => "VOLUNTARY_RETIREMENT",
        InvoluntaryOther => "INVOLUNTARY_OTHER",
        InvoluntaryDeath => "INVOLUNTARY_DEATH",
        InvoluntaryDisability => "INVOLUNTARY_DISABILITY",
        InvoluntaryWithCause => "INVOLUNTARY_WITH_CAUSE",
    }
);

ocf_enum!(
    /// The statuses a stakeholder can be moved to without a termination.
    ActiveStatus { Active => "ACTIVE", LeaveOfAbsence => "LEAVE_OF_ABSENCE" }
);

/// When and why a stakeholder left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    pub date: NaiveDate,
    pub reason: TerminationReason,
}

/// OCF StakeholderStatusType. A terminated status always carries its date,
/// so "terminated without a date" cannot be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Current(ActiveStatus),
    Terminated(Termination),
}

const TERMINATION_PREFIX: &str = "TERMINATION_";

impl Status {
    /// The OCF status string, e.g. `TERMINATION_VOLUNTARY_OTHER`.
    pub fn as_ocf(&self) -> String {
        match self {
            Self::Current(status) => status.as_ocf().to_owned(),
            Self::Terminated(termination) => {
                format!("{TERMINATION_PREFIX}{}", termination.reason.as_ocf())
            }
        }
    }

    /// Rebuilds a status from its stored parts; `None` if they disagree.
    pub fn from_parts(status: &str, termination_date: Option<NaiveDate>) -> Option<Self> {
        match (status.strip_prefix(TERMINATION_PREFIX), termination_date) {
            (Some(reason), Some(date)) => Some(Self::Terminated(Termination {
                date,
                reason: TerminationReason::from_ocf(reason)?,
            })),
            (None, None) => ActiveStatus::from_ocf(status).map(Self::Current),
            _ => None,
        }
    }

    pub fn termination(&self) -> Option<Termination> {
        match self {
            Self::Terminated(termination) => Some(*termination),
            Self::Current(_) => None,
        }
    }
}

/// A set of relationships: sorted, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relationships(Vec<Relationship>);

impl Relationships {
    pub fn new(mut relationships: Vec<Relationship>) -> Self {
        relationships.sort();
        relationships.dedup();
        Self(relationships)
    }

    pub fn as_slice(&self) -> &[Relationship] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The OCF spellings, as stored in Postgres.
    pub fn to_ocf(&self) -> Vec<String> {
        self.0.iter().map(|r| r.as_ocf().to_owned()).collect()
    }
}

/// Longest legal name accepted, in characters.
const MAX_NAME_CHARS: usize = 200;
/// RFC 5321's limit on a forward path.
const MAX_EMAIL_CHARS: usize = 254;
/// Longest gateway reference accepted.
const MAX_PAYMENT_INSTRUCTION_CHARS: usize = 200;

/// A legal name: trimmed, 1-200 characters, no control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(InvalidValue("is required"));
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidValue("is longer than 200 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidValue("contains control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Personal data: `Debug` never prints it, so it cannot leak into logs.
impl std::fmt::Debug for PersonName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PersonName(<redacted>)")
    }
}

/// An e-mail address: one `@` with text on both sides, no spaces.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let valid_shape = text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
        if !valid_shape || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidValue("is not an e-mail address"));
        }
        if text.chars().count() > MAX_EMAIL_CHARS {
            return Err(InvalidValue("is longer than 254 characters"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Personal data: `Debug` never prints it.
impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// An opaque reference to the holder's payment instructions at the gateway
/// (the sandbox reads directives such as `sandbox:decline` from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInstructionRef(String);

impl PaymentInstructionRef {
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() || text.len() > MAX_PAYMENT_INSTRUCTION_CHARS {
            return Err(InvalidValue("must be 1-200 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidValue("must be printable ASCII without spaces"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stakeholder as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stakeholder {
    pub id: Uuid,
    pub company_id: Uuid,
    pub stakeholder_type: StakeholderType,
    pub name: PersonName,
    pub email: Option<Email>,
    pub relationships: Relationships,
    pub status: Status,
    pub employment_start_date: Option<NaiveDate>,
    pub payment_instruction_ref: Option<PaymentInstructionRef>,
    /// 1 when created, plus one per change.
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ocf_spelling_round_trips() {
        for relationship in Relationship::ALL {
            assert_eq!(
                Relationship::from_ocf(relationship.as_ocf()),
                Some(*relationship)
            );
        }
        let date = NaiveDate::from_ymd_opt(2024, 3, 1).expect("date");
        for reason in TerminationReason::ALL {
            let status = Status::Terminated(Termination {
                date,
                reason: *reason,
            });
            assert_eq!(
                Status::from_parts(&status.as_ocf(), Some(date)),
                Some(status)
            );
        }
    }

    #[test]
    fn a_terminated_status_without_a_date_is_refused() {
        assert_eq!(
            Status::from_parts("TERMINATION_VOLUNTARY_OTHER", None),
            None
        );
        let date = NaiveDate::from_ymd_opt(2024, 3, 1);
        assert_eq!(Status::from_parts("ACTIVE", date), None);
    }

    #[test]
    fn relationships_are_sorted_and_deduplicated() {
        let set = Relationships::new(vec![
            Relationship::Investor,
            Relationship::Founder,
            Relationship::Investor,
        ]);
        assert_eq!(
            set.as_slice(),
            [Relationship::Founder, Relationship::Investor]
        );
    }

    #[test]
    fn names_are_trimmed_and_blank_names_refused() {
        assert_eq!(PersonName::parse("  Ada  ").expect("ok").as_str(), "Ada");
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn personal_data_never_appears_in_debug_output() {
        let name = PersonName::parse("Ada Lovelace").expect("ok");
        let email = Email::parse("ada@example.com").expect("ok");
        assert!(!format!("{name:?}{email:?}").contains("Ada"));
        assert!(!format!("{email:?}").contains("example"));
    }

    #[test]
    fn malformed_emails_are_refused() {
        for text in [
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
        ] {
            assert!(Email::parse(text).is_err(), "{text}");
        }
    }
}
