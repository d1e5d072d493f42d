//! The NATS connection, subject names, and idempotent JetStream set-up.
//!
//! Subjects follow DESIGN.md under a configurable root (the namespace,
//! `qapmap` in production): `<ns>.cmd.<service>.<command>`,
//! `<ns>.reply.<saga>`, `<ns>.evt.<service>.<event>`, `<ns>.dlq.<...>`.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};

use crate::settings::Settings;

/// How long start-up waits for NATS before giving up.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// JetStream drops a message whose id it saw within this window. It must
/// outlast the relay's retry horizon so a re-publish after a crash is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long messages stay in a stream: no copy of an older message can be
/// delivered.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The subject and stream names of one namespace.
#[derive(Debug, Clone)]
pub struct Subjects {
    namespace: String,
}

impl Subjects {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn command(&self, service: &str, command: &str) -> String {
        format!("{}.cmd.{service}.{command}", self.namespace)
    }

    pub fn reply(&self, saga_type: &str) -> String {
        format!("{}.reply.{saga_type}", self.namespace)
    }

    pub fn event(&self, service: &str, event: &str) -> String {
        format!("{}.evt.{service}.{event}", self.namespace)
    }

    /// Where a consumer's dead letters are copied: `<ns>.dlq.<consumer>`.
    pub fn dead_letter(&self, consumer: &str) -> String {
        format!("{}.dlq.{consumer}", self.namespace)
    }

    /// A stream name for one kind of traffic, e.g. `QAPMAP_COMMANDS`.
    pub fn stream_name(&self, kind: StreamKind) -> String {
        let prefix = self.namespace.to_ascii_uppercase().replace('-', "_");
        format!("{prefix}_{}", kind.suffix())
    }

    fn stream_subjects(&self, kind: StreamKind) -> String {
        format!("{}.{}.>", self.namespace, kind.token())
    }
}

/// The streams QapMap uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Commands,
    Replies,
    Events,
    DeadLetters,
}

impl StreamKind {
    pub const ALL: [Self; 4] = [
        Self::Commands,
        Self::Replies,
        Self::Events,
        Self::DeadLetters,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Self::Commands => "COMMANDS",
            Self::Replies => "REPLIES",
            Self::Events => "EVENTS",
            Self::DeadLetters => "DEAD_LETTERS",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Self::Commands => "cmd",
            Self::Replies => "reply",
            Self::Events => "evt",
            Self::DeadLetters => "dlq",
        }
    }
}

/// Connects to NATS, retrying while it is not up yet. After start the client
/// reconnects on its own; health reports NOT_SERVING while it is away.
pub async fn connect(settings: &Settings) -> anyhow::Result<async_nats::Client> {
    let started = Instant::now();
    loop {
        let options = with_credentials(
            async_nats::ConnectOptions::new()
                .name(format!("qapmap-{}", settings.service))
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None),
            &settings.nats_credentials,
        )
        .await?;
        match options.connect(settings.nats_url.as_str()).await {
            Ok(client) => return Ok(client),
            Err(error) if started.elapsed() < STARTUP_WAIT => {
                tracing::warn!(error.message = %error, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("connecting to NATS"),
        }
    }
}

async fn with_credentials(
    options: async_nats::ConnectOptions,
    credentials: &crate::settings::NatsCredentials,
) -> anyhow::Result<async_nats::ConnectOptions> {
    use crate::settings::NatsCredentials;
    Ok(match credentials {
        NatsCredentials::None => options,
        NatsCredentials::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading QAPMAP_NATS_CREDENTIALS_FILE {}", path.display()))?,
        NatsCredentials::NkeySeed(seed) => options.nkey(seed.clone()),
        NatsCredentials::Token(token) => options.token(token.clone()),
        NatsCredentials::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
    })
}

/// Creates the namespace's streams with one replica (a single server: local
/// runs and tests), or brings an existing one's configuration up to date.
pub async fn ensure_streams(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
) -> anyhow::Result<()> {
    ensure_streams_replicated(jetstream, subjects, 1).await
}

/// [`ensure_streams`] with `replicas` copies of every stream. Production runs
/// R3 on a three-node cluster: a publish is acknowledged only once a quorum
/// stored it, so the outbox, which marks a row published only after that
/// acknowledgement, never forgets a message one machine lost. Safe to run
/// from every process at every start.
pub async fn ensure_streams_replicated(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> anyhow::Result<()> {
    for kind in StreamKind::ALL {
        let config = stream::Config {
            name: subjects.stream_name(kind),
            subjects: vec![subjects.stream_subjects(kind)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: MAX_AGE,
            num_replicas: replicas,
            ..Default::default()
        };
        ensure_stream(jetstream, config).await?;
    }
    Ok(())
}

/// Attempts at making a stream. nats-server 2.9 removes an account's
/// storage directory when its last stream is deleted, and a create racing
/// that removal fails ("could not create storage directory", JetStream
/// error 10049): a CI run met it while tests made and deleted namespaces
/// side by side. The next attempt finds the directory made afresh.
const STREAM_ATTEMPTS: u32 = 5;

async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match try_ensure_stream(jetstream, config.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < STREAM_ATTEMPTS => {
                tracing::warn!(stream = %config.name, attempt, error.message = %format!("{error:#}"), "making the stream failed; trying again");
                tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn try_ensure_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<()> {
    let name = config.name.clone();
    if jetstream.get_stream(&name).await.is_ok() {
        jetstream
            .update_stream(config)
            .await
            .with_context(|| format!("updating stream {name}"))?;
        return Ok(());
    }
    if let Err(create_error) = jetstream.create_stream(config.clone()).await {
        // Another process may have created it between our look-up and create.
        jetstream
            .update_stream(config)
            .await
            .with_context(|| format!("creating stream {name}: {create_error}"))?;
    }
    Ok(())
}

/// Deletes the namespace's streams: for tests that made their own namespace.
pub async fn delete_streams(jetstream: &jetstream::Context, subjects: &Subjects) {
    for kind in StreamKind::ALL {
        let _ = jetstream.delete_stream(subjects.stream_name(kind)).await;
    }
}

/// True when the connection is up and a round trip to the server completes
/// within `timeout`.
pub async fn is_reachable(client: &async_nats::Client, timeout: Duration) -> bool {
    if client.connection_state() != async_nats::connection::State::Connected {
        return false;
    }
    matches!(
        tokio::time::timeout(timeout, client.flush()).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_design() {
        let subjects = Subjects::new("qapmap");
        assert_eq!(
            subjects.command("equity", "reserve_options"),
            "qapmap.cmd.equity.reserve_options"
        );
        assert_eq!(
            subjects.reply("option_exercise"),
            "qapmap.reply.option_exercise"
        );
        assert_eq!(
            subjects.event("equity", "award_granted"),
            "qapmap.evt.equity.award_granted"
        );
        assert_eq!(
            subjects.stream_name(StreamKind::Commands),
            "QAPMAP_COMMANDS"
        );
        assert_eq!(
            Subjects::new("t-1").stream_name(StreamKind::Events),
            "T_1_EVENTS"
        );
    }
}
