//! A QapMap binary run as a child process, as in production: its settings
//! come from `QAPMAP_*` variables and it learns its port from the OS.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The path of a workspace binary built beside the running test binary
/// (`target/<profile>/<name>`): lets a cross-crate test start any service.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test_binary = std::env::current_exe().expect("current test binary");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; build the workspace binaries first",
        path.display()
    );
    path
}

/// A running service process; killed if still running when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    pub port: u16,
    /// Every line the process printed (JSON logs), for assertions and debugging.
    pub output: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (plus `QAPMAP_GRPC_PORT=0` and loopback
    /// host unless given) and waits for its "listening" log line.
    pub async fn spawn(binary: &str, env: &HashMap<String, String>) -> Self {
        let mut command = Command::new(binary);
        command
            .env("QAPMAP_GRPC_PORT", "0")
            .env("QAPMAP_GRPC_HOST", "127.0.0.1")
            .env("RUST_LOG", "info")
            .env("QAPMAP_JWT_JWKS_FILE", crate::auth::jwks_path())
            .env("QAPMAP_RATE_LIMIT_SUBJECT_PER_SECOND", "100000")
            .env("QAPMAP_RATE_LIMIT_SUBJECT_BURST", "100000")
            .env("QAPMAP_RATE_LIMIT_COMPANY_PER_SECOND", "100000")
            .env("QAPMAP_RATE_LIMIT_COMPANY_BURST", "100000")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn service binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (port_sender, port_receiver) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        tokio::spawn(collect_lines(stdout, output.clone(), Some(port_sender)));
        tokio::spawn(collect_lines(stderr, output.clone(), None));

        let port = match tokio::time::timeout(Duration::from_secs(60), port_receiver).await {
            Ok(Ok(port)) => port,
            _ => {
                let lines = output.lock().expect("lock").join("\n");
                panic!("{binary} did not report a listening port; output:\n{lines}");
            }
        };
        Self {
            child,
            port,
            output,
        }
    }

    /// `http://127.0.0.1:<port>` with the platform token on every call.
    pub fn authenticated_channel(&self) -> qapmap_runtime::auth::client::AuthenticatedChannel {
        crate::auth::platform_channel(self.channel())
    }

    /// `http://127.0.0.1:<port>`, connected lazily, without a token (health
    /// and reflection are open).
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("valid uri")
            .connect_lazy()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(
            self.child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .expect("running"),
        )
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        kill(self.pid(), Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Sends SIGKILL: a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }

    pub fn output_text(&self) -> String {
        self.output.lock().expect("lock").join("\n")
    }
}

async fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    output: Arc<Mutex<Vec<String>>>,
    mut port_sender: Option<tokio::sync::oneshot::Sender<u16>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("{line}");
        }
        if let Some(port) = listening_port(&line)
            && let Some(sender) = port_sender.take()
        {
            let _ = sender.send(port);
        }
        output.lock().expect("lock").push(line);
    }
}

/// The port of a `grpc server listening` JSON log line.
fn listening_port(line: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("message")?.as_str()? != "grpc server listening" {
        return None;
    }
    let address = value.get("address")?.as_str()?;
    address.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listening_line_yields_the_port() {
        let line = r#"{"timestamp":"x","level":"INFO","message":"grpc server listening","address":"127.0.0.1:41234"}"#;
        assert_eq!(super::listening_port(line), Some(41234));
        assert_eq!(super::listening_port("not json"), None);
    }
}
