//! `mlschat`: the peer's command line. A thin shell: parse flags, open the profile, call one
//! `Profile` operation, print the result.
//!
//! MLS messages are read from and written to files and pipes as `packet` streams, so people can
//! chat by exchanging bytes with no server at all. Once a delivery node is set (`home set`),
//! groups created afterwards live there, and the same verbs go through it (`online`).

mod chat;
mod exit;
mod online;
mod output;
mod report;
#[cfg(test)]
mod schema;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use mlschat_node::daemon::{self, Answer, Call, Changed};
use mlschat_node::identity::DeviceName;
use mlschat_node::profile::{Home, Outgoing, Profile, ProfileError};
use mlschat_wire::packet::Packet;

use exit::{Exit, exit_code};
use output::Action;
use report::Report;

#[derive(Parser)]
#[command(
    name = "mlschat",
    version,
    about = "End-to-end encrypted group chat on MLS (RFC 9420)"
)]
#[command(after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    /// Where profiles live. Default: $XDG_DATA_HOME/mlschat or ~/.local/share/mlschat.
    #[arg(long, global = true, env = "MLSCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Which profile (one identity and its groups) to use.
    #[arg(
        long,
        global = true,
        env = "MLSCHAT_PROFILE",
        default_value = "default"
    )]
    profile: String,
    /// A file holding the passphrase of an encrypted profile (or set MLSCHAT_PASSPHRASE).
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    /// Output format of reports.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "text"
    )]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a profile: a new identity for this device.
    Init {
        /// Your user name, e.g. alice or alice@example.org.
        #[arg(long)]
        user: String,
        /// This device's name, e.g. laptop.
        #[arg(long, default_value = "default")]
        device: String,
        /// Encrypt the profile at rest with the passphrase (required when a passphrase is given).
        #[arg(long)]
        encrypt: bool,
    },
    /// Show this device's identity and fingerprint (with a QR code on a terminal).
    Whoami {
        /// Print the QR code even when stdout is not a terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Export a fresh KeyPackage, which lets someone add you to a group.
    Keypackage {
        /// A reusable package, handed out only when the one-time ones run out.
        #[arg(long)]
        last_resort: bool,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Create, change and inspect groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Encrypt a message for a group.
    Send {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// The text; `-` reads it from stdin.
        text: String,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Process MLS packets (messages, commits, Welcomes) from files, or stdin; or, with
    /// --follow, print what a running daemon receives, as it comes.
    Receive {
        /// Files of packets, each holding one or more (none: read stdin).
        files: Vec<PathBuf>,
        /// Follow the daemon's events instead of reading packets.
        #[arg(long, conflicts_with = "files")]
        follow: bool,
        /// With --follow: start after this event id (0: from the beginning).
        #[arg(long, default_value_t = 0, requires = "follow")]
        after: i64,
    },
    /// Show a group's history.
    History {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// How many of the latest entries to show.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Write out packets that were made but never written (after a crash).
    Outbox {
        #[command(flatten)]
        out: OutArgs,
    },
    /// Set or show the delivery node this device works through.
    #[command(subcommand)]
    Home(HomeCommand),
    /// Print your invite code (text, and a QR code on a terminal) for others to add you.
    Invite {
        /// Print the QR code even when stdout is not a terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Add, list, verify and remove contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Invitations from people who are not your contacts: they wait for your answer.
    #[command(subcommand)]
    Request(RequestCommand),
    /// Catch up with the delivery node now: new groups, messages, commits.
    Sync,
    /// What needs your attention: alerts, invitations waiting, groups that are broken or stuck,
    /// and whether the daemon is connected.
    Status {
        /// Acknowledge the alerts shown: they are not listed again.
        #[arg(long)]
        ack: bool,
    },
    /// Run the long-running node: keeps the connection, receives pushes, serves the local
    /// JSON-RPC API on a Unix socket in the profile directory.
    Daemon {
        /// Also serve the API on stdin/stdout.
        #[arg(long)]
        stdio: bool,
        /// How long a member you add may take to join (accept the invitation) before your
        /// client removes it, if you are the group's first admin.
        #[arg(long, value_name = "SECONDS", default_value_t = mlschat_node::sync::INVITE_EXPIRY)]
        invite_expiry: u64,
    },
    /// Chat from the terminal (needs a running daemon): on a terminal a full-screen chat with
    /// every group, its members and slash commands (/help); through a pipe, each line read is
    /// sent and what arrives is printed.
    Chat {
        /// The group to start in (its name, or a prefix of its id); needed through a pipe.
        group: Option<String>,
    },
}

#[derive(Subcommand)]
enum HomeCommand {
    /// Work through the delivery node at ADDRESS (host:port) whose certificate has FINGERPRINT.
    Set {
        /// The node's QUIC address, host:port.
        address: String,
        /// SHA-256 of the node's certificate, hex (`mlschat-delivery fingerprint` prints it).
        fingerprint: String,
        /// The invite token the node's operator gave you, if registration needs one.
        #[arg(long)]
        invite: Option<String>,
    },
    /// Show the delivery node.
    Show,
}

#[derive(Subcommand)]
enum ContactCommand {
    /// Add a contact from their invite code (`mlschat invite` prints one).
    Add {
        /// Their invite code (`mlschat invite` prints one).
        code: String,
    },
    /// List contacts; flagged ones need checking with their owner.
    List,
    /// Show the safety number you share with a contact, to compare with them in person or on
    /// a call; with --matches, record that it matched (a changed key under review becomes
    /// theirs, and the flag goes).
    Verify {
        /// The contact (`user/device`, or `user` when that is unambiguous).
        name: String,
        /// The safety number you compared, as shown (spaces do not matter).
        #[arg(long, value_name = "SAFETY_NUMBER")]
        matches: Option<String>,
    },
    /// Forget a contact (e.g. one whose changed key turned out not to be theirs).
    Remove {
        /// The contact (`user/device`, or `user` when that is unambiguous).
        name: String,
    },
}

#[derive(Subcommand)]
enum RequestCommand {
    /// List the invitations waiting for your answer, with who sent them.
    List,
    /// Join the group of an invitation (by group id, or a unique prefix of it).
    Accept {
        /// The invitation's group id, or a unique prefix of it (`request list` shows them).
        group: String,
    },
    /// Forget an invitation, without joining (by group id, or a unique prefix of it).
    Decline {
        /// The invitation's group id, or a unique prefix of it (`request list` shows them).
        group: String,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group with you as its only member.
    Create {
        /// Its name: yours, and on a delivery node the shared name every member sees.
        name: String,
    },
    /// Add members in one commit: contacts by name in a group on a delivery node, or
    /// KeyPackage files in a group kept in files.
    Add {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// Contacts (user/device, or user) in a group on a delivery node; KeyPackage files in a
        /// group kept in files.
        #[arg(required = true, value_name = "CONTACT_OR_KEY_PACKAGE")]
        key_packages: Vec<String>,
        #[command(flatten)]
        out: OutArgs,
        /// Where to write the Welcome (with the ratchet tree) for the new members (groups kept
        /// in files).
        #[arg(long)]
        welcome_out: Option<PathBuf>,
    },
    /// Remove members (user/device, user, fingerprint prefix or #leaf) in one commit.
    Remove {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// Members: user/device, user, a fingerprint prefix or #leaf.
        #[arg(required = true)]
        members: Vec<String>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Ask to be removed from a group; another member's next commit does it.
    Leave {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Refresh your keys in a group, committing any pending proposals.
    Update {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Change the group's shared settings, which every member sees (admins only): its name,
    /// its topic, and who else is an admin (admins add members, remove others and change
    /// these settings; every member's client refuses such a commit from anyone else).
    Set {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// The name every member sees (joiners take it as theirs).
        #[arg(long)]
        name: Option<String>,
        /// The topic every member sees.
        #[arg(long)]
        topic: Option<String>,
        /// Make this member an admin (user/device, user, fingerprint prefix or #leaf).
        #[arg(long, value_name = "MEMBER")]
        admin: Vec<String>,
        /// Make this admin an ordinary member again.
        #[arg(long, value_name = "MEMBER")]
        not_admin: Vec<String>,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Give a group a local name (only you see it), e.g. after joining one.
    Rename {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
        /// The name only you will see.
        name: String,
    },
    /// List your groups.
    List,
    /// List a group's members.
    Members {
        /// The group: its name, or its id (or a unique prefix of it).
        group: String,
    },
}

#[derive(clap::Args)]
struct OutArgs {
    /// Write the MLS packets to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

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
        if *encrypt && passphrase.is_none() {
            if !on_a_terminal() {
                // Exit 8, as for any missing passphrase.
                return Err(anyhow::Error::new(
                    mlschat_node::store::StoreError::PassphraseRequired,
                )
                .context(
                    "--encrypt needs a passphrase: set MLSCHAT_PASSPHRASE or --passphrase-file",
                ));
            }
            let first = prompt_passphrase("passphrase for the new profile: ")?;
            if prompt_passphrase("the same passphrase again: ")? != first {
                bail!("the two passphrases differ: nothing was created");
            }
            passphrase = Some(first);
        }
        let name = DeviceName::new(user, device)?;
        let pass = if *encrypt {
            passphrase.as_deref()
        } else {
            None
        };
        let profile = Profile::create(&dir, name, pass)
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

    match cli.command {
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
                    ProfileError::WrongKind(
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
            &dir,
            daemon::Options {
                stdio,
                invite_expiry,
            },
        )?,
        Command::Keypackage { last_resort, out } => {
            let message = profile.new_key_package(last_resort)?;
            write_packets(&out, &[Packet::Mls(message)])?;
            let (one_time, has_last_resort) = profile.key_package_stock()?;
            report.key_package(&out, last_resort, one_time, has_last_resort);
        }
        Command::Group(command) => return group(&mut profile, &report, command),
        Command::Send { group, text, out } => {
            let outgoing = profile.send(&group, &text)?;
            deliver(&profile, &out, None, &outgoing)?;
            report.sent(&out, &group, &outgoing);
        }
        Command::Receive { files, .. } => return receive(&mut profile, &report, &files),
        Command::Outbox { out } => {
            let unsent = profile.unsent()?;
            let packets: Vec<Packet> = unsent.iter().map(|u| u.packet.clone()).collect();
            write_packets(&out, &packets)?;
            profile.mark_sent(&unsent.iter().map(|u| u.seq).collect::<Vec<_>>())?;
            report.outbox(&out, &unsent);
        }
    }
    Ok(Exit::Ok)
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

fn group(profile: &mut Profile, report: &Report, command: GroupCommand) -> anyhow::Result<Exit> {
    match command {
        GroupCommand::Create { name } => report.group_created(&profile.create_group(&name)?),
        GroupCommand::Add {
            group,
            key_packages,
            out,
            welcome_out,
        } => {
            let welcome_out = welcome_out.context(
                "this group is kept in files: give --welcome-out FILE for the new members' Welcome",
            )?;
            let mut messages = Vec::new();
            for path in &key_packages {
                messages.push(read_key_package(Path::new(path))?);
            }
            let outgoing = profile.add_members(&group, &messages)?;
            deliver(profile, &out, Some(&welcome_out), &outgoing)?;
            report.committed(&out, &group, Action::Added, key_packages.len());
        }
        GroupCommand::Remove {
            group,
            members,
            out,
        } => {
            let outgoing = profile.remove_members(&group, &members)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Removed, members.len());
        }
        GroupCommand::Leave { group, out } => {
            let outgoing = profile.leave(&group)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Left, 1);
        }
        GroupCommand::Update { group, out } => {
            let outgoing = profile.self_update(&group)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Updated, 1);
        }
        GroupCommand::Set {
            group,
            name,
            topic,
            admin,
            not_admin,
            out,
        } => {
            let change = profile.settings_change(&group, name, topic, &admin, &not_admin)?;
            let outgoing = profile.change_settings(&group, &change)?;
            deliver(profile, &out, None, &outgoing)?;
            report.committed(&out, &group, Action::Changed, 1);
        }
        GroupCommand::List | GroupCommand::Members { .. } | GroupCommand::Rename { .. } => {
            unreachable!("answered by `daemon::local`")
        }
    }
    Ok(Exit::Ok)
}

/// How many packets `receive` processes per transaction (and fsync).
const RECEIVE_BATCH: usize = 64;

/// Processes every packet of every input, in batches that share one transaction; a bad packet
/// is reported and the others still processed. Results are printed once their batch is durable.
/// The exit code is that of the first failure.
fn receive(profile: &mut Profile, report: &Report, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let mut inputs: Vec<(String, Box<dyn Read>)> = Vec::new();
    if files.is_empty() {
        inputs.push(("stdin".into(), Box::new(io::stdin().lock())));
    }
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        inputs.push((
            path.display().to_string(),
            Box::new(io::BufReader::new(file)),
        ));
    }
    let mut first_failure = Exit::Ok;
    let mut fail = |error: anyhow::Error| {
        let code = exit_code(&error);
        report::error(report.json, &error, code);
        first_failure = first_failure.or(code);
    };
    for (source, mut input) in inputs {
        let mut end = false;
        while !end {
            let mut batch = Vec::with_capacity(RECEIVE_BATCH);
            let mut read_error = None;
            while batch.len() < RECEIVE_BATCH {
                match Packet::read_from(&mut input) {
                    Ok(Some(packet)) => batch.push(packet),
                    Ok(None) => {
                        end = true;
                        break;
                    }
                    Err(e) => {
                        read_error = Some(anyhow!(e).context(format!("reading {source}")));
                        end = true;
                        break;
                    }
                }
            }
            for result in profile.receive_batch(&batch)? {
                match result {
                    Ok(received) => report.received(&received),
                    Err(e) => fail(anyhow!(e)),
                }
            }
            if let Some(error) = read_error {
                fail(error);
            }
        }
    }
    Ok(first_failure)
}

/// Writes an operation's packets, then drops them from the outbox. If we die in between, they
/// stay in the outbox for `mlschat outbox`.
fn deliver(
    profile: &Profile,
    out: &OutArgs,
    welcome_out: Option<&Path>,
    outgoing: &Outgoing,
) -> anyhow::Result<()> {
    write_packets(out, &outgoing.to_group)?;
    if let (Some(path), Some(join)) = (welcome_out, &outgoing.to_joiners) {
        write_file(path, &join.encode()?)?;
    }
    profile.mark_sent(&outgoing.outbox)?;
    Ok(())
}

fn write_packets(out: &OutArgs, packets: &[Packet]) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    for packet in packets {
        bytes.extend(packet.encode()?);
    }
    match &out.out {
        Some(path) => write_file(path, &bytes),
        None => {
            let mut stdout = io::stdout().lock();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write binary MLS packets to a terminal: use --out FILE or a pipe"
                );
            }
            stdout.write_all(&bytes)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// Writes via a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn read_key_package(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match Packet::read_from(&mut io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?
    {
        Some(Packet::Mls(message)) => Ok(message),
        _ => bail!("{} does not hold a KeyPackage", path.display()),
    }
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
        return Err(ProfileError::WrongKind(format!(
            "{address:?} is not an address: give HOST:PORT, e.g. 127.0.0.1:4433 or \
             chat.example.org:4433"
        ))
        .into());
    }
    if let Err(e) = address.to_socket_addrs() {
        return Err(
            ProfileError::WrongKind(format!("cannot find the host of {address}: {e}")).into(),
        );
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
