//! The node's Prometheus metrics. Labels are bounded: request kind and result code, never ids.

use mlschat_wire::Request;

#[derive(Debug)]
pub(super) struct Metrics {
    pub(super) registry: prometheus::Registry,
    pub(super) requests: prometheus::IntCounterVec,
    pub(super) latency: prometheus::HistogramVec,
    pub(super) connections: prometheus::IntGauge,
    pub(super) stored_bytes: prometheus::IntGauge,
    pub(super) key_packages: prometheus::IntGauge,
    /// Welcomes of accepted commits that were not delivered (a full mailbox, or a second
    /// waiting Welcome from one last-resort claim).
    pub(super) undelivered_welcomes: prometheus::IntCounter,
}

impl Metrics {
    pub(super) fn new(guard: Vec<Box<dyn prometheus::core::Collector>>) -> Self {
        let registry = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new("mlschat_requests_total", "Requests by kind and result"),
            &["kind", "result"],
        )
        .expect("valid metric");
        let latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("mlschat_request_seconds", "Request latency by kind")
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["kind"],
        )
        .expect("valid metric");
        let connections = prometheus::IntGauge::new("mlschat_connections", "Open QUIC connections")
            .expect("valid metric");
        let gauge =
            |name: &str, help: &str| prometheus::IntGauge::new(name, help).expect("valid metric");
        let stored_bytes = gauge(
            "mlschat_stored_bytes",
            "Bytes the database holds (Postgres database size, or SQLite file pages)",
        );
        let key_packages = gauge(
            "mlschat_key_packages",
            "Unexpired one-time KeyPackages in stock, all owners",
        );
        let undelivered_welcomes = prometheus::IntCounter::new(
            "mlschat_undelivered_welcomes_total",
            "Welcomes of accepted commits left out: a full mailbox, or one waiting already from \
             the same last-resort claim",
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(undelivered_welcomes.clone()),
            Box::new(latency.clone()),
            Box::new(connections.clone()),
            Box::new(stored_bytes.clone()),
            Box::new(key_packages.clone()),
        ]
        .into_iter()
        .chain(guard)
        {
            registry.register(metric).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            connections,
            stored_bytes,
            key_packages,
            undelivered_welcomes,
        }
    }
}

/// The metric label of a request: its kind, one of a fixed set.
pub(super) fn kind(request: &Request) -> &'static str {
    match request {
        Request::Challenge => "challenge",
        Request::Register(_) => "register",
        Request::Authenticate(_) => "authenticate",
        Request::PublishKeyPackages(_) => "publish_key_packages",
        Request::ClaimKeyPackage { .. } => "claim_key_package",
        Request::ClaimKeyPackages { .. } => "claim_key_packages",
        Request::KeyPackageStock => "key_package_stock",
        Request::ClaimLog { .. } => "claim_log",
        Request::CreateGroup(_) => "create_group",
        Request::PostCommit(_) => "post_commit",
        Request::PostMessage(_) => "post_message",
        Request::FetchGroup(_) => "fetch_group",
        Request::FetchTree(_) => "fetch_tree",
        Request::Subscribe(_) => "subscribe",
        Request::PostNotice(_) => "post_notice",
        Request::FetchMailbox { .. } => "fetch_mailbox",
        Request::AckMailbox { .. } => "ack_mailbox",
    }
}
