//! Typed settings read from `QAPMAP_*` environment variables.
//!
//! Every process loads them once at start ([`Settings::from_env`]); a missing
//! or malformed value stops it with a message naming the variable. Reading
//! through a lookup function (not `std::env` directly) keeps this testable.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
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

/// NATS authentication, from the first variable set of:
/// `QAPMAP_NATS_CREDENTIALS_FILE` (a `.creds` file: JWT + NKey seed, as NATS
/// accounts issue them), `QAPMAP_NATS_NKEY_SEED`, `QAPMAP_NATS_TOKEN`,
/// `QAPMAP_NATS_USER` with `QAPMAP_NATS_PASSWORD`. None: no authentication
/// (a local server).
#[derive(Clone, Default)]
pub enum NatsCredentials {
    #[default]
    None,
    CredentialsFile(PathBuf),
    NkeySeed(String),
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({})", path.display()),
            Self::NkeySeed(_) => f.write_str("NkeySeed(<redacted>)"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, <redacted>)"),
        }
    }
}

fn nats_credentials<F: Fn(&str) -> Option<String>>(
    vars: &Lookup<'_, F>,
) -> Result<NatsCredentials, SettingsError> {
    if let Some(path) = vars.get("QAPMAP_NATS_CREDENTIALS_FILE") {
        return Ok(NatsCredentials::CredentialsFile(PathBuf::from(path)));
    }
    if let Some(seed) = vars.get("QAPMAP_NATS_NKEY_SEED") {
        return Ok(NatsCredentials::NkeySeed(seed));
    }
    if let Some(token) = vars.get("QAPMAP_NATS_TOKEN") {
        return Ok(NatsCredentials::Token(token));
    }
    match (
        vars.get("QAPMAP_NATS_USER"),
        vars.get("QAPMAP_NATS_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Ok(NatsCredentials::UserPassword { user, password }),
        (Some(_), None) => Err(SettingsError::Missing {
            variable: "QAPMAP_NATS_PASSWORD".to_owned(),
        }),
        (None, Some(_)) => Err(SettingsError::Missing {
            variable: "QAPMAP_NATS_USER".to_owned(),
        }),
        (None, None) => Ok(NatsCredentials::None),
    }
}

/// How callers are authenticated and limited (see `auth`).
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// `QAPMAP_JWT_JWKS_FILE`: the JWKS whose RS256/EdDSA keys sign tokens.
    pub jwks_file: Option<PathBuf>,
    /// `QAPMAP_JWT_HS256_SECRET`, honoured only with
    /// `QAPMAP_JWT_ALLOW_HS256=true`: a shared secret for local development.
    pub hs256_secret: Option<String>,
    /// `QAPMAP_JWT_ISSUER`: when set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// `QAPMAP_JWT_AUDIENCE`: when set, tokens must carry this `aud`.
    pub audience: Option<String>,
    pub rate_limits: RateLimitSettings,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwks_file", &self.jwks_file)
            .field("hs256_enabled", &self.hs256_secret.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("rate_limits", &self.rate_limits)
            .finish()
    }
}

