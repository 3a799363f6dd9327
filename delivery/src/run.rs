//! Starting and stopping a node: database and migrations, certificate, QUIC endpoint, admin
//! HTTP; and on shutdown a drain: no new connections, requests in flight answered, then close.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::admin;
use crate::certificate::NodeCertificate;
use crate::config::{Config, LimitsSection};
use crate::server::{Node, serve};
use crate::storage::{Cuts, Database, GroupLog, Purged};

/// A node that is up: where it listens and the certificate fingerprint clients pin.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub fingerprint: [u8; 32],
}

/// Runs a node until `shutdown` completes, then drains it. `on_start` is told where it listens.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_start: impl FnOnce(Started),
) -> anyhow::Result<()> {
    private_dir(&config.server.data_dir)?;
    let db = if config.database.url.is_empty() {
        Database::sqlite(&config.server.data_dir.join("delivery.db")).await
    } else {
        Database::postgres(&config.database.url, config.database.max_connections).await
    }
    .context("opening the database")?;
    let cert = certificate(&config)?;
    let token = admin_token(&config)?;
    let mut server_config = cert.server_config()?;
    server_config.transport_config(Arc::new(transport(&config.limits)));
    let endpoint = quinn::Endpoint::server(server_config, config.server.listen)
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let node = Arc::new(Node::new(db, config.node()));
    let admin = tokio::net::TcpListener::bind(config.server.admin)
        .await
        .with_context(|| format!("admin listener on {}", config.server.admin))?;
    let started = Started {
        quic: endpoint.local_addr()?,
        admin: admin.local_addr()?,
        fingerprint: cert.fingerprint(),
    };
    tracing::info!(quic = %started.quic, admin = %started.admin,
        fingerprint = %hex::encode(started.fingerprint), backend = node.database().backend(), "node up");
    on_start(started);

    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(
        axum::serve(admin, admin::routes(node.clone(), started.admin, token))
            .with_graceful_shutdown(async {
                let _ = admin_stopped.await;
            })
            .into_future(),
    );
    let serving = tokio::spawn(serve(endpoint.clone(), node.clone()));
    let purging = tokio::spawn(purge(node.clone(), config.limits.clone()));
    let counting = tokio::spawn(refresh_totals(
        node.clone(),
        Duration::from_secs(config.server.totals_refresh_seconds.max(1)),
    ));
    let listening = tokio::spawn(crate::announce::listen(
        node.database().clone(),
        node.fanout(),
        node.origin(),
    ));

    shutdown.await;
    tracing::info!("draining");
    // No new connections; requests already read are answered, later ones refused.
    endpoint.set_server_config(None);
    let drain = Duration::from_secs(config.server.drain_seconds);
    if tokio::time::timeout(drain, node.drain()).await.is_err() {
        tracing::warn!("drain timed out; closing with requests in flight");
    }
    endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    serving.abort();
    purging.abort();
    counting.abort();
    listening.abort();
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// QUIC limits: how long a silent connection lives, how many requests it may have open, and
/// how much unread data it may send ahead (so that stalled streams cannot pile up in buffers).
pub fn transport(limits: &LimitsSection) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    transport.max_idle_timeout(idle.try_into().ok());
    transport.max_concurrent_bidi_streams(limits.streams_per_connection.into());
    // Pushes go from the node on streams it opens; clients open none of their own.
    transport.max_concurrent_uni_streams(0u32.into());
    transport.stream_receive_window((1u32 << 20).into());
    transport.receive_window((4u32 << 20).into());
    transport
}

/// Every `period`, refreshes the metrics that need a query (a scrape never waits on one).
async fn refresh_totals(node: Arc<Node>, period: Duration) {
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        if let Err(e) = node.refresh_totals().await {
            tracing::warn!(error = %e, "counting stored bytes and KeyPackages failed");
        }
    }
}

/// Hourly, deletes what the retention periods are over for.
async fn purge(node: Arc<Node>, limits: LimitsSection) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let now = crate::unix_now();
        let days = |n: u64| now.saturating_sub(n * 86_400);
        let cuts = Cuts {
            log_before: days(limits.log_retention_days),
            mailbox_before: days(limits.mailbox_retention_days),
            tree_grace: days(1),
        };
        match node.database().purge(cuts).await {
            Ok(purged) if purged == Purged::default() => {}
            Ok(purged) => tracing::info!(?purged, "deleted what is past retention"),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }
}

/// The data directory, made if missing, and closed to everyone but us (0700): it holds the
/// database, the certificate's key and the admin token.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// The token that authorises changes on the admin port: configured (`server.admin_token`), or
/// generated on first start and kept in `data_dir/admin-token` (0600).
pub fn admin_token(config: &Config) -> anyhow::Result<String> {
    if !config.server.admin_token.is_empty() {
        return Ok(config.server.admin_token.clone());
    }
    let path = config.server.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    private_dir(&config.server.data_dir)?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("the OS random source: {e}"))?;
    let token = hex::encode(random);
    write_private(&path, token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// The configured certificate, or the one generated on first start and kept in `data_dir`.
pub fn certificate(config: &Config) -> anyhow::Result<NodeCertificate> {
    if let Some(existing) = existing_certificate(config)? {
        return Ok(existing);
    }
    let dir = &config.server.data_dir;
    let key_path = dir.join("node-key.der");
    let cert_path = dir.join("node-cert.der");
    let cert = NodeCertificate::self_signed("mlschat-delivery")?;
    std::fs::create_dir_all(dir)?;
    write_private(&key_path, cert.key.secret_pkcs8_der())?;
    std::fs::write(&cert_path, cert.cert.as_ref())?;
    tracing::info!(fingerprint = %hex::encode(cert.fingerprint()), "generated a self-signed certificate");
    Ok(cert)
}

/// The configured certificate, or the one a first start left in `data_dir`; `None` if neither
/// exists (a node makes one when it starts; asking for a fingerprint does not).
pub fn existing_certificate(config: &Config) -> anyhow::Result<Option<NodeCertificate>> {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        return load_pem(cert, key).map(Some);
    }
    let dir = &config.server.data_dir;
    let (cert_path, key_path) = (dir.join("node-cert.der"), dir.join("node-key.der"));
    if cert_path.exists() && key_path.exists() {
        return Ok(Some(NodeCertificate {
            cert: CertificateDer::from(std::fs::read(&cert_path)?),
            key: PrivatePkcs8KeyDer::from(std::fs::read(&key_path)?),
        }));
    }
    Ok(None)
}

fn load_pem(cert: &Path, key: &Path) -> anyhow::Result<NodeCertificate> {
    use rustls::pki_types::pem::PemObject;
    Ok(NodeCertificate {
        cert: CertificateDer::from_pem_file(cert)
            .with_context(|| format!("reading certificate {}", cert.display()))?,
        key: PrivatePkcs8KeyDer::from_pem_file(key)
            .with_context(|| format!("reading key {}", key.display()))?,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
