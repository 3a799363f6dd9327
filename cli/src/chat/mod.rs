//! `mlschat chat`: chatting from a terminal, over the running daemon's API.
//!
//! On a terminal it is a full-screen view: the groups in a bar with their unread counts, the
//! group's scrollback with times, days and a marker of what is new (paged with PgUp/PgDn), its
//! members with what our contacts say of each, an input line of its own with readline-like
//! editing and a history of what was sent (arrivals never land in what is being typed), the
//! invitations and alerts waiting, slash commands, and a bell when someone else writes. Groups
//! joined and topics changed while it runs show at once. Fed by a pipe, each line read is sent
//! and what arrives is printed, as scripts expect.
//!
//! - `view.rs`: what the full-screen chat shows (groups, scrollback, members, input) and how
//!   keys change it; no I/O;
//! - `session.rs`: the full-screen chat's loop over the daemon's API, and its slash commands.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use mlschat_node::daemon::{Answer, Call};
use mlschat_node::profile::{self, GroupSummary};
use serde_json::Value;

use crate::online::{daemon_client, refused, runtime};
use crate::report::Report;

/// Makes a call and takes its answer, of the one variant that call is answered with.
macro_rules! ask {
    ($caller:expr, $call:expr, $variant:path) => {
        match $caller.call(&$call).await {
            Ok($variant(value)) => Ok(value),
            Ok(other) => Err(anyhow::anyhow!("the daemon answered {other:?}")),
            Err(e) => Err(refused(e)),
        }
    };
}

mod session;
mod view;

/// The event a daemon's notification carries, if it is one.
fn event_of(note: &Value) -> Option<profile::Event> {
    serde_json::from_value(note.get("params")?.clone()).ok()
}

/// How much of each group's history is loaded to scroll through.
const SCROLLBACK: u32 = 1000;

const HELP: &[&str] = &[
    "/help                   this list",
    "/members                show or hide who is in the group and what they are to you",
    "/add NAME...            add contacts to the group",
    "/remove NAME...         remove members (user/device, user, or fingerprint prefix)",
    "/leave                  leave the group (a member's next commit removes you)",
    "/verify NAME [NUMBER]   the safety number you share with a contact; with NUMBER, record that it matched",
    "/topic TEXT             set the topic every member sees (admins)",
    "/group NAME             go to another group (Tab and Shift-Tab go round them)",
    "/requests               invitations from people who are not your contacts",
    "/accept GROUP, /decline GROUP   answer one",
    "/alerts                 what you should know, then marked as read",
    "/quit                   leave the chat (Ctrl-C too)",
    "PgUp and PgDn page through the history; Enter sends what you typed; Up and Down recall it",
    "Editing: Left/Right, Home/End or Ctrl-A/Ctrl-E, Ctrl-W a word, Ctrl-K to the end, Ctrl-U all",
];

/// How often (s) the chat asks the daemon for invitations, alerts and groups joined.
const REFRESH: Duration = Duration::from_secs(2);

/// Runs the chat in `group` (on a terminal, the first group when none is named).
pub fn chat(dir: &Path, report: &Report, group: Option<&str>) -> anyhow::Result<()> {
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    match (on_terminal, group) {
        (true, group) => runtime()?.block_on(session::screen(dir, group)),
        (false, Some(group)) => runtime()?.block_on(lines(dir, report, group)),
        (false, None) => bail!("name the group to chat in: `mlschat chat GROUP`"),
    }
}

/// The group named `handle` (its name, or a prefix of its id) among the daemon's `groups`.
fn find<'a>(groups: &'a [GroupSummary], handle: &str) -> Option<&'a GroupSummary> {
    groups
        .iter()
        .find(|g| g.name.as_deref() == Some(handle) || g.id.starts_with(handle))
}

/// A line chat: new events are printed as they come, each line read is sent. Starts with the
/// group's recent history.
async fn lines(dir: &Path, report: &Report, group: &str) -> anyhow::Result<()> {
    let mut listener = daemon_client(dir).await?;
    let mut sender = daemon_client(dir).await?;
    let groups = ask!(sender, Call::Groups {}, Answer::Groups)?;
    let Some(found) = find(&groups, group) else {
        bail!("no group named {group:?}");
    };
    let (id, name) = (found.id.clone(), found.name.clone());
    let history = Call::History {
        group: group.to_owned(),
        limit: 20,
    };
    let history = ask!(sender, history, Answer::History)?;
    let last = history.last().map_or(0, |e| e.seq);
    for entry in &history {
        report.history_entry(entry);
    }
    listener
        .call(&Call::Subscribe { after: last })
        .await
        .map_err(refused)?;
    let (lines_tx, mut typed) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            note = listener.next() => {
                let note = note.map_err(refused)?;
                if let Some(event) = event_of(&note)
                    && (Some(&event.group) == name.as_ref() || event.group == id)
                {
                    report.event(&event);
                }
            }
            line = typed.recv() => {
                let Some(text) = line else { return Ok(()) };
                if text.trim().is_empty() {
                    continue;
                }
                sender
                    .call(&Call::Send {
                        group: group.to_owned(),
                        text,
                    })
                    .await
                    .map_err(refused)?;
            }
        }
    }
}
