//! Delivery node throughput: the `mlschat-delivery` binary as its own process, driven over
//! real QUIC on 127.0.0.1, on Postgres (`DATABASE_URL`), next to raw Postgres measured in the
//! same run with `pgbench` (1 KiB rows, the same 64 clients, one row per transaction and ten).
//! Run through `scripts/bench-delivery.sh`, which starts a throwaway Postgres when none is given.
//!
//! ```text
//! cargo bench -p mlschat-delivery --bench delivery -- [--writers 64] [--seconds 10]
//!     [--rounds 1] [--pin SERVER_CPUS:LOAD_CPUS] [--subscribers 1000]
//! ```
//!
//! - appends: `writers` clients post 1 KiB messages, each to its own group, as fast as each
//!   gets answers; then the same writers all to one group. Acknowledged appends per second and
//!   latency percentiles. With `--rounds N`, N rounds of (raw Postgres batched, then both),
//!   and the median ratio of appends to raw rows over the rounds.
//! - claims: `writers` clients claim KeyPackages from 64 owners' stocks.
//! - fan-out: `subscribers` connections subscribe to one group; one message at a time is posted
//!   and the time until each subscriber has its push is recorded.
//!
//! Every line also says how much CPU each operation cost, by process (from /proc): Postgres
//! (the whole server), the node, and the load generator (this process, or pgbench). On a small
//! machine the load generator competes with what it measures; these figures say by how much.

use mlschat_testkit::percentile;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlschat_wire::token::token_hash;
use mlschat_wire::*;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, NodeProcess};

/// CPU time used so far, by process, read from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    postgres: Duration,
    node: Duration,
    /// This process, the load generator.
    clients: Duration,
    /// Children of this process that have exited (pgbench).
    pgbench: Duration,
}

impl Cpu {
    fn now(node_pid: u32) -> Cpu {
        let [user, system, children_user, children_system] = times("self");
        let node = times(&node_pid.to_string());
        Cpu {
            postgres: postgres_cpu(),
            node: node[0] + node[1],
            clients: user + system,
            pgbench: children_user + children_system,
        }
    }

    /// Per operation, in microseconds, since `before`.
    fn per_op(&self, before: &Cpu, ops: usize) -> [f64; 4] {
        // Saturating: a Postgres backend that exited and is not yet reaped counts nowhere.
        let us = |now: Duration, then: Duration| {
            now.saturating_sub(then).as_secs_f64() * 1e6 / ops.max(1) as f64
        };
        [
            us(self.postgres, before.postgres),
            us(self.node, before.node),
            us(self.clients, before.clients),
            us(self.pgbench, before.pgbench),
        ]
    }
}

/// `--pin SERVER:LOAD` (CPU lists, e.g. `0:1`): the system under test (Postgres and the node)
/// runs on the SERVER CPUs and the load generators (this process, pgbench) on the LOAD CPUs, so
/// that the node and raw Postgres are measured on the same server resources, with the load
/// generator's CPU set apart.
struct Pin {
    server: String,
    load: String,
}

impl Pin {
    fn parse(spec: &str) -> Pin {
        let (server, load) = spec.split_once(':').expect("--pin SERVER_CPUS:LOAD_CPUS");
        Pin {
            server: server.into(),
            load: load.into(),
        }
    }

    /// Pins this process, every Postgres process (new backends inherit it from the postmaster)
    /// and the node.
    fn apply(&self, node_pid: u32) {
        taskset(&self.load, std::process::id());
        for pid in postgres_pids() {
            taskset(&self.server, pid);
        }
        taskset(&self.server, node_pid);
        println!(
            "pinned: Postgres and the node on CPUs {}, load generators on CPUs {}",
            self.server, self.load
        );
    }

    /// Gives Postgres every CPU back.
    fn release(&self) {
        // Not available_parallelism(): it answers for this process, which is pinned itself.
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        for pid in postgres_pids() {
            taskset(online.trim(), pid);
        }
    }
}

