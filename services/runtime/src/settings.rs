//! Typed settings read from `QAPMAP_*` environment variables.
//!
//! Every process loads them once at start ([`Settings::from_env`]); a missing
//! or malformed value stops it with a message naming the variable. Reading
//! through a lookup function (not `std::env` directly) keeps this testable.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// The four QapMap processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Equity,
    Shareholder,
    Ledger,
    Orchestrator,
}

impl ServiceName {
    /// The name used in logs, traces, subjects and database names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equity => "equity",
            Self::Shareholder => "shareholder",
            Self::Ledger => "ledger",
            Self::Orchestrator => "orchestrator",
        }
    }

    /// The gRPC port the process listens on unless `QAPMAP_GRPC_PORT` says otherwise.
    pub fn default_grpc_port(self) -> u16 {
        match self {
            Self::Equity => 50051,
            Self::Shareholder => 50052,
            Self::Ledger => 50053,
            Self::Orchestrator => 50054,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A setting that could not be used; names the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {variable} is required but not set")]
    Missing { variable: String },
    #[error("environment variable {variable}={value:?} is invalid: {reason}")]
    Invalid {
        variable: String,
        value: String,
        reason: String,
    },
}

/// Everything a process needs to start. Secrets (the database URL may hold a
/// password) are never printed by `Debug`.
#[derive(Clone)]
pub struct Settings {
    pub service: ServiceName,
    /// Address to bind the gRPC server to.
    pub grpc_host: IpAddr,
    /// Port to bind; 0 lets the OS choose (tests).
    pub grpc_port: u16,
    /// Postgres URL of this service's own database.
    pub database_url: String,
    /// Pool size. Small on purpose: on a 2-core box 8–16 connections in total
    /// did best, and 64 halved throughput (DESIGN.md, Performance).
    pub database_max_connections: u32,
    pub nats_url: String,
    /// Root of every subject and prefix of every stream name (`qapmap` by
    /// default); tests use a unique one so runs never see each other's messages.
    pub nats_namespace: String,
    pub redis_url: String,
    /// Copies of every JetStream stream: 1 on a single server, 3 in production.
    pub nats_stream_replicas: usize,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often the health check probes Postgres and NATS.
    pub health_probe_interval: Duration,
    /// Port of the Prometheus `/metrics` endpoint; `None` leaves it off.
    pub metrics_port: Option<u16>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("grpc_host", &self.grpc_host)
            .field("grpc_port", &self.grpc_port)
            .field("database_url", &"<redacted>")
            .field("database_max_connections", &self.database_max_connections)
            .field("nats_url", &self.nats_url)
            .field("nats_namespace", &self.nats_namespace)
            .field("redis_url", &"<redacted>")
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("health_probe_interval", &self.health_probe_interval)
            .field("metrics_port", &self.metrics_port)
            .finish()
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env(service: ServiceName) -> Result<Self, SettingsError> {
        Self::from_lookup(service, |name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, which maps a variable name to its value.
    pub fn from_lookup(
        service: ServiceName,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let vars = Lookup(&lookup);
        let settings = Self {
            service,
            grpc_host: vars.parsed_or("QAPMAP_GRPC_HOST", IpAddr::from([0, 0, 0, 0]))?,
            grpc_port: vars.parsed_or("QAPMAP_GRPC_PORT", service.default_grpc_port())?,
            database_url: vars.required("QAPMAP_DATABASE_URL")?,
            database_max_connections: vars.parsed_or("QAPMAP_DATABASE_MAX_CONNECTIONS", 4)?,
            nats_url: vars.string_or("QAPMAP_NATS_URL", "nats://127.0.0.1:4222"),
            nats_namespace: vars.string_or("QAPMAP_NATS_NAMESPACE", "qapmap"),
            redis_url: vars.string_or("QAPMAP_REDIS_URL", "redis://127.0.0.1:6379"),
            nats_stream_replicas: vars.parsed_or("QAPMAP_NATS_STREAM_REPLICAS", 1)?,
            shutdown_grace: Duration::from_millis(
                vars.parsed_or("QAPMAP_SHUTDOWN_GRACE_MS", 10_000)?,
            ),
            health_probe_interval: Duration::from_millis(
                vars.parsed_or("QAPMAP_HEALTH_PROBE_INTERVAL_MS", 1_000)?,
            ),
            metrics_port: vars.optional_parsed("QAPMAP_METRICS_PORT")?,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |variable: &str, value: String, reason: &str| SettingsError::Invalid {
            variable: variable.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "QAPMAP_DATABASE_URL",
                "<redacted>".to_owned(),
                "must start with postgres:// or postgresql://",
            ));
        }
        if !(1..=64).contains(&self.database_max_connections) {
            return Err(invalid(
                "QAPMAP_DATABASE_MAX_CONNECTIONS",
                self.database_max_connections.to_string(),
                "must be between 1 and 64",
            ));
        }
        let namespace_ok = !self.nats_namespace.is_empty()
            && self.nats_namespace.len() <= 64
            && self
                .nats_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !namespace_ok {
            return Err(invalid(
                "QAPMAP_NATS_NAMESPACE",
                self.nats_namespace.clone(),
                "must be 1-64 characters of letters, digits, '_' or '-'",
            ));
        }
        if ![1, 3, 5].contains(&self.nats_stream_replicas) {
            return Err(invalid(
                "QAPMAP_NATS_STREAM_REPLICAS",
                self.nats_stream_replicas.to_string(),
                "must be 1, 3 or 5",
            ));
        }
        if self.health_probe_interval.is_zero() {
            return Err(invalid(
                "QAPMAP_HEALTH_PROBE_INTERVAL_MS",
                "0".to_owned(),
                "must be above 0",
            ));
        }
        Ok(())
    }
}

/// Typed access to environment-like variables.
struct Lookup<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Lookup<'_, F> {
    fn get(&self, variable: &str) -> Option<String> {
        (self.0)(variable).filter(|value| !value.trim().is_empty())
    }

    fn required(&self, variable: &str) -> Result<String, SettingsError> {
        self.get(variable).ok_or_else(|| SettingsError::Missing {
            variable: variable.to_owned(),
        })
    }

    fn string_or(&self, variable: &str, default: &str) -> String {
        self.get(variable).unwrap_or_else(|| default.to_owned())
    }

    fn optional_parsed<T>(&self, variable: &str) -> Result<Option<T>, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(value) = self.get(variable) else {
            return Ok(None);
        };
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|error: T::Err| SettingsError::Invalid {
                variable: variable.to_owned(),
                reason: error.to_string(),
                value,
            })
    }

    fn parsed_or<T>(&self, variable: &str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(variable) {
            None => Ok(default),
            Some(value) => value
                .trim()
                .parse()
                .map_err(|error: T::Err| SettingsError::Invalid {
                    variable: variable.to_owned(),
                    reason: error.to_string(),
                    value,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(ServiceName::Ledger, |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_database_url_is_set() {
        let settings = load(&[("QAPMAP_DATABASE_URL", "postgres://localhost/ledger")])
            .expect("valid settings");
        assert_eq!(settings.grpc_port, 50053);
        assert_eq!(settings.nats_namespace, "qapmap");
        assert_eq!(settings.database_max_connections, 4);
    }

    #[test]
    fn a_missing_database_url_names_the_variable() {
        let error = load(&[]).expect_err("must fail").to_string();
        assert!(error.contains("QAPMAP_DATABASE_URL"), "{error}");
    }

    #[test]
    fn a_malformed_port_names_the_variable_and_value() {
        let error = load(&[
            ("QAPMAP_DATABASE_URL", "postgres://localhost/ledger"),
            ("QAPMAP_GRPC_PORT", "seventy"),
        ])
        .expect_err("must fail")
        .to_string();
        assert!(error.contains("QAPMAP_GRPC_PORT"), "{error}");
        assert!(error.contains("seventy"), "{error}");
    }

    #[test]
    fn a_namespace_with_subject_wildcards_is_refused() {
        let error = load(&[
            ("QAPMAP_DATABASE_URL", "postgres://localhost/ledger"),
            ("QAPMAP_NATS_NAMESPACE", "a.>"),
        ])
        .expect_err("must fail")
        .to_string();
        assert!(error.contains("QAPMAP_NATS_NAMESPACE"), "{error}");
    }

    #[test]
    fn debug_output_never_shows_the_database_url() {
        let settings = load(&[(
            "QAPMAP_DATABASE_URL",
            "postgres://u:secret@localhost/ledger",
        )])
        .expect("valid settings");
        assert!(!format!("{settings:?}").contains("secret"));
    }
}
