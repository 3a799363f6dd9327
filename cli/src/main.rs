//! `mlschat`: the peer's command line. A thin shell: parse flags, open the profile, call one
//! `Profile` operation, print the result.
//!
//! MLS messages are read from and written to files and pipes as `packet` streams, so people can
//! chat by exchanging bytes with no server at all (`files.rs`). Once a delivery node is set
//! (`home set`), groups created afterwards live there, and the same verbs go through the
//! daemon's API (`online.rs`). `args.rs` is the command line, `report.rs` and `output.rs` what
//! is printed, `chat/` the terminal chat.

mod args;
mod chat;
mod exit;
mod files;
mod online;
mod output;
mod report;
#[cfg(test)]
mod schema;

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use mlschat_node::daemon::{self, Answer, Call, Changed};
use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{Home, Profile, ProfileError};
use mlschat_wire::packet::Packet;

use args::{Cli, Command, Format, GroupCommand, HomeCommand};
use exit::{Exit, exit_code};
use report::Report;

fn main() {
    let cli = Cli::parse();
    let json = cli.format == Format::Json;
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => {
            let code = exit_code(&error);
            report::error(json, &error, code);
            code
        }
    };
    std::process::exit(code as i32);
}

/// Logs go to stderr, filtered by `RUST_LOG` (warnings by default); a daemon also writes them,
/// at `info` unless `RUST_LOG` says otherwise, to `daemon.log` in its profile directory.
fn init_logging(daemon_log: Option<&Path>) {
    use tracing_subscriber::{EnvFilter, Layer as _, fmt, layer::SubscriberExt as _};
    let filter = |default: &str| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    };
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter("warn"));
    let file = daemon_log.and_then(|path| {
        let mut options = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| eprintln!("cannot write the log file {}: {e}", path.display()))
            .ok()?;
        Some(
            fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_filter(filter("info")),
        )
    });
    let subscriber = tracing_subscriber::registry().with(stderr).with(file);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn run(mut cli: Cli) -> anyhow::Result<Exit> {
    // `send GROUP -` reads the text from stdin, whichever way the text then goes.
    if let Command::Send { text, .. } = &mut cli.command
        && text == "-"
    {
        let mut buf = String::new();
        io::stdin()
            .read_to_string(&mut buf)
            .context("reading stdin")?;
        *text = buf.trim_end_matches('\n').to_owned();
    }
    let dir = profile_dir(cli.data_dir.as_deref(), &cli.profile)?;
    let daemon_log = matches!(cli.command, Command::Daemon { .. }).then(|| dir.join("daemon.log"));
    init_logging(daemon_log.as_deref());
    let mut passphrase = passphrase(cli.passphrase_file.as_deref())?;
    let report = Report::new(cli.format == Format::Json);

    if let Command::Init {
        user,
        device,
        encrypt,
    } = &cli.command
    {
        let passphrase = match (*encrypt, passphrase) {
            (true, None) => Some(new_passphrase()?),
            (true, given) => given,
            (false, _) => None,
        };
        let name = DeviceName::new(user, device)?;
        let profile = Profile::create(&dir, name, passphrase.as_deref())
            .with_context(|| format!("creating profile in {}", dir.display()))?;
        let whoami = daemon::whoami(&profile).map_err(online::refusal)?;
        report.answer(&Answer::Whoami(whoami));
        return Ok(Exit::Ok);
    }

    // An unknown profile is one failure, whichever way the verb would have gone.
    mlschat_node::store::Store::exists(&dir)?;
    match &cli.command {
        Command::Chat { group } => {
            return chat::chat(&dir, &report, group.as_deref()).map(|()| Exit::Ok);
        }
        Command::Receive {
            follow: true,
            after,
            ..
        } => return online::follow(&dir, &report, *after).map(|()| Exit::Ok),
        _ => {}
    }

    // A running daemon owns the profile (it has the passphrase): verbs with an API form go
    // through it.
    let call = online::call_for(&cli.command);
    if passphrase.is_none()
        && mlschat_node::store::Store::is_encrypted(&dir)
        && on_a_terminal()
        && !(call.is_some() && online::daemon_serves(&dir))
    {
        passphrase = Some(prompt_passphrase(&format!(
            "passphrase for profile {}: ",
            cli.profile
        ))?);
    }
    let daemon = matches!(cli.command, Command::Daemon { .. });
    let answer =
        |answer: &Answer| answered(&cli.command, &report, (&dir, passphrase.as_deref()), answer);
    let mut profile = match online::open(&dir, passphrase.as_deref(), call.as_ref(), daemon)? {
        online::Opened::Here(profile) => *profile,
        online::Opened::ByDaemon(answered) => return answer(&answered),
    };
    // Test hook for the crash-safety tests: die as a crash would after the n-th row written.
    if let Some(n) = std::env::var("MLSCHAT_CRASH_AFTER_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        profile.store().crash_after_writes(n);
    }

    if let Some(call) = call {
        if online::goes_online(&mut profile, &cli.command)? {
            return answer(&online::here(profile, call)?);
        }
        if let Some(answered) = daemon::local(&mut profile, &call).map_err(online::refusal)? {
            drop(profile);
            return answer(&answered);
        }
    }

    without_api(profile, cli.command, &dir, &report)
}

