//! Cache-aside for the current cap table in Redis. Keys carry the company's
//! ledger sequence and projection version, so a new entry or equity event
//! makes older values unreachable (they expire on their own). Redis is an
//! optimisation only: when it is down or slow, reads go to Postgres.

use std::time::Duration;

use chrono::NaiveDate;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

/// How long a cached table lives; unreachable keys need no explicit delete.
const ENTRY_TTL_SECONDS: u64 = 3600;
/// The most a cache call may add to a read before we give up on it.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// The cap-table cache; cheap to clone.
#[derive(Clone)]
pub struct CapTableCache {
    connection: Option<ConnectionManager>,
    /// Keeps one deployment's (or test's) keys apart from another's.
    prefix: String,
}

impl std::fmt::Debug for CapTableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapTableCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What identifies one cached table.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey {
    pub company_id: Uuid,
    pub as_of: NaiveDate,
    pub ledger_sequence: i64,
    pub projection_version: i64,
}

impl CapTableCache {
    /// Connects lazily: a Redis that is down at start costs nothing until it answers.
    pub fn new(redis_url: &str, prefix: &str) -> Self {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connection = redis::Client::open(redis_url)
            .and_then(|client| ConnectionManager::new_lazy_with_config(client, config))
            .inspect_err(|error| tracing::warn!(error.message = %error, "cap-table cache disabled"))
            .ok();
        Self {
            connection,
            prefix: prefix.to_owned(),
        }
    }

    pub fn key(&self, key: &CacheKey) -> String {
        format!(
            "{}:ledger:cap_table:v1:{}:{}:{}:{}",
            self.prefix, key.company_id, key.as_of, key.ledger_sequence, key.projection_version
        )
    }

    /// The cached encoding, or `None` on a miss or any Redis trouble.
    pub async fn get(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let mut connection = self.connection.clone()?;
        let call = connection.get::<_, Option<Vec<u8>>>(self.key(key));
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                tracing::warn!(error.message = %error, "cap-table cache read failed; using Postgres");
                None
            }
            Err(_) => {
                tracing::warn!("cap-table cache read timed out; using Postgres");
                None
            }
        }
    }

    /// Stores an encoding; failures are logged and otherwise ignored.
    pub async fn put(&self, key: &CacheKey, value: &[u8]) {
        let Some(mut connection) = self.connection.clone() else {
            return;
        };
        let call = connection.set_ex::<_, _, ()>(self.key(key), value, ENTRY_TTL_SECONDS);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error.message = %error, "cap-table cache write failed")
            }
            Err(_) => tracing::warn!("cap-table cache write timed out"),
        }
    }
}
