//! The node under hostile slow connections (issue 10): its resident memory, and what honest
//! writers still get, against the same run without the attackers. The `mlschat-delivery`
//! binary runs as its own process on Postgres (`DATABASE_URL`) with its default limits.
//! Run through `scripts/bench-hostile.sh`, which starts a throwaway Postgres when none is given.
//!
//! ```text
//! cargo bench -p mlschat-delivery --bench hostile -- [--attackers 1000] [--streams 8]
//!     [--writers 64] [--seconds 15]
//! ```
//!
//! Each attacker is a registered client on its own connection (from 50 loopback addresses, as
//! the default limits allow 20 registrations an address) that keeps `streams` requests open,
//! each declaring a 64 MiB body and sending one byte a second. Each honest writer posts 1 KiB
//! messages to its own group, one after another. Both runs report the node's peak resident
//! memory (VmHWM) and the writers' acknowledged posts per second with latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlschat_wire::token::token_hash;
use mlschat_wire::*;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, NodeProcess};

struct Options {
    attackers: usize,
    streams: usize,
    writers: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        attackers: 1000,
        streams: 8,
        writers: 64,
        seconds: 15,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--attackers" => o.attackers = value(),
            "--streams" => o.streams = value(),
            "--writers" => o.writers = value(),
            "--seconds" => o.seconds = value() as u64,
            _ => {}
        }
    }
    o
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Keeps `streams` stalled requests open on a registered connection until `stop`.
/// Counts in `opened` each request whose head was sent.
async fn attacker(client: Client, streams: usize, opened: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut open = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        open.retain(|task: &tokio::task::JoinHandle<()>| !task.is_finished());
        while open.len() < streams {
            let connection = client.connection.quinn().clone();
            let (stop, opened) = (stop.clone(), opened.clone());
            open.push(tokio::spawn(async move {
                let Ok((mut send, _recv)) = connection.open_bi().await else {
                    return;
                };
                let mut head = vec![0, 1];
                head.extend_from_slice(&(64u32 << 20).to_be_bytes());
                if send.write_all(&head).await.is_err() {
                    return;
                }
                opened.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    if send.write_all(&[0]).await.is_err() {
                        return; // answered `timeout` and reset: open another
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts 1 KiB messages to its own group until `stop`; returns each acknowledged post's latency.
async fn writer(client: Client, group: u32, stop: Arc<AtomicBool>) -> (Vec<Duration>, usize) {
    let group_id: tls_codec::VLBytes = format!("writer-{group}").into_bytes().into();
    let token = [7u8; 32];
    let create = Request::CreateGroup(CreateGroup {
        group_id: group_id.clone(),
        token_hash: token_hash(&token),
    });
    assert_eq!(client.request(&create).await, Response::Ok);
    let (mut latencies, mut refused) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let post = Request::PostMessage(PostMessage {
            group_id: group_id.clone(),
            epoch: 0,
            token,
            post_id: common::post_id(),
            message: vec![0x42; 1024].into(),
        });
        let started = Instant::now();
        match client.request(&post).await {
            Response::Accepted { .. } => latencies.push(started.elapsed()),
            _ => refused += 1,
        }
    }
    (latencies, refused)
}

/// The `p`-quantile of `sorted`, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    mlschat_testkit::percentile(sorted, p).as_secs_f64() * 1000.0
}

async fn run(url: &str, o: &Options, attackers: usize) {
    let data = tempfile::tempdir().unwrap();
    // A thousand registered attackers are the scenario: the node-wide registration cap (which
    // would refuse them) is lifted, every other limit is the default.
    let uncapped = ("MLSCHAT__LIMITS__NODE_REGISTRATIONS_BURST", "1000000");
    let node = NodeProcess::start(data.path(), url, &[uncapped]);
    let pid = node.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut hostile = Vec::new();
    for i in 0..attackers {
        let from = format!("127.0.1.{}", 1 + i % 50);
        let client = Client::connect_from(&from, node.quic, node.fingerprint).await;
        client.register().await;
        hostile.push(tokio::spawn(attacker(
            client,
            o.streams,
            opened.clone(),
            stop.clone(),
        )));
    }
    // Every stalled request is open before the writers start.
    while opened.load(Ordering::Relaxed) < attackers * o.streams {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before_writers = status_kib(pid, "VmRSS:");
    let mut writers = Vec::new();
    for i in 0..o.writers {
        let from = format!("127.0.2.{}", 1 + i % 8);
        let client = Client::connect_from(&from, node.quic, node.fingerprint).await;
        client.register().await;
        writers.push(tokio::spawn(writer(client, i as u32, stop.clone())));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (mut latencies, mut refused) = (Vec::new(), 0);
    for w in writers {
        let (l, r) = w.await.unwrap();
        latencies.extend(l);
        refused += r;
    }
    let peak = status_kib(pid, "VmHWM:");
    let now = status_kib(pid, "VmRSS:");
    for a in hostile {
        a.abort();
    }
    latencies.sort();
    println!(
        "attackers {attackers:>5} x {} stalled streams | writers {}: {:>7.0} posts/s, p50 {:.2} ms, \
         p99 {:.2} ms, {refused} refused | node RSS: {} MiB with the attackers in, peak {} MiB, \
         {} MiB at the end",
        if attackers > 0 { o.streams } else { 0 },
        o.writers,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
        rss_before_writers / 1024,
        peak / 1024,
        now / 1024,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    let url = common::fresh_postgres_url().await;
    run(&url, &o, 0).await;
    let url = common::fresh_postgres_url().await;
    run(&url, &o, o.attackers).await;
}
