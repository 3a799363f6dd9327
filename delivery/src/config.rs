//! The node's configuration: defaults, then a TOML file, then `MLSCHAT__SECTION__KEY`
//! environment variables, then command-line flags (applied by the binary), each overriding the
//! one before. Passed around as a plain struct; nothing else reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mlschat_keypackages::{ClaimLimits, RateLimit};

use serde::Deserialize;

use crate::guard::{GuardConfig, rate};
use crate::server::{NodeConfig, Registration};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub database: DatabaseSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// QUIC (UDP) address clients connect to.
    pub listen: SocketAddr,
    /// Admin HTTP address: `/metrics`, `/healthz`, `/readyz`, `POST /invites`. Keep it on
    /// loopback or a private network; web pages are refused, changes need the admin token.
    pub admin: SocketAddr,
    /// The token `POST` requests to the admin port must present (`Authorization: Bearer`);
    /// empty: one is made on first start and kept in `data_dir/admin-token`.
    pub admin_token: String,
    /// Holds the generated certificate and, without a database URL, the SQLite file.
    pub data_dir: PathBuf,
    pub registration: Registration,
    /// Seconds a drain (SIGTERM) waits for requests in flight.
    pub drain_seconds: u64,
    /// Seconds between counts of stored bytes and KeyPackages for `/metrics` (each count scans
    /// the database's size; load tests read it every second).
    pub totals_refresh_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `postgres://…`; empty: SQLite in `data_dir`.
    pub url: String,
    pub max_connections: u32,
    /// Write transactions for posts that may run at once, each a batch of whatever posts are
    /// waiting: more spread load over a bigger server, fewer make bigger (cheaper) batches.
    pub writers: usize,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate and PKCS#8 key; both empty: a self-signed pair made on first start.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_frame: u32,
    pub max_fetch: u32,
    /// Bytes one fetch returns at most (past its first entry, which always comes): a few big
    /// messages cannot make a page too big to send.
    pub max_fetch_bytes: u64,
    /// Largest application message (or proposal) a client may post; large content travels
    /// as attachments.
    pub max_message: u32,
    /// Milliseconds a request may take to arrive whole; a stalled stream is answered `timeout`.
    pub request_timeout_ms: u64,
    /// Bytes of request bodies one connection may have arrived and not yet handled.
    pub connection_budget: u32,
    /// Claims a claimer may make at once, then one per `claim_refill_ms`.
    pub claim_burst: u32,
    pub claim_refill_ms: u64,
    /// One-time KeyPackages of one owner handed out at once, then one per
    /// `owner_claim_refill_ms`; past that, claims get the owner's last-resort package.
    pub owner_claim_burst: u32,
    pub owner_claim_refill_ms: u64,
    /// Claims one claimer may make of one owner's packages at once, then one per
    /// `pair_claim_refill_ms`; past that, its claims of that owner are refused `rate_limited`.
    pub pair_claim_burst: u32,
    pub pair_claim_refill_ms: u64,
    /// Welcomes a client's mailbox may hold; past it, a commit's Welcome for that client is left
    /// out (the committer is told), never the commit refused.
    pub mailbox_quota: u64,
    /// Days a mailbox entry is kept if never acknowledged.
    pub mailbox_retention_days: u64,
    /// Days group log entries and claim log entries are kept; a member further behind finds a
    /// gap, and its client says what it missed.
    pub log_retention_days: u64,
    /// The same for all connections together (bodies over 64 KiB only).
    pub memory_budget: u32,
    /// Milliseconds a connection may take to finish its handshake, and again to authenticate.
    pub handshake_timeout_ms: u64,
    /// Milliseconds a silent connection lives (clients send keep-alives).
    pub idle_timeout_ms: u64,
    /// Requests one connection may have open at once.
    pub streams_per_connection: u32,
    pub max_connections: usize,
    pub connections_per_address: usize,
    /// Requests an authenticated client may send at once, then this many a second.
    pub client_requests_burst: u32,
    pub client_requests_per_second: f64,
    /// Requests the unauthenticated connections of one address may send together.
    pub address_requests_burst: u32,
    pub address_requests_per_second: f64,
    /// Bytes of commits, messages and KeyPackages a client may write at once, then this many a
    /// second: with the retention, what one client can make the node store.
    pub client_bytes_burst: u32,
    pub client_bytes_per_second: f64,
    /// Groups a client may create at once, then this many an hour.
    pub client_groups_burst: u32,
    pub client_groups_per_hour: f64,
    /// Registrations one address may make at once, then this many an hour.
    pub address_registrations_burst: u32,
    pub address_registrations_per_hour: f64,
    /// Registrations the whole node takes at once, then this many an hour (a flood from many
    /// addresses); `mlschat_registrations_total` counts them.
    pub node_registrations_burst: u32,
    pub node_registrations_per_hour: f64,
    /// How many leading bits of an IPv6 address are "one address" to every per-address limit.
    pub ipv6_prefix: u8,
    /// Bytes of big request bodies one client, and one address, may hold at once: a share of
    /// `memory_budget`, so that nobody holds all of it.
    pub client_body_share: u32,
    pub address_body_share: u32,
}

impl LimitsSection {
    /// The claim limits, as the KeyPackage directory takes them.
    pub fn claims(&self) -> ClaimLimits {
        let limit = |burst, refill_ms| RateLimit {
            burst,
            refill: Duration::from_millis(refill_ms),
        };
        ClaimLimits {
            claimer: limit(self.claim_burst, self.claim_refill_ms),
            owner: limit(self.owner_claim_burst, self.owner_claim_refill_ms),
            pair: limit(self.pair_claim_burst, self.pair_claim_refill_ms),
        }
    }

