//! What keeps one client or one address from taking more than its share of a node: connections
//! per address and in total, requests per client (and per address before authentication),
//! bytes written and groups created per client, registrations per address and node-wide, and
//! the room request bodies take per client and per address.
//!
//! "An address" is an IPv4 address, or an IPv6 prefix (a /64 by default): one IPv6 host has
//! 2^64 addresses to choose from.
//!
//! Every refusal has one [`Refusal`] reason, which is at once its wire error code, its label in
//! `mlschat_refusals_total{reason}` and its warning; warnings are rate-limited per reason so a
//! flood cannot fill the log either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlschat_keypackages::{RateLimit, RateLimiter};
use mlschat_wire::{ClientId, ErrorCode};
use tokio::sync::Semaphore;

/// Why the node refused to serve someone more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The address holds `limits.connections_per_address` connections already.
    ConnectionsPerAddress,
    /// The node holds `limits.max_connections` connections already.
    Connections,
    /// The client (or, before authentication, the address) sends requests too fast.
    Requests,
    /// The client writes more bytes than its quota lets it.
    Bytes,
    /// The client creates groups too fast.
    Groups,
    /// The address registers clients too fast.
    Registrations,
    /// The node as a whole takes registrations too fast (many addresses at once).
    NodeRegistrations,
    /// A connection stayed unauthenticated too long.
    Unauthenticated,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::ConnectionsPerAddress,
        Refusal::Connections,
        Refusal::Requests,
        Refusal::Bytes,
        Refusal::Groups,
        Refusal::Registrations,
        Refusal::NodeRegistrations,
        Refusal::Unauthenticated,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionsPerAddress => "connections_per_address",
            Refusal::Connections => "connections",
            Refusal::Requests => "requests",
            Refusal::Bytes => "bytes",
            Refusal::Groups => "groups",
            Refusal::Registrations => "registrations",
            Refusal::NodeRegistrations => "node_registrations",
            Refusal::Unauthenticated => "unauthenticated",
        }
    }

    /// The wire error code a request refused for this reason gets.
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::ConnectionsPerAddress | Refusal::Connections | Refusal::Requests => {
                ErrorCode::RateLimited
            }
            Refusal::Bytes => ErrorCode::ByteQuota,
            Refusal::Groups => ErrorCode::GroupQuota,
            Refusal::Registrations | Refusal::NodeRegistrations => ErrorCode::RegistrationLimited,
            Refusal::Unauthenticated => ErrorCode::Unauthenticated,
        }
    }
}

/// The limits, as configured.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub max_connections: usize,
    pub connections_per_address: usize,
    /// Requests of one authenticated client.
    pub client_requests: RateLimit,
    /// Requests of one address's unauthenticated connections together.
    pub address_requests: RateLimit,
    /// Bytes of commits, messages and KeyPackages one client writes: with retention, a bound
    /// on what it can make the node store.
    pub client_bytes: RateLimit,
    pub client_groups: RateLimit,
    pub address_registrations: RateLimit,
    /// Registrations of the whole node, from any address.
    pub node_registrations: RateLimit,
    /// The prefix length an IPv6 address is limited by (its first bits name "an address").
    pub ipv6_prefix: u8,
    /// Bytes of request bodies over the node-wide budget's threshold that one client, and one
    /// address, may hold at once: a share of the node's, so nobody holds all of it.
    pub client_body_share: u32,
    pub address_body_share: u32,
}

/// `per_second` tokens a second, `burst` at once.
pub fn rate(burst: u32, per_second: f64) -> RateLimit {
    RateLimit {
        burst,
        refill: Duration::from_secs_f64(1.0 / per_second.max(1e-9)),
    }
}

/// The node's counters and buckets.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    started: Instant,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    client_requests: Mutex<RateLimiter<ClientId>>,
    address_requests: Mutex<RateLimiter<IpAddr>>,
    client_bytes: Mutex<RateLimiter<ClientId>>,
    client_groups: Mutex<RateLimiter<ClientId>>,
    address_registrations: Mutex<RateLimiter<IpAddr>>,
    node_registrations: Mutex<RateLimiter<()>>,
    client_bodies: Shares<ClientId>,
    address_bodies: Shares<IpAddr>,
    refusals: prometheus::IntCounterVec,
    registrations: prometheus::IntCounter,
    /// When each reason was last logged, and how many refusals went unlogged since.
    warned: Mutex<HashMap<Refusal, (Instant, u64)>>,
}

