//! Rate limits per subject and per company, shared by every replica through
//! Redis: GCRA (a token bucket kept as one "theoretical arrival time" per
//! key) in one Lua script, so both limits are checked and charged
//! atomically. Redis is a safeguard, not a dependency: when it is down or
//! slow, requests pass and the outage is logged (at most every
//! [`OUTAGE_LOG_INTERVAL`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::settings::RateLimitSettings;

/// The most a rate-limit check may add to a call.
const CALL_TIMEOUT: Duration = Duration::from_millis(100);
const OUTAGE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// KEYS: the buckets. ARGV: per key, the emission interval and the burst
/// tolerance, in microseconds. Returns 0 when allowed (and charges every
/// bucket), else the microseconds to wait.
const GCRA_SCRIPT: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local wait = 0
local arrivals = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allowed_at = next_tat - tolerance
  if allowed_at > now and allowed_at - now > wait then wait = allowed_at - now end
  arrivals[i] = next_tat
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((arrivals[i] - now) / 1000) + 1000
  redis.call('SET', key, arrivals[i], 'PX', ttl_ms)
end
return 0
"#;

/// A bucket: `per_second` sustained, `burst` at once. `per_second == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

impl Limit {
    fn arguments(self) -> Option<(u64, u64)> {
        if self.per_second == 0 {
            return None;
        }
        let interval = 1_000_000 / u64::from(self.per_second);
        let tolerance = interval * u64::from(self.burst.max(1));
        Some((interval.max(1), tolerance))
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; try again after this long.
    Limited(Duration),
}

/// Checks and charges the buckets of a call.
pub struct RateLimiter {
    connection: Option<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    per_subject: Limit,
    per_company: Limit,
    last_outage_log: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .field("per_subject", &self.per_subject)
            .field("per_company", &self.per_company)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Connects lazily: a Redis that is down at start costs nothing until it answers.
    pub fn new(redis_url: &str, prefix: &str, limits: &RateLimitSettings) -> Self {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connection = redis::Client::open(redis_url)
            .and_then(|client| ConnectionManager::new_lazy_with_config(client, config))
            .inspect_err(|error| tracing::warn!(error.message = %error, "rate limits disabled"))
            .ok();
        Self {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: prefix.to_owned(),
            per_subject: Limit {
                per_second: limits.subject_per_second,
                burst: limits.subject_burst,
            },
            per_company: Limit {
                per_second: limits.company_per_second,
                burst: limits.company_burst,
            },
            last_outage_log: Mutex::new(None),
        }
    }

    /// Charges one call to `subject` (and `company_id`, when the call names one).
    pub async fn check(&self, subject: &str, company_id: Option<Uuid>) -> Verdict {
        let Some(mut connection) = self.connection.clone() else {
            return Verdict::Allowed;
        };
        let mut invocation = self.script.prepare_invoke();
        let mut any = false;
        if let Some((interval, tolerance)) = self.per_subject.arguments() {
            invocation
                .key(format!("{}:ratelimit:subject:{subject}", self.prefix))
                .arg(interval)
                .arg(tolerance);
            any = true;
        }
        if let (Some(company_id), Some((interval, tolerance))) =
            (company_id, self.per_company.arguments())
        {
            invocation
                .key(format!("{}:ratelimit:company:{company_id}", self.prefix))
                .arg(interval)
                .arg(tolerance);
            any = true;
        }
        if !any {
            return Verdict::Allowed;
        }
        let call = invocation.invoke_async::<u64>(&mut connection);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(0)) => Verdict::Allowed,
            Ok(Ok(wait_micros)) => Verdict::Limited(Duration::from_micros(wait_micros)),
            Ok(Err(error)) => {
                self.log_outage(&error.to_string());
                Verdict::Allowed
            }
            Err(_) => {
                self.log_outage("timed out");
                Verdict::Allowed
            }
        }
    }

    fn log_outage(&self, reason: &str) {
        let mut last = self
            .last_outage_log
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if last.is_none_or(|at| at.elapsed() >= OUTAGE_LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(
                error.message = reason,
                "rate limiting is unavailable (Redis); requests pass unlimited"
            );
        }
    }
}
