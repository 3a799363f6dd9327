//! The node a run loads: one given by address and pin, or one the tool starts in its own process
//! (on SQLite in a temporary directory, or on Postgres) so that a run needs nothing else. And
//! what the run reads of the node's side: its `/metrics`, and the CPU and memory of the node
//! and Postgres processes when they run on this machine.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use mlschat_delivery::config::Config;
use serde::{Deserialize, Serialize};

/// The nodes a run loads: one, or several processes on one Postgres (members are spread over
/// them, so pushes cross processes).
#[derive(Debug, Clone)]
pub struct Target {
    pub nodes: Vec<Node>,
    /// The operator's invite token where registration needs one.
    pub invite: Vec<u8>,
}

/// One node process: where it listens and what clients pin.
#[derive(Debug, Clone)]
pub struct Node {
    pub quic: SocketAddr,
    /// SHA-256 of the node's certificate.
    pub pin: [u8; 32],
    /// The admin HTTP address, for `/metrics`; without it the node's side goes unmeasured.
    pub admin: Option<SocketAddr>,
}

impl Target {
    /// The node of member number `n`: round robin.
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n % self.nodes.len()]
    }

    /// The nodes' `/metrics` added up (stored bytes: the largest, as nodes share a database);
    /// `None` if no node has an admin address or one cannot be read.
    pub fn scrape(&self) -> anyhow::Result<Option<NodeSide>> {
        let mut total: Option<NodeSide> = None;
        for admin in self.nodes.iter().filter_map(|n| n.admin) {
            let side = NodeSide::scrape(admin)?;
            total = Some(match total {
                None => side,
                Some(sum) => sum.and(&side),
            });
        }
        Ok(total)
    }
}

/// A node running inside this process, on its own threads; stopped (drained) when dropped.
pub struct Embedded {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Embedded")
    }
}