/// Carries out a verb that has no API form (or one of a group kept in files) here.
fn without_api(
    mut profile: Profile,
    command: Command,
    dir: &Path,
    report: &Report,
) -> anyhow::Result<Exit> {
    match command {
        Command::Init { .. } => unreachable!("handled above"),
        Command::Chat { .. } => unreachable!("handled above"),
        Command::Home(HomeCommand::Set {
            address,
            fingerprint,
            invite,
        }) => {
            check_address(&address)?;
            let fingerprint = hex::decode(fingerprint.trim())
                .ok()
                .and_then(|f| <[u8; 32]>::try_from(f).ok())
                .ok_or_else(|| {
                    ProfileError::Input(
                        "the fingerprint must be 64 hex digits (SHA-256 of the certificate: \
                         `mlschat-delivery fingerprint` prints it)"
                            .into(),
                    )
                })?;
            let home = Home {
                address,
                fingerprint,
                invite: invite.unwrap_or_default().into_bytes(),
            };
            profile.set_home(&home)?;
            let answer = daemon::local(&mut profile, &Call::Home {})
                .map_err(online::refusal)?
                .expect("a local method");
            report.answer(&answer);
        }
        Command::Contact(_)
        | Command::Invite { .. }
        | Command::Request(_)
        | Command::History { .. }
        | Command::Whoami { .. }
        | Command::Status { .. }
        | Command::Home(HomeCommand::Show) => {
            unreachable!("answered by `daemon::local`")
        }
        Command::Sync => unreachable!("always online"),
        Command::Daemon {
            stdio,
            invite_expiry,
        } => online::run_daemon(
            profile,
            dir,
            daemon::Options {
                stdio,
                invite_expiry,
            },
        )?,
        Command::Keypackage { last_resort, out } => {
            let message = profile.new_key_package(last_resort)?;
            files::write_packets(&out, &[Packet::Mls(message)])?;
            let (one_time, has_last_resort) = profile.key_package_stock()?;
            report.key_package(&out, last_resort, one_time, has_last_resort);
        }
        Command::Group(command) => return files::group(&mut profile, report, command),
        Command::Send { group, text, out } => {
            let outgoing = profile.send(&profile.find_group(&group)?, &text)?;
            files::deliver(&profile, &out, None, &outgoing)?;
            report.sent(&out, &group, &outgoing);
        }
        Command::Receive { files: inputs, .. } => {
            return files::receive(&mut profile, report, &inputs);
        }
        Command::Outbox { out } => {
            let unsent = profile.unsent()?;
            let packets: Vec<Packet> = unsent.iter().map(|u| u.packet.clone()).collect();
            files::write_packets(&out, &packets)?;
            profile.mark_sent(&unsent.iter().map(|u| u.seq).collect::<Vec<_>>())?;
            report.outbox(&out, &unsent);
        }
    }
    Ok(Exit::Ok)
}