fn taskset(cpus: &str, pid: u32) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running taskset");
    assert!(status.success(), "taskset -c {cpus} for {pid} failed");
}

/// utime, stime, cutime, cstime of /proc/`pid`/stat (children: those exited and waited for).
fn times(pid: &str) -> [Duration; 4] {
    // Linux reports these in USER_HZ, which is 100 on every architecture we run on.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| {
        let ticks: u64 = fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
        Duration::from_millis(ticks * 10)
    };
    // After the ")": state is field 0, utime field 11 ... cstime field 14.
    [tick(11), tick(12), tick(13), tick(14)]
}

/// All CPU the Postgres server has used: every live `postgres` process, plus what exited
/// backends left in their parent's children times.
fn postgres_cpu() -> Duration {
    postgres_pids()
        .map(|pid| times(&pid.to_string()).iter().sum::<Duration>())
        .sum()
}

/// Every process of the Postgres server (this machine's: the benchmark runs beside it).
fn postgres_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
}

/// Runs `writers` tasks doing `op` until `seconds` pass; returns ops/s, latencies and the CPU
/// each op cost (see [`Cpu::per_op`]; `node_pid` is the node's process).
async fn drive<F, Fut>(
    node_pid: u32,
    writers: usize,
    seconds: u64,
    op: F,
) -> (f64, Vec<Duration>, [f64; 4])
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let before = Cpu::now(node_pid);
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(w).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    let cpu = Cpu::now(node_pid).per_op(&before, all.len());
    all.sort();
    (rate, all, cpu)
}

fn report(
    name: &str,
    rate: f64,
    latencies: &[Duration],
    cpu: [f64; 4],
    json: &mut Vec<serde_json::Value>,
) {
    let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
    let [postgres, node, clients, _] = cpu;
    println!(
        "{name:<52} {rate:>8.0}/s  p50 {p50:>9.2?}  p99 {p99:>9.2?}  \
         CPU/op: postgres {postgres:.0} µs, node {node:.0} µs, clients {clients:.0} µs"
    );
    json.push(serde_json::json!({
        "benchmark": name, "per_second": rate,
        "p50_ms": p50.as_secs_f64() * 1e3, "p99_ms": p99.as_secs_f64() * 1e3,
        "cpu_us_per_op": {"postgres": postgres, "node": node, "clients": clients},
    }));
}

