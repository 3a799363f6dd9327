//! The full-screen chat's loop: keys, the daemon's events and a periodic refresh, until /quit;
//! and the slash commands, each one call of the daemon's API.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use mlschat_node::daemon::client::{CallError, DaemonClient};
use mlschat_node::daemon::{Answer, Call, Changed, MemberWithState};
use mlschat_node::profile::{GroupState, GroupSummary, HistoryKind};
use ratatui::crossterm::event::{self, Event};

use super::view::{Action, Entry, GroupView, Screen, member_line};
use super::{HELP, REFRESH, SCROLLBACK, event_of, find};
use crate::online::{daemon_client, refused};
use crate::report::inviter;

/// The full-screen chat, until /quit or Ctrl-C.
pub(super) async fn screen(dir: &Path, start_in: Option<&str>) -> anyhow::Result<()> {
    let mut listener = daemon_client(dir).await?;
    let mut caller = daemon_client(dir).await?;
    let listed = chat_groups(&mut caller).await?;
    if listed.is_empty() {
        bail!("you are in no group yet: create one with `mlschat group create NAME`");
    }
    let current = match start_in {
        Some(handle) => {
            let found = find(&listed, handle).with_context(|| format!("no group {handle:?}"))?;
            listed.iter().position(|g| g.id == found.id).unwrap_or(0)
        }
        None => 0,
    };
    let mut groups = Vec::new();
    let mut last_seen = 0;
    for g in &listed {
        let (entries, last) = scrollback(&mut caller, g).await?;
        last_seen = last_seen.max(last);
        groups.push(GroupView::of(g, entries));
    }
    listener
        .call(&Call::Subscribe { after: last_seen })
        .await
        .map_err(refused)?;
    let mut screen = Screen::new(groups, current);
    screen.members = members(&mut caller, &screen.groups[current].id).await;
    screen.note("/help lists the commands");

    let mut keys = read_keys();
    let mut terminal = ratatui::init();
    let mut refresh = tokio::time::interval(REFRESH);
    let result: anyhow::Result<()> = async {
        loop {
            terminal.draw(|f| screen.draw(f))?;
            let shown = screen.current;
            tokio::select! {
                note = listener.next() => {
                    let note = note.map_err(refused)?;
                    let Some(event) = event_of(&note) else { continue };
                    if !screen.groups.iter().any(|g| g.shows(&event)) {
                        // A group joined while the chat runs: its scrollback holds this event.
                        refresh_groups(&mut screen, &mut caller).await;
                        continue;
                    }
                    if screen.arrive(&event) {
                        let mut out = std::io::stdout();
                        out.write_all(b"\x07")?;
                        out.flush()?;
                    }
                    if event.kind == HistoryKind::Event {
                        // Members, the name or the topic may have changed.
                        refresh_groups(&mut screen, &mut caller).await;
                        let id = screen.groups[screen.current].id.clone();
                        screen.members = members(&mut caller, &id).await;
                    }
                }
                _ = refresh.tick() => {
                    if let Ok(status) = ask!(caller, Call::Status {}, Answer::Status) {
                        screen.attention(status);
                    }
                    refresh_groups(&mut screen, &mut caller).await;
                }
                key = keys.recv() => {
                    let Some(Event::Key(key)) = key else {
                        if key.is_none() { return Ok(()) }
                        continue;
                    };
                    match screen.key(key) {
                        Action::Nothing => {}
                        Action::Quit => return Ok(()),
                        Action::Send(text) => {
                            let id = screen.groups[screen.current].id.clone();
                            if let Err(e) = caller.call(&Call::Send { group: id, text }).await {
                                screen.note(failure(e));
                            }
                        }
                        Action::Command(command) => {
                            if command == "quit" {
                                return Ok(());
                            }
                            terminal.draw(|f| screen.draw(f))?;
                            run_command(&mut screen, &mut caller, &command).await;
                        }
                    }
                }
            }
            if screen.current != shown {
                let id = screen.groups[screen.current].id.clone();
                screen.members = members(&mut caller, &id).await;
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

/// Keys, read on a thread of their own so that the chat's loop waits for them and for events
/// alike.
fn read_keys() -> tokio::sync::mpsc::Receiver<Event> {
    let (keys_tx, keys) = tokio::sync::mpsc::channel::<Event>(64);
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if keys_tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) if keys_tx.is_closed() => return,
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    keys
}

/// The groups the chat shows: those we are in (a broken one too, to read it).
async fn chat_groups(caller: &mut DaemonClient) -> anyhow::Result<Vec<GroupSummary>> {
    let mut listed = ask!(caller, Call::Groups {}, Answer::Groups)?;
    listed.retain(|g| matches!(g.state, GroupState::Active | GroupState::Broken));
    Ok(listed)
}

/// A group's recent history, and the newest event id in it.
async fn scrollback(
    caller: &mut DaemonClient,
    group: &GroupSummary,
) -> anyhow::Result<(Vec<Entry>, i64)> {
    let history = Call::History {
        group: group.id.clone(),
        limit: SCROLLBACK,
    };
    let history = ask!(caller, history, Answer::History)?;
    let last = history.iter().map(|e| e.seq).max().unwrap_or(0);
    Ok((history.iter().map(Entry::from).collect(), last))
}

/// Groups joined while the chat runs appear, with their scrollback; names, topics and states
/// are brought up to date.
async fn refresh_groups(screen: &mut Screen, caller: &mut DaemonClient) {
    let Ok(listed) = chat_groups(caller).await else {
        return;
    };
    for summary in listed {
        match screen.groups.iter_mut().find(|g| summary.id == g.id) {
            Some(view) => view.update(&summary),
            None => {
                let Ok((entries, _)) = scrollback(caller, &summary).await else {
                    continue;
                };
                let mut view = GroupView::of(&summary, entries);
                // All of it is new to us.
                view.unread = view.entries.iter().filter(|e| e.is_text()).count();
                view.seen = 0;
                let label = view.label();
                screen.groups.push(view);
                screen.note(format!("you are in a new group: {label} (Tab goes to it)"));
            }
        }
    }
}

async fn members(caller: &mut DaemonClient, group: &str) -> Vec<MemberWithState> {
    let group = group.to_owned();
    ask!(caller, Call::Members { group }, Answer::Members).unwrap_or_default()
}

/// A failed call, as a note: what happened and what to do come from the daemon's message.
fn failure(e: CallError) -> String {
    format!("failed: {e}")
}

async fn run_command(screen: &mut Screen, caller: &mut DaemonClient, command: &str) {
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let args: Vec<String> = words.map(str::to_owned).collect();
    let id = screen.groups[screen.current].id.clone();
    let call = match (verb, args.as_slice()) {
        ("help", _) => {
            for line in HELP {
                screen.note(*line);
            }
            return;
        }
        ("members", _) => {
            screen.show_members = !screen.show_members;
            screen.members = members(caller, &id).await;
            for m in screen.members.clone() {
                screen.note(member_line(&m).to_string());
            }
            return;
        }
        ("group", [handle]) => {
            match screen
                .groups
                .iter()
                .position(|g| g.name.as_deref() == Some(handle) || g.id.starts_with(handle))
            {
                Some(at) => screen.switch(at),
                None => screen.note(format!("no group {handle:?} (Tab goes round them)")),
            }
            return;
        }
        ("requests", []) => {
            if screen.waiting.is_empty() {
                screen.note("no invitation waits for you");
            }
            for request in screen.waiting.clone() {
                let group = &request.group[..request.group.len().min(8)];
                let from = inviter(&request);
                screen.note(format!(
                    "group {group} from {from}: /accept {group} or /decline {group}"
                ));
            }
            return;
        }
        ("alerts", []) => {
            if screen.alerts.is_empty() {
                screen.note("no alerts");
            }
            for alert in screen.alerts.clone() {
                screen.note(format!("! {}", alert.text));
            }
            if let Some(last) = screen.alerts.last().map(|a| a.id) {
                let _ = caller.call(&Call::AlertsAck { up_to: Some(last) }).await;
                screen.alerts.clear();
            }
            return;
        }
        ("accept", [group]) => Call::RequestAccept {
            group: group.to_string(),
        },
        ("decline", [group]) => Call::RequestDecline {
            group: group.to_string(),
        },
        ("topic", words) if !words.is_empty() => Call::GroupSet {
            group: id.to_owned(),
            name: None,
            topic: Some(command.trim_start()["topic".len()..].trim().to_owned()),
            admin: Vec::new(),
            not_admin: Vec::new(),
        },
        ("add", who) if !who.is_empty() => Call::GroupAdd {
            group: id.to_owned(),
            who: who.iter().map(|w| w.to_string()).collect(),
        },
        ("remove", who) if !who.is_empty() => Call::GroupRemove {
            group: id.to_owned(),
            who: who.iter().map(|w| w.to_string()).collect(),
        },
        ("leave", []) => Call::GroupLeave {
            group: id.to_owned(),
        },
        ("verify", [name]) => Call::ContactVerify {
            name: name.to_string(),
            matches: None,
        },
        ("verify", [name, number @ ..]) => Call::ContactVerify {
            name: name.to_string(),
            matches: Some(number.join(" ")),
        },
        _ => {
            screen.note(format!("not a command: /{command} (/help lists them)"));
            return;
        }
    };
    screen.note(format!("{verb}…"));
    match caller.call(&call).await {
        Err(e) => screen.note(failure(e)),
        Ok(answer) => show_answer(screen, caller, answer).await,
    }
}

/// What a slash command's call answered, as notes; what it changed, refreshed.
async fn show_answer(screen: &mut Screen, caller: &mut DaemonClient, answer: Answer) {
    let id = screen.groups[screen.current].id.clone();
    match answer {
        Answer::ContactVerify(answer) => {
            let (name, number) = (answer.contact, answer.safety_number);
            if answer.changed_key {
                screen.note(format!(
                    "{name} was shown with ANOTHER key: accept it only if they read you this number"
                ));
            } else {
                screen.note(format!("your safety number with {name}:"));
            }
            screen.note(number.clone());
            if answer.verified {
                screen.note("verified: it matched when you compared it");
            } else {
                screen.note(format!(
                    "if {name} reads you the same, type: /verify {name} {number}"
                ));
            }
        }
        Answer::Leaving(_) => {
            screen.note("asked to leave: a member's next commit removes you");
        }
        Answer::Declined(declined) => {
            screen.waiting.retain(|r| r.group != declined.group);
            screen.note("declined");
        }
        Answer::Synced(_) => {
            screen.note("accepted: the group appears once joined");
            refresh_groups(screen, caller).await;
        }
        Answer::Changed(Changed::Queued(_)) | Answer::SettingsChanged(Changed::Queued(_)) => {
            screen.note("queued: the connection went; it goes on once it is back");
        }
        Answer::Changed(Changed::Group(group)) | Answer::SettingsChanged(Changed::Group(group)) => {
            screen.note(format!(
                "done: epoch {}, {} members",
                group.epoch, group.members
            ));
            screen.members = members(caller, &id).await;
            refresh_groups(screen, caller).await;
        }
        other => screen.note(format!("done: {other:?}")),
    }
}