/// A passphrase for a new profile, typed twice.
fn new_passphrase() -> anyhow::Result<String> {
    if !on_a_terminal() {
        // Exit 8, as for any missing passphrase.
        return Err(
            anyhow::Error::new(mlschat_node::store::StoreError::PassphraseRequired).context(
                "--encrypt needs a passphrase: set MLSCHAT_PASSPHRASE or --passphrase-file",
            ),
        );
    }
    let first = prompt_passphrase("passphrase for the new profile: ")?;
    if prompt_passphrase("the same passphrase again: ")? != first {
        bail!("the two passphrases differ: nothing was created");
    }
    Ok(first)
}

/// Prints the answer of a verb's API method, and does what the verb does after it.
fn answered(
    command: &Command,
    report: &Report,
    (dir, passphrase): (&Path, Option<&str>),
    answer: &Answer,
) -> anyhow::Result<Exit> {
    match (command, answer) {
        (Command::Invite { qr }, Answer::Invite(invite)) => {
            report.invite(invite, *qr || io::stdout().is_terminal())?;
        }
        (Command::Whoami { qr }, Answer::Whoami(who)) => {
            report.answer(answer);
            if *qr || io::stdout().is_terminal() {
                report.whoami_qr(who)?;
            }
        }
        (Command::Status { ack: true }, Answer::Status(status)) => {
            report.answer(answer);
            if let Some(last) = status.alerts.last() {
                let up_to = Some(last.id);
                online::ask_local(dir, passphrase, Call::AlertsAck { up_to })?;
            }
        }
        // What the group is now, admins included.
        (Command::Group(GroupCommand::Set { group, .. }), Answer::SettingsChanged(changed))
            if !report.json =>
        {
            report.answer(answer);
            let group = match changed {
                Changed::Group(summary) => summary.id.clone(),
                Changed::Queued(_) => group.clone(),
            };
            if let Answer::Members(members) =
                online::ask_local(dir, passphrase, Call::Members { group })?
            {
                let admins: Vec<&str> = members
                    .iter()
                    .filter(|m| m.admin)
                    .filter_map(|m| m.name.as_deref())
                    .collect();
                println!("admins: {}", admins.join(", "));
            }
        }
        _ => report.answer(answer),
    }
    Ok(Exit::Ok)
}

fn profile_dir(data_dir: Option<&Path>, profile: &str) -> anyhow::Result<PathBuf> {
    if profile.is_empty() || profile.contains(['/', '\\']) || profile.starts_with('.') {
        bail!("invalid profile name {profile:?}");
    }
    let base = match data_dir {
        Some(dir) => dir.to_owned(),
        None => match std::env::var_os("XDG_DATA_HOME") {
            Some(xdg) if !xdg.is_empty() => PathBuf::from(xdg).join("mlschat"),
            _ => {
                PathBuf::from(std::env::var_os("HOME").context("HOME is not set; use --data-dir")?)
                    .join(".local/share/mlschat")
            }
        },
    };
    Ok(base.join(profile))
}

/// A delivery node's address must be HOST:PORT and name a host that resolves.
fn check_address(address: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs as _;
    let port = address
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port.parse::<u16>().ok()?));
    if port.is_none_or(|p| p == 0) {
        return Err(ProfileError::Input(format!(
            "{address:?} is not an address: give HOST:PORT, e.g. 127.0.0.1:4433 or \
             chat.example.org:4433"
        ))
        .into());
    }
    if let Err(e) = address.to_socket_addrs() {
        return Err(ProfileError::Input(format!("cannot find the host of {address}: {e}")).into());
    }
    Ok(())
}

/// Whether a person is at the keyboard to answer a prompt.
fn on_a_terminal() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Reads a passphrase typed on the terminal, without showing it. Esc or Ctrl-C gives up.
fn prompt_passphrase(prompt: &str) -> anyhow::Result<String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use ratatui::crossterm::terminal;
    eprint!("{prompt}");
    io::stderr().flush()?;
    terminal::enable_raw_mode().context("reading the passphrase from the terminal")?;
    let typed = (|| -> io::Result<Option<String>> {
        let mut text = String::new();
        loop {
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Enter => return Ok(Some(text)),
                KeyCode::Esc => return Ok(None),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(None);
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
        }
    })();
    let _ = terminal::disable_raw_mode();
    eprintln!();
    match typed? {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(mlschat_node::store::StoreError::PassphraseRequired.into()),
    }
}

fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading passphrase file {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(std::env::var("MLSCHAT_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty()))
}
