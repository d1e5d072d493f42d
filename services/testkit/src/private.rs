//! Server instances of a test's own, on free loopback ports, that the test
//! may stop and restart. The shared servers on the default ports are never
//! touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Waits until something accepts TCP connections on `port`.
fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A Postgres cluster in a temp directory. `initdb` refuses to run as root,
/// so as root the cluster belongs to the `postgres` user.
#[derive(Debug)]
pub struct PrivatePostgres {
    directory: TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let directory = tempfile::Builder::new()
            .prefix("qapmap-pg-")
            .tempdir()
            .expect("temp dir");
        let bin = postgres_bin_dir();
        if is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .expect("look up user postgres")
                .expect("user postgres exists (installed with Postgres)");
            nix::unistd::chown(directory.path(), Some(user.uid), Some(user.gid))
                .expect("chown the cluster directory");
        }
        let data = directory.path().join("data");
        let status = run_as_owner(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let postgres = Self {
            directory,
            bin,
            port: crate::free_port(),
        };
        postgres.resume();
        postgres
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn stop(&self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts it again on the same port with the same data.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.directory.path().display()
        );
        let log = self.directory.path().join("postgres.log");
        let status = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "30",
            "-o",
            &options,
            "-l",
            &log.to_string_lossy(),
        ]);
        assert!(status, "pg_ctl start failed; see {}", log.display());
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "postgres did not listen"
        );
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        run_as_owner(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.directory.path().join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_as_owner(program: PathBuf) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Where `initdb` and `pg_ctl` live: `pg_config --bindir`, else Debian's layout.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|dir| dir.join("initdb").exists())
        .expect("PostgreSQL server binaries (initdb, pg_ctl) are installed")
}

/// A JetStream-enabled nats-server with its own store directory.
#[derive(Debug)]
pub struct PrivateNats {
    directory: TempDir,
    child: Option<Child>,
    pub port: u16,
}

impl PrivateNats {
    pub fn start() -> Self {
        let directory = tempfile::Builder::new()
            .prefix("qapmap-nats-")
            .tempdir()
            .expect("temp dir");
        let mut nats = Self {
            directory,
            child: None,
            port: crate::free_port(),
        };
        nats.resume();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): an outage, not a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(find_program("nats-server", &["/usr/sbin/nats-server"]))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.directory.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(15)),
            "nats-server did not listen"
        );
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A redis-server that keeps nothing on disk.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            child: None,
            port: crate::free_port(),
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(find_program("redis-server", &["/usr/bin/redis-server"]))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(15)),
            "redis-server did not listen"
        );
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_program(name: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    fallbacks
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{name} is installed"))
}
