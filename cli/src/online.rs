//! The CLI's verbs that go through a delivery node. Each is one call of the daemon's API
//! (`mlschat_node::daemon::Call`): a running daemon carries it out; without one, this process
//! connects, catches up, carries out the same method and disconnects. Either way the answer is
//! the same JSON, printed here.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mlschat_node::daemon::{self, Answer, Call, client::CallError, client::DaemonClient};
use mlschat_node::profile::Event;
use mlschat_node::profile::{Profile, ProfileError};
use mlschat_node::store::StoreError;

use crate::Report;
use crate::args::{Command, ContactCommand, GroupCommand, HomeCommand, RequestCommand};
use mlschat_node::kind::ErrorKind;

/// A refusal from a daemon call, with the kind that decides the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub kind: ErrorKind,
    pub message: String,
}

pub fn refused(e: CallError) -> anyhow::Error {
    match e {
        CallError::Refused { kind, message } => Refused { kind, message }.into(),
        other => anyhow::Error::new(other).context("talking to the daemon"),
    }
}

/// The API call of a verb that has one.
pub fn call_for(command: &Command) -> Option<Call> {
    let group = |group: &String| group.clone();
    Some(match command {
        Command::Send { group, text, .. } => Call::Send {
            group: group.clone(),
            text: text.clone(),
        },
        Command::Sync => Call::Sync {},
        Command::History { group, limit } => Call::History {
            group: group.clone(),
            limit: *limit,
        },
        Command::Whoami { .. } => Call::Whoami {},
        Command::Invite { .. } => Call::Invite {},
        Command::Home(HomeCommand::Show) => Call::Home {},
        Command::Status { .. } => Call::Status {},
        Command::Group(GroupCommand::Rename { group, name }) => Call::GroupRename {
            group: group.clone(),
            name: name.clone(),
        },
        Command::Group(GroupCommand::List) => Call::Groups {},
        Command::Group(GroupCommand::Members { group: g }) => Call::Members { group: group(g) },
        Command::Contact(contact) => match contact {
            ContactCommand::Add { code } => Call::ContactAdd { code: code.clone() },
            ContactCommand::List => Call::Contacts {},
            ContactCommand::Verify { name, matches } => Call::ContactVerify {
                name: name.clone(),
                matches: matches.clone(),
            },
            ContactCommand::Remove { name } => Call::ContactRemove { name: name.clone() },
        },
        Command::Request(request) => match request {
            RequestCommand::List => Call::Requests {},
            RequestCommand::Accept { group: g } => Call::RequestAccept { group: group(g) },
            RequestCommand::Decline { group: g } => Call::RequestDecline { group: group(g) },
        },
        Command::Group(GroupCommand::Create { name }) => Call::GroupCreate { name: name.clone() },
        Command::Group(GroupCommand::Add {
            group: g,
            key_packages,
            ..
        }) => Call::GroupAdd {
            group: group(g),
            who: key_packages.clone(),
        },
        Command::Group(GroupCommand::Remove {
            group: g, members, ..
        }) => Call::GroupRemove {
            group: group(g),
            who: members.clone(),
        },
        Command::Group(GroupCommand::Update { group: g, .. }) => {
            Call::GroupUpdate { group: group(g) }
        }
        Command::Group(GroupCommand::Leave { group: g, .. }) => {
            Call::GroupLeave { group: group(g) }
        }
        Command::Group(GroupCommand::Set {
            group: g,
            name,
            topic,
            admin,
            not_admin,
            ..
        }) => Call::GroupSet {
            group: group(g),
            name: name.clone(),
            topic: topic.clone(),
            admin: admin.clone(),
            not_admin: not_admin.clone(),
        },
        _ => return None,
    })
}

