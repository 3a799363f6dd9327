//! Delivery node throughput over real QUIC on 127.0.0.1 against Postgres (`DATABASE_URL`).
//! Run through `scripts/bench-delivery.sh`, which also measures raw Postgres (pgbench) with the
//! same row size and clients in the same run.
//!
//! ```text
//! cargo bench -p mlschat-delivery --bench delivery -- [--writers 64] [--seconds 10]
//! ```
//!
//! - appends: `writers` clients post 1 KiB messages, each to its own group, as fast as each
//!   gets answers; then the same writers all to one group. Acknowledged appends per second and
//!   latency percentiles.
//! - claims: `writers` clients claim KeyPackages from 64 owners' stocks.
//! - fan-out: `subscribers` connections subscribe to one group; one message at a time is posted
//!   and the time until each subscriber has its push is recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlschat_delivery::certificate::NodeCertificate;
use mlschat_delivery::server::{Node, NodeConfig, serve};
use mlschat_delivery::storage::Database;
use mlschat_wire::token::token_hash;
use mlschat_wire::*;

#[path = "../tests/common/mod.rs"]
mod common;

use common::Client;

struct Target {
    addr: SocketAddr,
    fingerprint: [u8; 32],
}

async fn start(db: Database) -> Target {
    let cert = NodeCertificate::self_signed("localhost").unwrap();
    let endpoint = quinn::Endpoint::server(
        cert.server_config().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let config = NodeConfig {
        claim_rate: mlschat_keypackages::RateLimit {
            burst: u32::MAX,
            refill: Duration::from_millis(1),
        },
        ..NodeConfig::default()
    };
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(serve(endpoint, Arc::new(Node::new(db, config))));
    Target {
        addr,
        fingerprint: cert.fingerprint(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `writers` tasks doing `op` until `seconds` pass; returns ops/s and latencies.
async fn drive<F, Fut>(writers: usize, seconds: u64, op: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
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
    all.sort();
    (rate, all)
}

fn report(name: &str, rate: f64, latencies: &[Duration], json: &mut Vec<serde_json::Value>) {
    let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
    println!("{name:<40} {rate:>10.0}/s   p50 {p50:>10.2?}   p99 {p99:>10.2?}");
    json.push(serde_json::json!({
        "benchmark": name, "per_second": rate,
        "p50_ms": p50.as_secs_f64() * 1e3, "p99_ms": p99.as_secs_f64() * 1e3,
    }));
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut writers = 64;
    let mut seconds = 10;
    let mut subscribers = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--writers" => writers = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--subscribers" => subscribers = args.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let db = common::fresh_postgres().await;
    let target = start(db).await;
    let mut json = Vec::new();

    let clients: Vec<Arc<Client>> = {
        let mut v = Vec::new();
        for _ in 0..writers {
            let c = Client::connect(target.addr, target.fingerprint).await;
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
    for (name, shared) in [
        ("appends, one group per writer", false),
        ("appends, all writers one group", true),
    ] {
        let (clients, payload) = (clients.clone(), payload.clone());
        let (rate, lat) = drive(writers, seconds, move |w| {
            let (client, payload) = (clients[w].clone(), payload.clone());
            async move {
                let group = if shared { writers } else { w };
                let post = Request::PostMessage(PostMessage {
                    group_id: format!("group-{group}").into_bytes().into(),
                    epoch: 0,
                    token,
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
            &mut json,
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
    let (rate, lat) = drive(writers, seconds.min(5), move |w| {
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
        &mut json,
    );
    fan_out(&target, &clients[0], token, subscribers, &mut json).await;
    println!("{}", serde_json::to_string(&json).unwrap());
}

/// Many subscribed connections, one message at a time: the time from posting until each
/// subscriber has read its push. The rate is pushes per second over the slowest delivery.
async fn fan_out(
    target: &Target,
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
        let c = Client::connect(target.addr, target.fingerprint).await;
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
    latencies.sort();
    let rate = latencies.len() as f64 / (slowest.as_secs_f64() * rounds as f64);
    report(
        &format!("fan-out to {subscribers} subscribers (push latency)"),
        rate,
        &latencies,
        json,
    );
}
