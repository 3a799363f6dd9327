//! Harness for end-to-end tests: a delivery node (`mlschat-delivery` on Postgres) and peers
//! (`mlschat` profiles, each with its daemon), all real processes on 127.0.0.1, driven through
//! the CLI and the daemon's JSON-RPC socket exactly as a user or a front end would.
//!
//! Waiting is bounded (a test that never converges fails after [`PATIENCE`]); nothing asserts a
//! duration.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries, built once per test process.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "mlschat-node",
                "-p",
                "mlschat-delivery",
            ])
            .args(["--bin", "mlschat", "--bin", "mlschat-delivery"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        // target/debug/deps/<test> -> target/debug
        let exe = std::env::current_exe().expect("the test binary's path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned()
    })
}

pub fn mlschat() -> PathBuf {
    bin_dir().join("mlschat")
}

/// Polls `condition` until it holds; fails the test with `what` after [`PATIENCE`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh database on the Postgres server named by `DATABASE_URL` (the README's test command
/// starts a throwaway one).
pub fn fresh_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run the tests with ./scripts/test.sh, which starts Postgres",
    );
    let name = format!(
        "mlschat_e2e_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = sqlx::PgPool::connect(&url)
            .await
            .expect("connecting to DATABASE_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    });
    let (server, _) = url.rsplit_once('/').expect("a URL ending in /database");
    format!("{server}/{name}")
}

/// A free UDP port on 127.0.0.1, so that a restarted node listens where peers expect it.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A delivery node process.
pub struct Delivery {
    pub address: String,
    pub fingerprint: String,
    dir: tempfile::TempDir,
    database_url: String,
    port: u16,
    child: Option<Child>,
}

impl Delivery {
    /// Starts a node on a fresh Postgres database.
    pub fn start() -> Self {
        let mut node = Self {
            address: String::new(),
            fingerprint: String::new(),
            dir: tempfile::tempdir().unwrap(),
            database_url: fresh_database(),
            port: free_port(),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new(bin_dir().join("mlschat-delivery"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--admin", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.path())
            .arg("--database-url")
            .arg(&self.database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mlschat-delivery");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_owned()
        };
        self.address = field("quic=");
        self.fingerprint = field("fingerprint=");
        self.child = Some(child);
    }

    /// Kills the node (SIGKILL) and starts it again on the same port, data and database.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A peer: a profile, and its daemon while it runs.
pub struct Peer {
    pub name: String,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Peer {
    /// A new profile `name/laptop` working through `node`.
    pub fn new(name: &str, node: &Delivery) -> Self {
        let peer = Self {
            name: name.into(),
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
        };
        peer.cli(&["init", "--user", name, "--device", "laptop"]);
        peer.cli(&["home", "set", &node.address, &node.fingerprint]);
        peer
    }

    fn command(&self) -> Command {
        let mut command = Command::new(mlschat());
        command
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--profile", "p", "-o", "json"]);
        command
    }

    /// Runs `mlschat ARGS` for this profile; panics if it fails. Returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.command().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}: mlschat {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The invite code others add us with.
    pub fn invite(&self) -> String {
        let out: Value = serde_json::from_str(&self.cli(&["invite"])).unwrap();
        out["code"].as_str().unwrap().to_owned()
    }

    /// Adds `other` as a contact.
    pub fn knows(&self, other: &Peer) {
        self.cli(&["contact", "add", &other.invite()]);
    }

    /// Starts the daemon and waits until it is connected.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "{} already runs", self.name);
        let child = self
            .command()
            .arg("daemon")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        eventually(&format!("{}'s daemon connects", self.name), || {
            self.try_call("status", json!({}))
                .is_ok_and(|s| s["link"]["connected"] == true)
        });
    }

    /// Kills the daemon with SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            terminate(child.id());
            let _ = child.wait();
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("the daemon runs").id()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("p").join("daemon.sock")
    }

    /// Calls a daemon API method; `Err` holds the error object.
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let mut stream = UnixStream::connect(self.socket()).map_err(|e| json!(e.to_string()))?;
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        writeln!(stream, "{request}").map_err(|e| json!(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| json!(e.to_string()))?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| json!(e.to_string()))?;
        match answer.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(answer["result"].clone()),
        }
    }

    /// Calls a daemon API method; panics on an error answer.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{}: {method} failed: {e}", self.name))
    }

    /// The group as this peer sees it, if it is in it.
    pub fn group(&self, id: &str) -> Option<Value> {
        let groups = self.try_call("groups", json!({})).ok()?;
        groups.as_array()?.iter().find(|g| g["id"] == id).cloned()
    }

    /// Texts of the group's history, oldest first, as `sender: body`.
    pub fn texts(&self, id: &str) -> Vec<String> {
        let history = self.call("history", json!({"group": id, "limit": 100_000}));
        history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "text")
            .map(|e| {
                let sender = e["sender"].as_str().unwrap();
                let user = sender.split('/').next().unwrap();
                format!("{user}: {}", e["body"].as_str().unwrap())
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(unsafe_code)] // kill(2) has no safe wrapper in std for signals other than SIGKILL.
fn terminate(pid: u32) {
    // SAFETY: sends SIGTERM to a child process we started and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Waits until every peer in `peers` sees group `id` at the same epoch with the same epoch
/// authenticator (RFC 9420 §8.7): they agree on the whole group state. Returns that epoch.
pub fn converged(peers: &[&Peer], id: &str) -> u64 {
    let mut epoch = 0;
    eventually(&format!("the members agree on group {id}"), || {
        let seen: Vec<Option<(u64, String)>> = peers
            .iter()
            .map(|p| {
                p.group(id).map(|g| {
                    (
                        g["epoch"].as_u64().unwrap(),
                        g["epoch_authenticator"].as_str().unwrap().to_owned(),
                    )
                })
            })
            .collect();
        let first = seen[0].clone();
        let agreed = first.is_some() && seen.iter().all(|s| *s == first);
        if agreed {
            epoch = first.unwrap().0;
        }
        agreed
    });
    epoch
}