/// How often each reason may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    guard: Arc<Guard>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.total.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut counts) = self.guard.per_address.lock()
            && let Some(n) = counts.get_mut(&self.address)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        let refusals = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "mlschat_refusals_total",
                "Requests and connections refused by a limit, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in Refusal::ALL {
            refusals.with_label_values(&[reason.label()]);
        }
        let registrations = prometheus::IntCounter::new(
            "mlschat_registrations_total",
            "Clients registered since the node started",
        )
        .expect("valid metric");
        Self {
            node_registrations: Mutex::new(RateLimiter::new(config.node_registrations)),
            client_bodies: Shares::new(config.client_body_share),
            address_bodies: Shares::new(config.address_body_share),
            registrations,
            client_requests: Mutex::new(RateLimiter::new(config.client_requests)),
            address_requests: Mutex::new(RateLimiter::new(config.address_requests)),
            client_bytes: Mutex::new(RateLimiter::new(config.client_bytes)),
            client_groups: Mutex::new(RateLimiter::new(config.client_groups)),
            address_registrations: Mutex::new(RateLimiter::new(config.address_registrations)),
            config,
            started: Instant::now(),
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            refusals,
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// The guard's metrics (refusals by reason, registrations), for the node's registry.
    pub fn metrics(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.refusals.clone()),
            Box::new(self.registrations.clone()),
        ]
    }

    /// What limits count `address` as: itself for IPv4, its prefix for IPv6.
    pub fn address_key(&self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(_) => address,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u32::from(self.config.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    IpAddr::V6((u128::from(v6) & mask).into())
                }
            },
        }
    }

    /// A place for a new connection from `address`, if the limits leave one.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refusal> {
        let address = self.address_key(address);
        let mut counts = lock(&self.per_address);
        let here = counts.get(&address).copied().unwrap_or(0);
        if here >= self.config.connections_per_address {
            return Err(self.refused(Refusal::ConnectionsPerAddress));
        }
        if self.total.load(Ordering::SeqCst) >= self.config.max_connections {
            return Err(self.refused(Refusal::Connections));
        }
        self.total.fetch_add(1, Ordering::SeqCst);
        counts.insert(address, here + 1);
        Ok(Slot {
            guard: self.clone(),
            address,
        })
    }

    /// One request from `client`, or from an unauthenticated connection at `address`.
    pub fn request(&self, client: Option<&ClientId>, address: IpAddr) -> Result<(), Refusal> {
        let address = self.address_key(address);
        let now = self.started.elapsed();
        let taken = match client {
            Some(client) => lock(&self.client_requests).check(client, now),
            None => lock(&self.address_requests).check(&address, now),
        };
        taken.map_err(|_| self.refused(Refusal::Requests))
    }

    /// `bytes` written by `client`.
    pub fn write(&self, client: &ClientId, bytes: usize) -> Result<(), Refusal> {
        let now = self.started.elapsed();
        lock(&self.client_bytes)
            .take(client, bytes as u64, now)
            .map_err(|_| self.refused(Refusal::Bytes))
    }

    /// A group created by `client`.
    pub fn create_group(&self, client: &ClientId) -> Result<(), Refusal> {
        let now = self.started.elapsed();
        lock(&self.client_groups)
            .check(client, now)
            .map_err(|_| self.refused(Refusal::Groups))
    }

    /// A registration from `address`: within the address's limit and the node's.
    pub fn register(&self, address: IpAddr) -> Result<(), Refusal> {
        let address = self.address_key(address);
        let now = self.started.elapsed();
        lock(&self.address_registrations)
            .check(&address, now)
            .map_err(|_| self.refused(Refusal::Registrations))?;
        lock(&self.node_registrations)
            .check(&(), now)
            .map_err(|_| self.refused(Refusal::NodeRegistrations))?;
        self.registrations.inc();
        Ok(())
    }

    /// The rooms a big request body from `client` at `address` takes its bytes from, besides
    /// its connection's and the node's.
    pub fn body_shares(&self, client: &ClientId, address: IpAddr) -> [Arc<Semaphore>; 2] {
        [
            self.client_bodies.of(client),
            self.address_bodies.of(&self.address_key(address)),
        ]
    }

    /// Counts a refusal and logs it, at most once per [`WARN_EVERY`] for each reason.
    pub fn refused(&self, reason: Refusal) -> Refusal {
        self.refusals.with_label_values(&[reason.label()]).inc();
        let mut warned = lock(&self.warned);
        let now = Instant::now();
        let (last, unlogged) = warned.entry(reason).or_insert((now - WARN_EVERY * 2, 0));
        if now.duration_since(*last) >= WARN_EVERY {
            tracing::warn!(
                reason = reason.label(),
                also_refused_since_last_warning = *unlogged,
                "refused by a limit"
            );
            *last = now;
            *unlogged = 0;
        } else {
            *unlogged += 1;
        }
        reason
    }
}

