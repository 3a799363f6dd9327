//! A delivery node and peers as real processes on 127.0.0.1: what `mlschat-demo` plays and the
//! end-to-end tests (`tests/`) drive. Peers are `mlschat` profiles, each with its daemon, used
//! through the CLI and the daemon's JSON-RPC socket exactly as a user or a front end would.
//!
//! Waiting is bounded: a condition that does not come true within [`PATIENCE`] is an error.
//! Each process writes its log beside its files: `delivery.log`, `peers/NAME.log`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use mlschat_node::daemon::Call;
use mlschat_node::daemon::client::DaemonClient;
use serde_json::{Value, json};

use crate::json_output;

/// How long a condition may take to come true.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` until it holds; an error naming `what` after [`PATIENCE`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > PATIENCE {
            bail!("gave up waiting: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A free UDP port on 127.0.0.1, so that a restarted node listens where peers expect it.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A delivery node process.
#[derive(Debug)]
pub struct DeliveryProcess {
    pub address: String,
    /// The admin HTTP port's address.
    pub admin: String,
    pub fingerprint: String,
    command: PathBuf,
    data_dir: PathBuf,
    database_url: Option<String>,
    settings: Vec<(String, String)>,
    port: u16,
    child: Option<Child>,
}

impl DeliveryProcess {
    /// Starts `mlschat-delivery` from `bin_dir` with its files in `data_dir`: on Postgres at
    /// `database_url`, or on SQLite in `data_dir` without one. `settings` are configuration
    /// variables (`MLSCHAT__SECTION__KEY`, value).
    pub fn start(
        bin_dir: &Path,
        data_dir: &Path,
        database_url: Option<&str>,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut node = Self {
            address: String::new(),
            admin: String::new(),
            fingerprint: String::new(),
            command: bin_dir.join("mlschat-delivery"),
            data_dir: data_dir.to_owned(),
            database_url: database_url.map(str::to_owned),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: free_port()?,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))?;
        let mut command = Command::new(&self.command);
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--admin", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.envs(self.settings.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.command.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the delivery node's first line")?;
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("the delivery node did not start: {line:?}"))
        };
        self.address = field("quic=")?;
        self.admin = field("admin=")?;
        self.fingerprint = field("fingerprint=")?;
        self.child = Some(child);
        Ok(())
    }

    /// Where its files are: the SQLite database (without a database URL), its key and token.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What it has logged so far.
    pub fn log(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(
            self.data_dir.with_extension("log"),
        )?)
    }

    /// The body of `GET path` on the admin port.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&self.admin)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body.to_owned())
    }

    /// Kills the node (SIGKILL) and starts it again on the same port, files and database.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the node (SIGSTOP freezes it: connections stay, nothing answers).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            self::signal(child.id(), signal);
        }
    }
}

impl Drop for DeliveryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A peer: a profile `NAME/laptop`, and its daemon while it runs.
#[derive(Debug)]
pub struct PeerProcess {
    pub name: String,
    command: PathBuf,
    data_dir: PathBuf,
    daemon: Option<Child>,
}

impl PeerProcess {
    /// Creates the profile `name` (user `name`, device `laptop`) under `data_dir`, working
    /// through `node`.
    pub fn new(
        bin_dir: &Path,
        data_dir: &Path,
        name: &str,
        node: &DeliveryProcess,
    ) -> anyhow::Result<Self> {
        Self::named(bin_dir, data_dir, name, name, node)
    }