impl Embedded {
    /// Starts a node with its files in `data_dir`, on Postgres at `database_url` or on SQLite,
    /// configured as [`LOAD_TEST_NODE`].
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<(Self, Target)> {
        let mut config = Config::load(LOAD_TEST_NODE, embedded_settings(database_url))?;
        config.server.data_dir = data_dir.to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, on_start) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("embedded-node".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(mlschat_delivery::run::run(
                    config,
                    async {
                        let _ = stopped.await;
                    },
                    move |s| {
                        let _ = started.send(s);
                    },
                ))
            })?;
        let embedded = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        match on_start.recv_timeout(Duration::from_secs(60)) {
            Ok(s) => Ok((
                embedded,
                Target {
                    nodes: vec![Node {
                        quic: s.quic,
                        pin: s.fingerprint,
                        admin: Some(s.admin),
                    }],
                    invite: Vec::new(),
                },
            )),
            Err(_) => {
                let mut embedded = embedded;
                match embedded.thread.take().map(|t| t.join()) {
                    Some(Ok(Err(e))) => Err(e.context("the embedded node did not start")),
                    _ => bail!("the embedded node did not start within a minute"),
                }
            }
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The configuration of a node for load tests, shipped for operators in `deploy/`.
pub const LOAD_TEST_NODE: &str = include_str!("../../deploy/loadtest-node.toml");

/// The embedded node's settings beyond [`LOAD_TEST_NODE`], as `MLSCHAT__SECTION__KEY` pairs:
/// ephemeral ports on loopback, a short drain, the database.
fn embedded_settings(database_url: Option<&str>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("SERVER__LISTEN", "\"127.0.0.1:0\""),
        ("SERVER__ADMIN", "\"127.0.0.1:0\""),
        ("SERVER__DRAIN_SECONDS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("MLSCHAT__{k}"), v.to_owned()))
    .collect();
    if let Some(url) = database_url {
        settings.push(("MLSCHAT__DATABASE__URL".into(), format!("{url:?}")));
    }
    settings
}

/// What the node says of itself on `/metrics`, read before and after a run. Figures a
/// result of an older version lacks read as none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSide {
    /// Bytes its database holds.
    pub stored_bytes: f64,
    /// Refusals by reason, all time.
    pub refusals: BTreeMap<String, f64>,
    /// Requests that failed, by kind, all time.
    pub failed_requests: BTreeMap<String, f64>,
    /// Requests served and the seconds they took there, by kind, all time.
    pub requests: BTreeMap<String, f64>,
    pub request_seconds: BTreeMap<String, f64>,
}

impl NodeSide {
    /// Reads the node's `/metrics` at `admin`.
    pub fn scrape(admin: SocketAddr) -> anyhow::Result<Self> {
        let text = http_get(admin, "/metrics")?;
        Ok(Self::parse(&text))
    }

    /// The figures this tool reads from Prometheus text.
    pub fn parse(text: &str) -> Self {
        let mut side = NodeSide::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let label = |key: &str| {
                let start = name.find(&format!("{key}=\""))? + key.len() + 2;
                let end = start + name[start..].find('"')?;
                Some(name[start..end].to_owned())
            };
            if name == "mlschat_stored_bytes" {
                side.stored_bytes = value;
            } else if name.starts_with("mlschat_refusals_total{") {
                if let Some(reason) = label("reason") {
                    *side.refusals.entry(reason).or_default() += value;
                }
            } else if name.starts_with("mlschat_request_seconds_count{")
                && let Some(kind) = label("kind")
            {
                side.requests.insert(kind, value);
            } else if name.starts_with("mlschat_request_seconds_sum{")
                && let Some(kind) = label("kind")
            {
                side.request_seconds.insert(kind, value);
            } else if name.starts_with("mlschat_requests_total{")
                && label("result").is_some_and(|r| r != "ok")
                && let Some(kind) = label("kind")
            {
                *side.failed_requests.entry(kind).or_default() += value;
            }
        }
        side
    }

    /// Two nodes' figures together: requests and refusals add up, stored bytes (of a database
    /// they share) do not.
    fn and(&self, other: &NodeSide) -> NodeSide {
        let sum = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
            let mut sum = a.clone();
            for (k, v) in b {
                *sum.entry(k.clone()).or_default() += v;
            }
            sum
        };
        NodeSide {
            stored_bytes: self.stored_bytes.max(other.stored_bytes),
            refusals: sum(&self.refusals, &other.refusals),
            failed_requests: sum(&self.failed_requests, &other.failed_requests),
            requests: sum(&self.requests, &other.requests),
            request_seconds: sum(&self.request_seconds, &other.request_seconds),
        }
    }

    /// What changed from `before` to `self`.
    pub fn since(&self, before: &NodeSide) -> NodeSide {
        let delta = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v != 0.0)
                .collect()
        };
        NodeSide {
            stored_bytes: self.stored_bytes - before.stored_bytes,
            refusals: delta(&self.refusals, &before.refusals),
            failed_requests: delta(&self.failed_requests, &before.failed_requests),
            requests: delta(&self.requests, &before.requests),
            request_seconds: delta(&self.request_seconds, &before.request_seconds),
        }
    }

    /// The mean time the node took to serve a request of each kind, in milliseconds.
    pub fn mean_request_ms(&self) -> BTreeMap<String, f64> {
        self.requests
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(kind, n)| {
                let seconds = self.request_seconds.get(kind).copied().unwrap_or(0.0);
                (kind.clone(), seconds * 1000.0 / n)
            })
            .collect()
    }
}

/// The body of `GET path` from an HTTP/1.1 server.
fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(head));
    }
    Ok(body.to_owned())
}

/// CPU time and resident memory of processes on this machine, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds (user and system) since each process started.
    pub cpu_seconds: f64,
    /// Memory now: the proportional set size (shared pages divided among their sharers, so
    /// that Postgres's shared buffers count once), or the resident size without it.
    pub memory_bytes: u64,
    pub processes: u32,
}