    /// The connection counts and rates, as the guard takes them.
    pub fn guard(&self) -> GuardConfig {
        GuardConfig {
            max_connections: self.max_connections,
            connections_per_address: self.connections_per_address,
            client_requests: rate(self.client_requests_burst, self.client_requests_per_second),
            address_requests: rate(
                self.address_requests_burst,
                self.address_requests_per_second,
            ),
            client_bytes: rate(self.client_bytes_burst, self.client_bytes_per_second),
            client_groups: rate(
                self.client_groups_burst,
                self.client_groups_per_hour / 3600.0,
            ),
            address_registrations: rate(
                self.address_registrations_burst,
                self.address_registrations_per_hour / 3600.0,
            ),
            node_registrations: rate(
                self.node_registrations_burst,
                self.node_registrations_per_hour / 3600.0,
            ),
            ipv6_prefix: self.ipv6_prefix,
            client_body_share: self.client_body_share,
            address_body_share: self.address_body_share,
        }
    }
}

impl Config {
    /// The node's behaviour, as configured.
    pub fn node(&self) -> NodeConfig {
        let limits = &self.limits;
        NodeConfig {
            max_frame: limits.max_frame,
            registration: self.server.registration,
            claims: limits.claims(),
            max_fetch: limits.max_fetch,
            max_fetch_bytes: limits.max_fetch_bytes,
            max_message: limits.max_message,
            request_timeout: Duration::from_millis(limits.request_timeout_ms),
            connection_budget: limits.connection_budget,
            memory_budget: limits.memory_budget,
            handshake_timeout: Duration::from_millis(limits.handshake_timeout_ms),
            guard: limits.guard(),
            mailbox_quota: limits.mailbox_quota,
            writers: self.database.writers,
        }
    }
}

/// The defaults are written once, here: a node built in code (tests, the load tool's embedded
/// node) behaves as one started with no configuration.
impl Default for NodeConfig {
    fn default() -> Self {
        Config::default().node()
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        LimitsSection::default().guard()
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".parse().expect("valid address"),
            admin: "127.0.0.1:9433".parse().expect("valid address"),
            admin_token: String::new(),
            data_dir: PathBuf::from("mlschat-delivery-data"),
            registration: Registration::Open,
            drain_seconds: 10,
            totals_refresh_seconds: 15,
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 32,
            writers: 2,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        let claims = ClaimLimits::default();
        let millis = |limit: RateLimit| limit.refill.as_millis() as u64;
        Self {
            max_frame: mlschat_wire::MAX_FRAME,
            max_fetch: 1000,
            max_fetch_bytes: 8 * 1024 * 1024,
            max_message: 1024 * 1024,
            request_timeout_ms: 30_000,
            connection_budget: 2 * mlschat_wire::MAX_FRAME,
            claim_burst: claims.claimer.burst,
            claim_refill_ms: millis(claims.claimer),
            owner_claim_burst: claims.owner.burst,
            owner_claim_refill_ms: millis(claims.owner),
            pair_claim_burst: claims.pair.burst,
            pair_claim_refill_ms: millis(claims.pair),
            mailbox_quota: 10_000,
            mailbox_retention_days: 30,
            log_retention_days: 90,
            memory_budget: 16 * mlschat_wire::MAX_FRAME,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            streams_per_connection: 64,
            max_connections: 10_000,
            connections_per_address: 256,
            client_requests_burst: 2_000,
            client_requests_per_second: 500.0,
            address_requests_burst: 200,
            address_requests_per_second: 20.0,
            client_bytes_burst: 256 << 20,
            client_bytes_per_second: 256.0 * 1024.0,
            client_groups_burst: 200,
            client_groups_per_hour: 360.0,
            address_registrations_burst: 20,
            address_registrations_per_hour: 60.0,
            node_registrations_burst: 1_000,
            node_registrations_per_hour: 3_600.0,
            ipv6_prefix: 64,
            client_body_share: 4 * mlschat_wire::MAX_FRAME,
            address_body_share: 4 * mlschat_wire::MAX_FRAME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("environment variable {0}: expected MLSCHAT__SECTION__KEY")]
    Env(String),
}

impl Config {
    /// Layers a TOML document (may be empty) and then environment variables (as `(name,
    /// value)` pairs, e.g. from `std::env::vars()`) over the defaults.
    pub fn load(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml_text.parse()?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix("MLSCHAT__") else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            let [section, key] = parts.as_slice() else {
                return Err(ConfigError::Env(name));
            };
            // Numbers and booleans are TOML values; anything else is a string.
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env(name.clone()))?
                .insert(key.clone(), value);
        }
        Ok(table.try_into()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        let file = "[server]\nlisten = \"127.0.0.1:5000\"\n[limits]\nmax_fetch = 50\n";
        let env = [
            ("MLSCHAT__LIMITS__MAX_FETCH".to_owned(), "70".to_owned()),
            (
                "MLSCHAT__SERVER__REGISTRATION".to_owned(),
                "invite".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::load(file, env).unwrap();
        assert_eq!(config.server.listen.port(), 5000);
        assert_eq!(config.limits.max_fetch, 70);
        assert_eq!(config.server.registration, Registration::Invite);
        assert_eq!(config.limits.claim_burst, 500);
    }

    #[test]
    fn the_example_file_in_deploy_is_valid_and_says_the_defaults() {
        let example = include_str!("../../deploy/mlschat-delivery.toml");
        let config = Config::load(example, []).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn unknown_keys_and_malformed_variables_are_errors() {
        assert!(Config::load("[server]\nlisten_on = 1\n", []).is_err());
        assert!(Config::load("", [("MLSCHAT__NOSECTION".to_owned(), "1".to_owned())]).is_err());
    }
}