/// Requests per second and burst, per token subject and per company, shared
/// by all replicas through Redis. A rate of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub subject_per_second: u32,
    pub subject_burst: u32,
    pub company_per_second: u32,
    pub company_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            subject_per_second: 200,
            subject_burst: 400,
            company_per_second: 1_000,
            company_burst: 2_000,
        }
    }
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
    /// How this process proves itself to NATS (see [`NatsCredentials`]).
    pub nats_credentials: NatsCredentials,
    pub redis_url: String,
    /// Copies of every JetStream stream: 1 on a single server, 3 in production.
    pub nats_stream_replicas: usize,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often the health check probes Postgres and NATS.
    pub health_probe_interval: Duration,
    /// Port of the Prometheus `/metrics` endpoint; `None` leaves it off.
    pub metrics_port: Option<u16>,
    pub auth: AuthSettings,
    /// Largest gRPC request accepted (`QAPMAP_MAX_REQUEST_BYTES`).
    pub max_request_bytes: usize,
    /// Deadline for a call that sets none (`QAPMAP_REQUEST_TIMEOUT_MS`);
    /// a client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
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
            .field("nats_credentials", &self.nats_credentials)
            .field("redis_url", &"<redacted>")
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("health_probe_interval", &self.health_probe_interval)
            .field("metrics_port", &self.metrics_port)
            .field("auth", &self.auth)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("request_timeout", &self.request_timeout)
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
            nats_credentials: nats_credentials(&vars)?,
            redis_url: vars.string_or("QAPMAP_REDIS_URL", "redis://127.0.0.1:6379"),
            nats_stream_replicas: vars.parsed_or("QAPMAP_NATS_STREAM_REPLICAS", 1)?,
            shutdown_grace: Duration::from_millis(
                vars.parsed_or("QAPMAP_SHUTDOWN_GRACE_MS", 10_000)?,
            ),
            health_probe_interval: Duration::from_millis(
                vars.parsed_or("QAPMAP_HEALTH_PROBE_INTERVAL_MS", 1_000)?,
            ),
            metrics_port: vars.optional_parsed("QAPMAP_METRICS_PORT")?,
            auth: auth_settings(&vars)?,
            max_request_bytes: vars.parsed_or("QAPMAP_MAX_REQUEST_BYTES", 256 * 1024)?,
            request_timeout: Duration::from_millis(
                vars.parsed_or("QAPMAP_REQUEST_TIMEOUT_MS", 10_000)?,
            ),
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
        if !(1024..=16 * 1024 * 1024).contains(&self.max_request_bytes) {
            return Err(invalid(
                "QAPMAP_MAX_REQUEST_BYTES",
                self.max_request_bytes.to_string(),
                "must be between 1024 and 16777216",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "QAPMAP_REQUEST_TIMEOUT_MS",
                "0".to_owned(),
                "must be above 0",
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

fn auth_settings<F: Fn(&str) -> Option<String>>(
    vars: &Lookup<'_, F>,
) -> Result<AuthSettings, SettingsError> {
    let allow_hs256: bool = vars.parsed_or("QAPMAP_JWT_ALLOW_HS256", false)?;
    let hs256_secret = vars.get("QAPMAP_JWT_HS256_SECRET");
    let jwks_file = vars.get("QAPMAP_JWT_JWKS_FILE").map(PathBuf::from);
    let hs256_secret = match (allow_hs256, hs256_secret) {
        (true, Some(secret)) if secret.len() >= 32 => Some(secret),
        (true, Some(_)) => {
            return Err(SettingsError::Invalid {
                variable: "QAPMAP_JWT_HS256_SECRET".to_owned(),
                value: "<redacted>".to_owned(),
                reason: "must be at least 32 characters".to_owned(),
            });
        }
        (true, None) => {
            return Err(SettingsError::Missing {
                variable: "QAPMAP_JWT_HS256_SECRET".to_owned(),
            });
        }
        (false, Some(_)) => {
            return Err(SettingsError::Invalid {
                variable: "QAPMAP_JWT_HS256_SECRET".to_owned(),
                value: "<redacted>".to_owned(),
                reason:
                    "HS256 is for local development only: set QAPMAP_JWT_ALLOW_HS256=true to use it"
                        .to_owned(),
            });
        }
        (false, None) => None,
    };
    if jwks_file.is_none() && hs256_secret.is_none() {
        return Err(SettingsError::Missing {
            variable: "QAPMAP_JWT_JWKS_FILE".to_owned(),
        });
    }
    let defaults = RateLimitSettings::default();
    Ok(AuthSettings {
        jwks_file,
        hs256_secret,
        issuer: vars.get("QAPMAP_JWT_ISSUER"),
        audience: vars.get("QAPMAP_JWT_AUDIENCE"),
        rate_limits: RateLimitSettings {
            subject_per_second: vars.parsed_or(
                "QAPMAP_RATE_LIMIT_SUBJECT_PER_SECOND",
                defaults.subject_per_second,
            )?,
            subject_burst: vars
                .parsed_or("QAPMAP_RATE_LIMIT_SUBJECT_BURST", defaults.subject_burst)?,
            company_per_second: vars.parsed_or(
                "QAPMAP_RATE_LIMIT_COMPANY_PER_SECOND",
                defaults.company_per_second,
            )?,
            company_burst: vars
                .parsed_or("QAPMAP_RATE_LIMIT_COMPANY_BURST", defaults.company_burst)?,
        },
    })
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
        let map: HashMap<String, String> = [("QAPMAP_JWT_JWKS_FILE", "/etc/qapmap/jwks.json")]
            .iter()
            .chain(vars.iter())
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
    fn hs256_needs_the_explicit_development_switch() {
        let secret = "a-development-secret-of-32-chars!";
        let error = load(&[
            ("QAPMAP_DATABASE_URL", "postgres://localhost/ledger"),
            ("QAPMAP_JWT_HS256_SECRET", secret),
        ])
        .expect_err("must fail")
        .to_string();
        assert!(error.contains("QAPMAP_JWT_ALLOW_HS256"), "{error}");
        assert!(!error.contains(secret), "{error}");
        let settings = load(&[
            ("QAPMAP_DATABASE_URL", "postgres://localhost/ledger"),
            ("QAPMAP_JWT_HS256_SECRET", secret),
            ("QAPMAP_JWT_ALLOW_HS256", "true"),
        ])
        .expect("valid");
        assert!(settings.auth.hs256_secret.is_some());
        assert!(!format!("{settings:?}").contains(secret));
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