/// Raw Postgres in the same run: pgbench inserting 1 KiB rows with `clients` connections,
/// `rows` per transaction. Prints rows per second and the CPU each row cost.
fn raw_postgres(
    url: &str,
    clients: usize,
    rows: usize,
    seconds: u64,
    node_pid: u32,
    json: &mut Vec<serde_json::Value>,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    let insert = "INSERT INTO raw_rows (payload) VALUES (decode(repeat('5a', 1024), 'hex'));\n";
    std::fs::write(&script, format!("BEGIN;\n{}COMMIT;\n", insert.repeat(rows))).unwrap();
    let before = Cpu::now(node_pid);
    let output = std::process::Command::new(pgbench())
        .args([
            "-n",
            "-j",
            "2",
            "-c",
            &clients.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("running pgbench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let total = tps * rows as f64 * seconds as f64;
    let [postgres, _, _, pgbench] = Cpu::now(node_pid).per_op(&before, total as usize);
    let name = format!("raw Postgres, {rows} row(s) per transaction ({clients} clients, 1 KiB)");
    println!(
        "{name:<52} {:>8.0}/s  {:>33}CPU/op: postgres {postgres:.0} µs, pgbench {pgbench:.0} µs",
        tps * rows as f64,
        ""
    );
    json.push(serde_json::json!({
        "benchmark": name, "per_second": tps * rows as f64,
        "cpu_us_per_op": {"postgres": postgres, "pgbench": pgbench},
    }));
    tps * rows as f64
}

/// `PGBENCH`, else the newest Debian Postgres's, else the one on PATH.
fn pgbench() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBENCH") {
        return path.into();
    }
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    installed.sort_by_key(|p| {
        p.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
    });
    installed.pop().unwrap_or_else(|| "pgbench".into())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut writers = 64;
    let mut seconds = 10;
    let mut subscribers = 1000;
    let mut pin = None;
    let mut rounds = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--writers" => writers = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--subscribers" => subscribers = args.next().unwrap().parse().unwrap(),
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--pin" => pin = args.next().map(|p| Pin::parse(&p)),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let url = common::fresh_postgres_url().await;
    let data = tempfile::tempdir().unwrap();
    // Claims, requests, bytes, groups and registrations are rate-limited per client or
    // address; the benchmark measures the node, not the limits.
    let unlimited = [
        ("MLSCHAT__LIMITS__CLAIM_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__CLAIM_REFILL_MS", "1"),
        ("MLSCHAT__LIMITS__OWNER_CLAIM_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__OWNER_CLAIM_REFILL_MS", "1"),
        ("MLSCHAT__LIMITS__CLIENT_REQUESTS_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__CLIENT_REQUESTS_PER_SECOND", "1e9"),
        ("MLSCHAT__LIMITS__CLIENT_BYTES_BURST", "4000000000"),
        ("MLSCHAT__LIMITS__CLIENT_BYTES_PER_SECOND", "1e12"),
        ("MLSCHAT__LIMITS__CLIENT_GROUPS_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__ADDRESS_REGISTRATIONS_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__ADDRESS_REQUESTS_BURST", "1000000000"),
        ("MLSCHAT__LIMITS__ADDRESS_REQUESTS_PER_SECOND", "1e9"),
    ];
    let node = NodeProcess::start(data.path(), &url, &unlimited);
    let pid = node.child.id();
    if let Some(pin) = &pin {
        pin.apply(pid);
    }
    let mut json = Vec::new();

    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    raw_postgres(&url, writers, 1, seconds, pid, &mut json);

    let clients: Vec<Arc<Client>> = {
        let mut v = Vec::new();
        for _ in 0..writers {
            let c = node.client().await;
            c.register().await;
            v.push(Arc::new(c));
        }
        v
    };
    let token = [9u8; 32];
    for w in 0..=writers {
        let create = Request::CreateGroup(CreateGroup {
            group_id: format!("group-{w}").into_bytes().into(),
            token_hash: token_hash(&token),
        });
        assert_eq!(clients[0].request(&create).await, Response::Ok);
    }
    let payload = vec![0x5a; 1024];
    // Rounds interleave raw Postgres and the node, so each ratio compares two measurements
    // taken under the same neighbours (this machine's speed drifts by half within minutes).
    let kinds = [
        ("appends, one group per writer", false),
        ("appends, all writers one group", true),
    ];
    let mut ratios = vec![Vec::new(); kinds.len()];
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let raw = raw_postgres(&url, writers, 10, seconds, pid, &mut json);
        for (kind, (name, shared)) in kinds.into_iter().enumerate() {
            let (clients, payload) = (clients.clone(), payload.clone());
            let (rate, lat, cpu) = drive(pid, writers, seconds, move |w| {
                let (client, payload) = (clients[w].clone(), payload.clone());
                async move {
                    let group = if shared { writers } else { w };
                    let post = Request::PostMessage(PostMessage {
                        group_id: format!("group-{group}").into_bytes().into(),
                        epoch: 0,
                        token,
                        post_id: common::post_id(),
                        message: payload.into(),
                    });
                    let answer = client.request(&post).await;
                    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
                }
            })
            .await;
            report(
                &format!("{name} ({writers} writers, 1 KiB)"),
                rate,
                &lat,
                cpu,
                &mut json,
            );
            ratios[kind].push(rate / raw);
        }
    }
    for ((name, _), mut ratios) in kinds.into_iter().zip(ratios) {
        ratios.sort_by(f64::total_cmp);
        let each: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect();
        println!(
            "{name}, to batched raw Postgres in the same round: median {:.0}% ({})",
            ratios[ratios.len() / 2] * 100.0,
            each.join(", ")
        );
    }

    // Claims: 64 owners with deep stocks, claimed by every writer in turn.
    let owners = &clients[..writers.min(64)];
    for owner in owners {
        let publish = Request::PublishKeyPackages(PublishKeyPackages {
            one_time: (0..200)
                .map(|_| owner.key_package(&owner.signer, false))
                .collect(),
            last_resort: owner.key_package(&owner.signer, true),
        });
        assert_eq!(owner.request(&publish).await, Response::Ok);
    }
    let owner_ids: Vec<ClientId> = owners.iter().map(|o| o.id()).collect();
    let claim_clients = clients.clone();
    let (rate, lat, cpu) = drive(pid, writers, seconds.min(5), move |w| {
        let client = claim_clients[w].clone();
        let owner = owner_ids[w % owner_ids.len()];
        async move {
            let answer = client.request(&Request::ClaimKeyPackage { owner }).await;
            assert!(matches!(answer, Response::KeyPackage { .. }), "{answer:?}");
        }
    })
    .await;
    report(
        &format!("KeyPackage claims ({writers} claimers)"),
        rate,
        &lat,
        cpu,
        &mut json,
    );
    fan_out(&node, &clients[0], token, subscribers, &mut json).await;
    println!("{}", serde_json::to_string(&json).unwrap());
    drop(node);
    common::drop_postgres(&url).await;
    if let Some(pin) = &pin {
        pin.release();
    }
}