    /// Creates the profile `profile` whose identity is `user/laptop`: someone else may take a
    /// name that is already somebody's.
    pub fn named(
        bin_dir: &Path,
        data_dir: &Path,
        profile: &str,
        user: &str,
        node: &DeliveryProcess,
    ) -> anyhow::Result<Self> {
        let peer = Self {
            name: profile.into(),
            command: bin_dir.join("mlschat"),
            data_dir: data_dir.to_owned(),
            daemon: None,
        };
        peer.cli(&["init", "--user", user, "--device", "laptop"])?;
        peer.cli(&["home", "set", &node.address, &node.fingerprint])?;
        Ok(peer)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.command);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--profile", &self.name, "-o", "json"]);
        command
    }

    /// Runs `mlschat ARGS` for this profile. Returns its stdout, whose every line has been
    /// checked against the documented JSON of the verb (`json_output`), as has the error line
    /// of a failure.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command().args(args).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            json_output::check_error(&stderr)?;
            bail!("{}: mlschat {args:?} failed: {}", self.name, stderr.trim());
        }
        let stdout = String::from_utf8(output.stdout)?;
        if let Some(verb) = json_output::output_of(args) {
            json_output::check_lines(&verb, &stdout)?;
        }
        Ok(stdout)
    }

    /// What a person reads: `mlschat ARGS`'s text output (stdout), which must succeed.
    pub fn text(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.command)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--profile", &self.name])
            .args(args)
            .output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("{}: mlschat {args:?} failed: {}", self.name, stderr.trim());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// The exit code of `mlschat ARGS` for this profile (its error line checked, as by `cli`).
    pub fn exit_code(&self, args: &[&str]) -> anyhow::Result<i32> {
        let output = self.command().args(args).output()?;
        let code = output.status.code().context("killed by a signal")?;
        if code != 0 {
            json_output::check_error(&String::from_utf8_lossy(&output.stderr))?;
        }
        Ok(code)
    }

    /// Starts `mlschat ARGS` for this profile with piped stdin and stdout (e.g. `chat`).
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        Ok(self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?)
    }

    /// Where our profile lives (`MLSCHAT_DATA_DIR`), for a process started by other means.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The invite code others add us with.
    pub fn invite(&self) -> anyhow::Result<String> {
        let out: Value = serde_json::from_str(&self.cli(&["invite"])?)?;
        Ok(out["code"].as_str().context("no invite code")?.to_owned())
    }

    /// Adds `other` as a contact (one way: `other` does not know us).
    pub fn knows(&self, other: &PeerProcess) -> anyhow::Result<()> {
        self.cli(&["contact", "add", &other.invite()?]).map(|_| ())
    }

    /// Exchanges invite codes with `other`: each is the other's contact, so either may add the
    /// other to a group without it waiting as a request.
    pub fn meet(&self, other: &PeerProcess) -> anyhow::Result<()> {
        self.knows(other)?;
        other.knows(self)
    }

    /// Starts the daemon and waits until it is connected and has caught up (its KeyPackages
    /// published, so that others can add it at once).
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_with(&[])
    }

    /// [`Self::start`], with more flags for `mlschat daemon`.
    pub fn start_with(&mut self, flags: &[&str]) -> anyhow::Result<()> {
        if self.daemon.is_some() {
            bail!("{} already runs", self.name);
        }
        let log = std::fs::File::create(self.data_dir.join(format!("{}.log", self.name)))?;
        let child = self
            .command()
            .arg("daemon")
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.daemon = Some(child);
        eventually(
            &format!("{}'s daemon connects and catches up", self.name),
            || {
                self.try_call("status", json!({}))
                    .is_ok_and(|s| s["link"]["connected"] == true)
                    && self.try_call("sync", json!({})).is_ok()
            },
        )
    }

    /// Kills the daemon with SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// The daemon's process id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Calls a daemon API method; `Err` holds the error object (or the I/O failure).
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, Value> {
        self.caller().try_call(method, params)
    }

    /// A handle that calls this peer's daemon from another thread, while this one kills and
    /// restarts it.
    pub fn caller(&self) -> Caller {
        Caller {
            dir: self.data_dir.join(&self.name),
        }
    }

    /// Calls a daemon API method; an error answer is an error.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.try_call(method, params)
            .map_err(|e| anyhow!("{}: {method} failed: {}", self.name, e["message"]))
    }

    /// The group as this peer sees it, if it is in it.
    pub fn group(&self, id: &str) -> Option<Value> {
        let groups = self.try_call("groups", json!({})).ok()?;
        groups.as_array()?.iter().find(|g| g["id"] == id).cloned()
    }

    /// The group's history, oldest first.
    pub fn history(&self, id: &str) -> anyhow::Result<Vec<Value>> {
        let history = self.call("history", json!({"group": id, "limit": 100_000}))?;
        Ok(history.as_array().cloned().unwrap_or_default())
    }

    /// The texts of the group's history, oldest first, as `user: text`.
    pub fn texts(&self, id: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .history(id)?
            .iter()
            .filter(|e| e["kind"] == "text")
            .map(|e| {
                let sender = e["sender"].as_str().unwrap_or_default();
                let user = sender.split('/').next().unwrap_or_default();
                format!("{user}: {}", e["body"].as_str().unwrap_or_default())
            })
            .collect())
    }
}

/// Calls one peer's daemon API (with the daemon's own client), from any thread.
#[derive(Debug, Clone)]
pub struct Caller {
    dir: PathBuf,
}

impl Caller {
    /// Calls a daemon API method; `Err` holds the error object (or the I/O failure).
    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let io = |e: &dyn std::fmt::Display| json!({"message": e.to_string()});
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| io(&e))?;
        // A call the API does not know is refused here as the daemon would refuse it.
        let answer = match Call::from_request(method, params) {
            Err(refused) => Err(refused.to_json()),
            Ok(call) => runtime.block_on(async {
                let mut client = DaemonClient::connect(&self.dir)
                    .await
                    .ok_or_else(|| io(&"no daemon listens"))?;
                client.answer(&call).await.map_err(|e| io(&e))
            })?,
        };
        // An answer unlike its documentation fails the test here, not as a refusal that a
        // caller might expect or retry.
        let checked = |output: &str, value: &Value| {
            if let Err(e) = json_output::check(output, value) {
                panic!("the daemon's answer to {method}: {e:#}");
            }
        };
        match answer {
            Err(error) => {
                checked("api.error", &error);
                Err(error)
            }
            Ok(result) => {
                checked(method, &result);
                Ok(result)
            }
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` to a child process we started and have not reaped.
#[allow(unsafe_code)] // kill(2) has no safe wrapper in std for signals other than SIGKILL.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; the pid is our own unreaped child.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Waits until every peer sees group `id` at the same epoch with the same epoch authenticator
/// (RFC 9420 §8.7): they agree on the whole group state. Returns that epoch and authenticator.
pub fn converged(peers: &[&PeerProcess], id: &str) -> anyhow::Result<(u64, String)> {
    let mut agreed = None;
    eventually(&format!("the members agree on group {id}"), || {
        let seen: Vec<Option<(u64, String)>> = peers
            .iter()
            .map(|p| {
                p.group(id).map(|g| {
                    let authenticator = g["epoch_authenticator"].as_str().unwrap_or_default();
                    (
                        g["epoch"].as_u64().unwrap_or_default(),
                        authenticator.to_owned(),
                    )
                })
            })
            .collect();
        agreed = seen[0]
            .clone()
            .filter(|first| seen.iter().all(|s| s.as_ref() == Some(first)));
        agreed.is_some()
    })?;
    Ok(agreed.expect("set when the wait ends"))
}