/// The processes a run measures, by pid, each with what it is: `self`, the target's node
/// processes running here (`mlschat-delivery`: the owners of the UDP sockets its nodes listen
/// on), and the Postgres servers those or this process are connected to (`postgres`: the
/// server that listens, and its backends). Other processes of those names on the machine are
/// not the run's. Empty where there is no `/proc`.
pub fn own_processes(target: &Target) -> BTreeMap<u32, &'static str> {
    let procs = Procs::read();
    let mut own = BTreeMap::from([(std::process::id(), "self")]);
    let node_ports: Vec<u16> = target
        .nodes
        .iter()
        .filter(|n| n.quic.ip().is_loopback() || n.quic.ip().is_unspecified() || is_local(n.quic))
        .map(|n| n.quic.port())
        .collect();
    for socket in procs
        .sockets("udp")
        .into_iter()
        .chain(procs.sockets("udp6"))
    {
        if node_ports.contains(&socket.local_port)
            && let Some(&pid) = procs.socket_owner.get(&socket.inode)
        {
            own.entry(pid).or_insert("mlschat-delivery");
        }
    }
    // Postgres: the listening server behind the connections of this process and the nodes.
    let tcp: Vec<Socket> = procs
        .sockets("tcp")
        .into_iter()
        .chain(procs.sockets("tcp6"))
        .collect();
    let clients: Vec<u32> = own.keys().copied().collect();
    let remote_ports: Vec<u16> = tcp
        .iter()
        .filter(|s| s.state == ESTABLISHED)
        .filter(|s| {
            procs
                .socket_owner
                .get(&s.inode)
                .is_some_and(|p| clients.contains(p))
        })
        .map(|s| s.remote_port)
        .collect();
    for socket in tcp.iter().filter(|s| s.state == LISTEN) {
        if !remote_ports.contains(&socket.local_port) {
            continue;
        }
        let Some(&server) = procs.socket_owner.get(&socket.inode) else {
            continue;
        };
        if procs.comm.get(&server).map(String::as_str) != Some("postgres") {
            continue;
        }
        for pid in procs.descendants(server) {
            own.entry(pid).or_insert("postgres");
        }
    }
    own
}