/// Whether, with no daemon running, this verb goes to the delivery node rather than to files:
/// for hosted groups, for new groups once a delivery node is set, and for `sync`.
pub fn goes_online(profile: &mut Profile, command: &Command) -> anyhow::Result<bool> {
    let hosted = |profile: &mut Profile, group: &str| -> anyhow::Result<bool> {
        Ok(profile.is_hosted(&profile.find_group(group)?)?)
    };
    Ok(match command {
        Command::Sync => true,
        Command::Contact(_) => false,
        // A decline joins to ask to leave, so that the inviter learns it.
        Command::Request(request) => !matches!(request, RequestCommand::List),
        Command::Group(GroupCommand::Create { .. }) => profile.home()?.is_some(),
        Command::Send { group, .. }
        | Command::Group(
            GroupCommand::Add { group, .. }
            | GroupCommand::Remove { group, .. }
            | GroupCommand::Update { group, .. }
            | GroupCommand::Leave { group, .. }
            | GroupCommand::Set { group, .. },
        ) => hosted(profile, group)?,
        _ => false,
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Makes `call` on the profile's running daemon; `None` when no daemon runs.
pub fn via_daemon(dir: &Path, call: &Call) -> anyhow::Result<Option<Answer>> {
    runtime()?.block_on(async {
        let Some(mut client) = DaemonClient::connect(dir).await else {
            return Ok(None);
        };
        client.call(call).await.map(Some).map_err(refused)
    })
}

/// Whether a daemon serves the profile's API now.
pub fn daemon_serves(dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(daemon::socket_path(dir)).is_ok()
}

/// How long a verb waits for another process that holds the profile (another verb, or a
/// daemon that is starting) before it gives up.
const HOLDER_WAIT: Duration = Duration::from_secs(30);

/// How long a verb that needs a daemon waits for one to appear when no process holds the
/// profile yet.
const DAEMON_START: Duration = Duration::from_secs(3);

/// The profile opened as its one writer, or the answer of the daemon that holds it.
pub enum Opened {
    Here(Box<Profile>),
    ByDaemon(Box<Answer>),
}

/// Opens the profile to write it here; or, while a daemon holds it, asks the daemon (`call`, a
/// verb's API method). A process that holds the profile without serving it (another verb, a
/// daemon starting) is waited for; a verb with no API form (`daemon` for a second daemon) is
/// refused at once beside a daemon.
pub fn open(
    dir: &Path,
    passphrase: Option<&str>,
    call: Option<&Call>,
    daemon: bool,
) -> anyhow::Result<Opened> {
    let deadline = Instant::now() + HOLDER_WAIT;
    loop {
        if let Some(call) = call
            && let Some(answer) = via_daemon(dir, call)?
        {
            return Ok(Opened::ByDaemon(Box::new(answer)));
        }
        let pid = match Profile::open(dir, passphrase) {
            Ok(profile) => return Ok(Opened::Here(Box::new(profile))),
            Err(ProfileError::Store(StoreError::InUse(pid))) => pid,
            Err(e) => return Err(e.into()),
        };
        let serving = daemon_serves(dir);
        if serving && call.is_some() {
            continue; // it serves now: ask it
        }
        if serving || Instant::now() >= deadline {
            let holder = pid.map_or("another process".to_owned(), |pid| format!("process {pid}"));
            let message = if !serving {
                format!("{holder} has held this profile for {HOLDER_WAIT:?}; try again later")
            } else if daemon {
                format!("a daemon already runs for this profile ({holder})")
            } else {
                format!(
                    "a daemon ({holder}) holds this profile, and this command does not go \
                     through it: stop the daemon first, then run it again"
                )
            };
            return Err(Refused {
                kind: ErrorKind::Busy,
                message,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes a call that needs no delivery node ([`daemon::local`]): through the daemon that holds
/// the profile, or here.
pub fn ask_local(dir: &Path, passphrase: Option<&str>, call: Call) -> anyhow::Result<Answer> {
    match open(dir, passphrase, Some(&call), false)? {
        Opened::ByDaemon(answer) => Ok(*answer),
        Opened::Here(mut profile) => daemon::local(&mut profile, &call)
            .map_err(refusal)?
            .with_context(|| format!("{call:?} needs the delivery node")),
    }
}

/// Makes `call` in this process: connect, catch up, call, disconnect.
pub fn here(profile: Profile, call: Call) -> anyhow::Result<Answer> {
    let (_profile, answer) = runtime()?.block_on(daemon::call_once(profile, call));
    answer.map_err(refusal)
}

/// An API error, as the CLI reports it: the same whether this process or the daemon failed.
pub fn refusal(e: daemon::RpcError) -> anyhow::Error {
    Refused {
        kind: e.kind,
        message: e.message,
    }
    .into()
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub fn run_daemon(profile: Profile, dir: &Path, options: daemon::Options) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let socket = daemon::socket_path(dir);
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        if !options.stdio {
            eprintln!("mlschat daemon: API on {}", socket.display());
        }
        daemon::run(profile, &socket, options, shutdown).await?;
        Ok(())
    });
    // A read of stdin may still be blocking a thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// A connection to the profile's daemon. One that is starting (it may wait for a verb that
/// holds the profile) is waited for, as long as some process holds the profile.
pub async fn daemon_client(dir: &Path) -> anyhow::Result<DaemonClient> {
    let start = Instant::now();
    loop {
        if let Some(client) = DaemonClient::connect(dir).await {
            return Ok(client);
        }
        // A daemon started just before may not hold the profile yet (`daemon &` then `chat`,
        // on a busy machine): it is given a moment before we say none runs.
        let starting = start.elapsed() < DAEMON_START;
        let held = mlschat_node::store::Store::in_use(dir);
        if !(held || starting) || start.elapsed() >= HOLDER_WAIT {
            bail!(
                "no daemon runs for this profile: start one with `mlschat daemon` (it keeps the \
                 connection and receives pushes)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints events after `after` as they come, until interrupted.
pub fn follow(dir: &Path, report: &Report, after: i64) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut client = daemon_client(dir).await?;
        client
            .call(&Call::Subscribe { after })
            .await
            .map_err(refused)?;
        loop {
            let note = client.next().await.map_err(refused)?;
            if let Some(event) = note.get("params") {
                let event: Event = serde_json::from_value(event.clone())
                    .context("the daemon sent an event this version does not read")?;
                report.event(&event);
            }
        }
    })
}