/// Many subscribed connections, one message at a time: the time from posting until each
/// subscriber has read its push. The rate is pushes per second over the slowest delivery.
async fn fan_out(
    node: &NodeProcess,
    poster: &Client,
    token: [u8; 32],
    subscribers: usize,
    json: &mut Vec<serde_json::Value>,
) {
    let group: tls_codec::VLBytes = b"fan-out".as_slice().into();
    let create = Request::CreateGroup(CreateGroup {
        group_id: group.clone(),
        token_hash: token_hash(&token),
    });
    assert_eq!(poster.request(&create).await, Response::Ok);
    let mut listeners = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let c = node.client().await;
        c.register().await;
        let subscribe = Request::Subscribe(FetchGroup {
            group_id: group.clone(),
            token,
            after_seq: 0,
            limit: 0,
        });
        assert_eq!(c.request(&subscribe).await, Response::Ok);
        listeners.push(c);
    }
    let rounds = 10;
    let before = Cpu::now(node.child.id());
    let mut latencies = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let waits: Vec<_> = listeners
            .iter()
            .map(|l| {
                let connection = l.connection.quinn().clone();
                tokio::spawn(async move {
                    let mut stream = connection.accept_uni().await.unwrap();
                    stream.read_to_end(1 << 20).await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let sent = Instant::now();
        let post = Request::PostMessage(PostMessage {
            group_id: group.clone(),
            epoch: 0,
            token,
            post_id: common::post_id(),
            message: format!("round {round}").into_bytes().into(),
        });
        assert!(matches!(
            poster.request(&post).await,
            Response::Accepted { .. }
        ));
        for wait in waits {
            let latency = wait.await.unwrap() - sent;
            slowest = slowest.max(latency);
            latencies.push(latency);
        }
    }
    let cpu = Cpu::now(node.child.id()).per_op(&before, latencies.len());
    latencies.sort();
    let rate = latencies.len() as f64 / (slowest.as_secs_f64() * rounds as f64);
    report(
        &format!("fan-out to {subscribers} subscribers (push latency)"),
        rate,
        &latencies,
        cpu,
        json,
    );
}