fn is_local(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

const ESTABLISHED: u8 = 0x01;
const LISTEN: u8 = 0x0A;

/// A socket of `/proc/net/{tcp,udp}[6]`.
struct Socket {
    local_port: u16,
    remote_port: u16,
    state: u8,
    inode: u64,
}

/// What `/proc` says of every process: its name, parent and sockets.
struct Procs {
    comm: BTreeMap<u32, String>,
    parent: BTreeMap<u32, u32>,
    socket_owner: BTreeMap<u64, u32>,
}

impl Procs {
    fn read() -> Self {
        let mut procs = Procs {
            comm: BTreeMap::new(),
            parent: BTreeMap::new(),
            socket_owner: BTreeMap::new(),
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return procs;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let Some((comm, fields)) = stat(pid) else {
                continue;
            };
            if let Some(ppid) = fields.get(1).and_then(|f| f.parse().ok()) {
                procs.parent.insert(pid, ppid);
            }
            procs.comm.insert(pid, comm);
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|i| i.parse().ok())
                {
                    procs.socket_owner.insert(inode, pid);
                }
            }
        }
        procs
    }

    /// The sockets of `/proc/net/{kind}`.
    fn sockets(&self, kind: &str) -> Vec<Socket> {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{kind}")) else {
            return Vec::new();
        };
        let port = |addr: &str| {
            addr.rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                Some(Socket {
                    local_port: port(f.get(1)?)?,
                    remote_port: port(f.get(2)?)?,
                    state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                    inode: f.get(9)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// `pid` and every process below it.
    fn descendants(&self, pid: u32) -> Vec<u32> {
        let mut all = vec![pid];
        let mut i = 0;
        while i < all.len() {
            let parent = all[i];
            all.extend(
                self.parent
                    .iter()
                    .filter(|&(_, p)| *p == parent)
                    .map(|(c, _)| *c),
            );
            i += 1;
        }
        all
    }
}

/// `/proc/PID/stat`: the command name, and the fields after it (state first).
fn stat(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields = stat
        .get(close + 2..)?
        .split(' ')
        .map(str::to_owned)
        .collect();
    Some((stat[open + 1..close].to_owned(), fields))
}

/// The CPU and memory of `processes` (from [`own_processes`]), summed by what each is.
pub fn local_usage(processes: &BTreeMap<u32, &'static str>) -> BTreeMap<String, Usage> {
    let mut usage = BTreeMap::new();
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096;
    for (&pid, &name) in processes {
        let Some((_, fields)) = stat(pid) else {
            continue; // gone meanwhile
        };
        // After comm: state is field 3, utime 14, stime 15, rss 24 (1-based, man 5 proc).
        let number = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime), Some(rss)) = (number(14), number(15), number(24)) else {
            continue;
        };
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Pss:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            });
        let u: &mut Usage = usage.entry(name.to_owned()).or_default();
        u.cpu_seconds += (utime + stime) as f64 / ticks;
        u.memory_bytes += pss.unwrap_or(rss * page);
        u.processes += 1;
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_from_prometheus_text() {
        let text = "# HELP mlschat_stored_bytes Bytes\n\
            mlschat_stored_bytes 12345\n\
            mlschat_refusals_total{reason=\"client_requests\"} 3\n\
            mlschat_requests_total{kind=\"post_commit\",result=\"ok\"} 10\n\
            mlschat_requests_total{kind=\"post_commit\",result=\"stale_epoch\"} 2\n\
            mlschat_requests_total{kind=\"claim\",result=\"too_many_requests\"} 1\n\
            mlschat_request_seconds_sum{kind=\"claim\"} 0.5\n\
            mlschat_request_seconds_count{kind=\"claim\"} 100\n\
            garbage line\n";
        let side = NodeSide::parse(text);
        assert_eq!(side.stored_bytes, 12345.0);
        assert_eq!(side.refusals["client_requests"], 3.0);
        assert_eq!(side.failed_requests["post_commit"], 2.0);
        assert_eq!(side.failed_requests["claim"], 1.0);
        let before = NodeSide::parse("mlschat_stored_bytes 345\n");
        let delta = side.since(&before);
        assert_eq!(delta.stored_bytes, 12000.0);
        assert_eq!(delta.refusals["client_requests"], 3.0);
        assert_eq!(delta.mean_request_ms()["claim"], 5.0);
        let both = side.and(&before);
        assert_eq!(both.stored_bytes, 12345.0);
        assert_eq!(both.refusals["client_requests"], 3.0);
        assert_eq!(side.and(&side).requests["claim"], 200.0);
    }

    #[test]
    fn this_process_is_found_in_proc() {
        let usage = local_usage(&BTreeMap::from([(std::process::id(), "self")]));
        let me = &usage["self"];
        assert_eq!(me.processes, 1);
        assert!(me.memory_bytes > 0);
    }

    /// Issue 19, finding 9: every process of a node's name on the machine was counted as the
    /// run's. Only the one listening where the target's node listens is.
    #[test]
    fn only_the_targets_own_processes_are_measured() {
        let node = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = |addr: SocketAddr| Target {
            nodes: vec![Node {
                quic: addr,
                pin: [0; 32],
                admin: None,
            }],
            invite: Vec::new(),
        };
        // This process owns the node's socket: it is found as the node, once, under `self`.
        let own = own_processes(&target(node.local_addr().unwrap()));
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(own[&std::process::id()], "self");
        // A port nobody of ours listens on names no process.
        let own = own_processes(&target("127.0.0.1:9".parse().unwrap()));
        assert_eq!(own.len(), 1, "{own:?}");
    }
}