/// Room for bodies per key (a client, an address), each key with `size` bytes of its own. A
/// key's room is forgotten once no request holds it.
#[derive(Debug)]
struct Shares<K> {
    size: u32,
    rooms: Mutex<HashMap<K, Arc<Semaphore>>>,
}

impl<K: std::hash::Hash + Eq + Clone> Shares<K> {
    fn new(size: u32) -> Self {
        Self {
            size,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, key: &K) -> Arc<Semaphore> {
        let mut rooms = lock(&self.rooms);
        rooms.retain(|_, room| Arc::strong_count(room) > 1);
        rooms
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.size as usize)))
            .clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(config: GuardConfig) -> Arc<Guard> {
        Arc::new(Guard::new(config))
    }

    #[test]
    fn connections_are_limited_per_address_and_in_total_and_given_back() {
        let g = guard(GuardConfig {
            max_connections: 3,
            connections_per_address: 2,
            ..GuardConfig::default()
        });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = g.admit(a).unwrap();
        let _a2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Refusal::ConnectionsPerAddress);
        let _b1 = g.admit(b).unwrap();
        assert_eq!(g.admit(c).unwrap_err(), Refusal::Connections);
        drop(a1);
        let _c1 = g.admit(c).unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&g.refusals.collect())
            .unwrap();
        assert!(
            text.contains(r#"reason="connections_per_address"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn each_client_has_its_own_buckets() {
        let g = guard(GuardConfig {
            client_bytes: rate(100, 1.0),
            client_groups: rate(1, 0.001),
            ..GuardConfig::default()
        });
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        g.write(&[1; 32], 100).unwrap();
        assert_eq!(g.write(&[1; 32], 50).unwrap_err(), Refusal::Bytes);
        g.write(&[2; 32], 50).unwrap();
        g.create_group(&[1; 32]).unwrap();
        assert_eq!(g.create_group(&[1; 32]).unwrap_err(), Refusal::Groups);
        for _ in 0..20 {
            g.register(here).unwrap();
        }
        assert_eq!(g.register(here).unwrap_err(), Refusal::Registrations);
    }

    /// Issue 18, finding 5: 19 accounts registered from 10 addresses, and an IPv6 host has
    /// 2^64 of them. IPv6 addresses are limited by their /64, and the node by its own cap.
    #[test]
    fn an_ipv6_host_is_one_address_and_the_node_caps_registrations() {
        let g = guard(GuardConfig {
            address_registrations: rate(2, 0.001),
            node_registrations: rate(6, 0.001),
            ..GuardConfig::default()
        });
        let v6 = |a: &str| -> IpAddr { a.parse().unwrap() };
        g.register(v6("2001:db8:1:2::1")).unwrap();
        g.register(v6("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            g.register(v6("2001:db8:1:2:abcd::1")).unwrap_err(),
            Refusal::Registrations,
            "another address of the same /64"
        );
        g.register(v6("2001:db8:1:3::1")).unwrap();
        // An IPv4 host is one address, written mapped or not.
        g.register(v6("::ffff:10.0.0.1")).unwrap();
        g.register(v6("10.0.0.1")).unwrap();
        assert_eq!(
            g.register(v6("10.0.0.1")).unwrap_err(),
            Refusal::Registrations
        );
        g.register(v6("10.0.0.2")).unwrap();
        assert_eq!(
            g.register(v6("10.0.0.3")).unwrap_err(),
            Refusal::NodeRegistrations
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&g.registrations.collect())
            .unwrap();
        assert!(text.contains("mlschat_registrations_total 6"), "{text}");
        // Connections are counted per /64 too.
        let g = guard(GuardConfig {
            connections_per_address: 1,
            ..GuardConfig::default()
        });
        let _held = g.admit(v6("2001:db8::1")).unwrap();
        assert_eq!(
            g.admit(v6("2001:db8::2")).unwrap_err(),
            Refusal::ConnectionsPerAddress
        );
    }

    use prometheus::core::Collector as _;
}
