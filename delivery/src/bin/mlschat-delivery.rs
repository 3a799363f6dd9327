//! `mlschat-delivery`: the delivery node. Parses flags, sets up logging, loads the layered
//! configuration and calls `run` until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mlschat_delivery::config::Config;
use mlschat_delivery::run;

#[derive(Parser)]
#[command(name = "mlschat-delivery", version, about = "mlschat delivery node")]
struct Cli {
    /// TOML configuration file; MLSCHAT__SECTION__KEY variables and flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// QUIC listen address (server.listen).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Admin HTTP address (server.admin).
    #[arg(long, global = true)]
    admin: Option<std::net::SocketAddr>,
    /// Directory for the certificate and the SQLite database (server.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Postgres URL (database.url); without one, SQLite in the data directory.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Run,
    /// Print the SHA-256 fingerprint of the node's certificate, which clients pin.
    Fingerprint,
    /// Print the token that changes on the admin port need (made on first use).
    AdminToken,
}

fn main() -> anyhow::Result<()> {
    // Nothing the node writes (database, key, token) is for other users of this machine.
    restrict_new_files();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let text = match &cli.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let mut config = Config::load(&text, std::env::vars())?;
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = cli.admin {
        config.server.admin = admin;
    }
    if let Some(dir) = cli.data_dir {
        config.server.data_dir = dir;
    }
    if let Some(url) = cli.database_url {
        // An empty URL is a variable that was not set (`--database-url "$DATABASE_URL"`): not
        // a request for SQLite.
        if url.trim().is_empty() {
            anyhow::bail!(
                "--database-url is empty (is DATABASE_URL set?): give postgres://USER@HOST/DB, \
                 or leave the flag out for SQLite"
            );
        }
        config.database.url = url;
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Fingerprint => {
            let Some(cert) = run::existing_certificate(&config)? else {
                anyhow::bail!(
                    "no certificate in {}: start the node there once (it makes one), or check \
                     the path",
                    config.server.data_dir.display()
                );
            };
            println!("{}", hex::encode(cert.fingerprint()));
            Ok(())
        }
        Command::AdminToken => {
            println!("{}", run::admin_token(&config)?);
            Ok(())
        }
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run::run(config, shutdown_signal(), |started| {
                // One line on stdout for scripts and tests; logs go to stderr.
                println!(
                    "listening quic={} admin={} fingerprint={}",
                    started.quic,
                    started.admin,
                    hex::encode(started.fingerprint)
                );
            })),
    }
}

#[allow(unsafe_code)] // umask(2) has no safe wrapper in std; it cannot fail.
fn restrict_new_files() {
    // SAFETY: umask only swaps the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
