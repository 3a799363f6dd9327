//! Harness for the end-to-end tests, the demo and the end-to-end benchmark: [`cluster`] starts a
//! delivery node and peers as real processes on this machine; here they get a delivery node on
//! a fresh Postgres database, and failures become panics.

pub mod cluster;
pub mod json_output;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cluster::{DeliveryProcess, PeerProcess};

/// The directory holding the workspace's binaries, built once per test process.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "mlschat-cli",
                "-p",
                "mlschat-delivery",
                "-p",
                "mlschat-tests",
                "-p",
                "mlschat-loadtest",
            ])
            .args([
                "--bin",
                "mlschat",
                "--bin",
                "mlschat-delivery",
                "--bin",
                "mlschat-demo",
                "--bin",
                "mlschat-loadtest",
            ])
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

/// A fresh database on the Postgres server named by `DATABASE_URL` (the README's test command
/// starts a throwaway one). Without it the test fails: it must not pass unchecked.
pub fn fresh_database() -> String {
    mlschat_testkit::fresh_postgres_url_blocking()
}

/// A delivery node on a fresh Postgres database, and the directory peers keep profiles in.
pub struct Node {
    pub process: DeliveryProcess,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let process = DeliveryProcess::start(
            bin_dir(),
            &dir.path().join("node"),
            Some(&fresh_database()),
            &[],
        )
        .unwrap();
        Self { process, dir }
    }

    /// A new peer `name/laptop` working through this node (its daemon not started).
    pub fn peer(&self, name: &str) -> PeerProcess {
        PeerProcess::new(
            bin_dir(),
            &self.dir.path().join("peers"),
            name,
            &self.process,
        )
        .unwrap()
    }
}

/// Polls `condition` until it holds; fails the test after `cluster::PATIENCE`.
pub fn eventually(what: &str, condition: impl FnMut() -> bool) {
    cluster::eventually(what, condition).unwrap();
}

/// Waits until the peers agree on the group's state; returns the epoch.
pub fn converged(peers: &[&PeerProcess], id: &str) -> u64 {
    cluster::converged(peers, id).unwrap().0
}
