//! The sandbox gateway: the default in the demo and tests. It moves no real
//! money and can be told to misbehave, so tests can make a payment fail on
//! purpose:
//! - for every payment, by configuration ([`SandboxSettings`], from
//!   `QAPMAP_SANDBOX_DECLINE_ALL`, `QAPMAP_SANDBOX_DELAY_MS`,
//!   `QAPMAP_SANDBOX_TRANSIENT_FAILURES`);
//! - per stakeholder, by its payment instruction: `sandbox:decline`,
//!   `sandbox:fail-transient:<n>` (the first n calls per key fail),
//!   `sandbox:delay-ms:<ms>`. Anything else is approved.
//!
//! It counts its calls, per idempotency key and in total, so tests can prove
//! a payment reached the gateway once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use super::gateway::{GatewayOutcome, GatewayRequest, PaymentGateway};

/// Longest delay a directive may ask for: keeps a typo from hanging a test.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How the sandbox treats every payment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Decline every payment.
    pub decline_all: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Fail this many calls per idempotency key before answering normally.
    pub transient_failures: u32,
}

/// A sandbox setting that could not be read; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {variable}={value:?} is invalid: {reason}")]
pub struct SandboxSettingsError {
    pub variable: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl SandboxSettings {
    /// Reads the `QAPMAP_SANDBOX_*` variables of the process.
    pub fn from_env() -> Result<Self, SandboxSettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (variable name to value).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SandboxSettingsError> {
        let read = |variable: &'static str| lookup(variable).filter(|v| !v.trim().is_empty());
        let decline_all = match read("QAPMAP_SANDBOX_DECLINE_ALL").as_deref().map(str::trim) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(invalid(
                    "QAPMAP_SANDBOX_DECLINE_ALL",
                    other,
                    "must be true or false",
                ));
            }
        };
        let number = |variable: &'static str| -> Result<u64, SandboxSettingsError> {
            read(variable).map_or(Ok(0), |value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(variable, &value, "must be a whole number"))
            })
        };
        let delay = Duration::from_millis(number("QAPMAP_SANDBOX_DELAY_MS")?).min(MAX_DELAY);
        let transient_failures = u32::try_from(number("QAPMAP_SANDBOX_TRANSIENT_FAILURES")?)
            .map_err(|_| invalid("QAPMAP_SANDBOX_TRANSIENT_FAILURES", "", "is too large"))?;
        Ok(Self {
            decline_all,
            delay,
            transient_failures,
        })
    }
}

fn invalid(variable: &'static str, value: &str, reason: &'static str) -> SandboxSettingsError {
    SandboxSettingsError {
        variable,
        value: value.to_owned(),
        reason,
    }
}

/// A per-stakeholder directive read from its payment instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Approve,
    Decline,
    FailTransient(u32),
    Delay(Duration),
}

impl Directive {
    fn parse(payment_instruction_ref: &str) -> Self {
        let Some(directive) = payment_instruction_ref.strip_prefix("sandbox:") else {
            return Self::Approve;
        };
        if directive == "decline" {
            return Self::Decline;
        }
        if let Some(count) = directive.strip_prefix("fail-transient:") {
            return count.parse().map_or(Self::Approve, Self::FailTransient);
        }
        if let Some(millis) = directive.strip_prefix("delay-ms:") {
            return millis.parse().map_or(Self::Approve, |ms| {
                Self::Delay(Duration::from_millis(ms).min(MAX_DELAY))
            });
        }
        Self::Approve
    }
}

/// The sandbox gateway. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct SandboxGateway {
    settings: SandboxSettings,
    calls_by_key: Mutex<HashMap<String, u32>>,
    total_calls: AtomicU64,
}

impl SandboxGateway {
    pub fn new(settings: SandboxSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// How many times a payment with this idempotency key reached the gateway.
    pub fn calls_for(&self, idempotency_key: &str) -> u32 {
        self.lock_calls().get(idempotency_key).copied().unwrap_or(0)
    }

    /// How many calls reached the gateway in all.
    pub fn total_calls(&self) -> u64 {
        self.total_calls.load(Ordering::SeqCst)
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while counting cannot leave the map half-updated.
        self.calls_by_key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the call and returns its number for this key (1 for the first).
    fn count_call(&self, idempotency_key: &str) -> u32 {
        self.total_calls.fetch_add(1, Ordering::SeqCst);
        let mut calls = self.lock_calls();
        let count = calls.entry(idempotency_key.to_owned()).or_insert(0);
        *count += 1;
        *count
    }

    fn decide(&self, directive: Directive, call_number: u32) -> GatewayOutcome {
        if self.settings.decline_all || directive == Directive::Decline {
            return GatewayOutcome::Declined {
                reason: "declined by the sandbox gateway".to_owned(),
            };
        }
        let failures = match directive {
            Directive::FailTransient(count) => count,
            _ => self.settings.transient_failures,
        };
        if call_number <= failures {
            return GatewayOutcome::TransientFailure {
                reason: format!("sandbox transient failure {call_number} of {failures}"),
            };
        }
        GatewayOutcome::Approved {
            gateway_reference: format!("sandbox-{}", uuid::Uuid::now_v7().simple()),
        }
    }
}

impl PaymentGateway for SandboxGateway {
    fn execute(&self, request: GatewayRequest) -> BoxFuture<'_, GatewayOutcome> {
        Box::pin(async move {
            let call_number = self.count_call(&request.idempotency_key);
            let directive = Directive::parse(&request.payment_instruction_ref);
            let delay = match directive {
                Directive::Delay(delay) => delay.max(self.settings.delay),
                _ => self.settings.delay,
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.decide(directive, call_number)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::model::{Direction, PaymentAmount};
    use qapmap_runtime::decimal::{Currency, Money};

    fn request(key: &str, instruction: &str) -> GatewayRequest {
        let money = Money {
            amount: rust_decimal::Decimal::from(10),
            currency: Currency::parse("currency", "EUR").expect("EUR"),
        };
        GatewayRequest {
            idempotency_key: key.to_owned(),
            direction: Direction::Collection,
            amount: PaymentAmount::new(money).expect("positive"),
            payment_instruction_ref: instruction.to_owned(),
        }
    }

    #[test]
    fn settings_come_from_the_sandbox_variables() {
        let settings = SandboxSettings::from_lookup(|name| match name {
            "QAPMAP_SANDBOX_DECLINE_ALL" => Some("true".to_owned()),
            "QAPMAP_SANDBOX_DELAY_MS" => Some("250".to_owned()),
            "QAPMAP_SANDBOX_TRANSIENT_FAILURES" => Some("2".to_owned()),
            _ => None,
        })
        .expect("valid");
        assert!(settings.decline_all);
        assert_eq!(settings.delay, Duration::from_millis(250));
        assert_eq!(settings.transient_failures, 2);
        assert_eq!(
            SandboxSettings::from_lookup(|_| None).expect("ok"),
            SandboxSettings::default()
        );
    }

    #[test]
    fn a_malformed_sandbox_variable_is_named() {
        let error = SandboxSettings::from_lookup(|name| {
            (name == "QAPMAP_SANDBOX_DELAY_MS").then(|| "soon".to_owned())
        })
        .expect_err("refused");
        assert!(error.to_string().contains("QAPMAP_SANDBOX_DELAY_MS"));
    }

    #[tokio::test]
    async fn decline_all_declines_every_payment() {
        let gateway = SandboxGateway::new(SandboxSettings {
            decline_all: true,
            ..SandboxSettings::default()
        });
        let outcome = gateway.execute(request("k", "bank:123")).await;
        assert!(matches!(outcome, GatewayOutcome::Declined { .. }));
    }

    #[tokio::test]
    async fn fail_transient_fails_the_first_calls_per_key_then_approves() {
        let gateway = SandboxGateway::default();
        for _ in 0..2 {
            let outcome = gateway
                .execute(request("k", "sandbox:fail-transient:2"))
                .await;
            assert!(matches!(outcome, GatewayOutcome::TransientFailure { .. }));
        }
        let outcome = gateway
            .execute(request("k", "sandbox:fail-transient:2"))
            .await;
        assert!(matches!(outcome, GatewayOutcome::Approved { .. }));
        assert_eq!(gateway.calls_for("k"), 3);
        assert_eq!(gateway.calls_for("other"), 0);
        assert_eq!(gateway.total_calls(), 3);
    }

    #[test]
    fn directives_are_read_from_the_payment_instruction() {
        assert_eq!(Directive::parse("sandbox:decline"), Directive::Decline);
        assert_eq!(
            Directive::parse("sandbox:fail-transient:3"),
            Directive::FailTransient(3)
        );
        assert_eq!(
            Directive::parse("sandbox:delay-ms:500"),
            Directive::Delay(Duration::from_millis(500))
        );
        assert_eq!(Directive::parse("iban:DE001"), Directive::Approve);
    }
}
