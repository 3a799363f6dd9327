//! What the CLI prints: one readable line per fact, or one JSON object per line with `-o json`.
//! When MLS packets go to stdout, reports go to stderr so the two never mix. What `-o json`
//! prints is the daemon's [`Answer`] or one of the CLI's own [`output`](crate::output) types.

use std::io::{IsTerminal as _, Write};

use mlschat_node::daemon::{
    Answer, Changed, MemberWithState, OurInvite, Posted, Status, Synced, Whoami,
};
use mlschat_node::engine::{Incoming, display_member};
use mlschat_node::identity::Fingerprint;
use mlschat_node::profile::{
    Contact, Event, GroupState, GroupSummary, HistoryEntry, HistoryKind, Invitation, InviteCode,
    Outgoing, Received, RequestState, SafetyNumber, SenderState, Unsent, describe_commit,
};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde::Serialize;

use crate::args::OutArgs;
use crate::exit::Exit;
use crate::output::{
    Action, Committed, ErrorLine, KeyPackageWritten, Outbox, PacketReport, SentToFiles,
    UnsentPacket, Written,
};

pub struct Report {
    pub json: bool,
}

/// Prints an error as one line (or one JSON object) on stderr.
pub fn error(json: bool, error: &anyhow::Error, code: Exit) {
    let message = format!("{error:#}");
    if json {
        let line = ErrorLine {
            error: message,
            exit_code: code as i32,
        };
        eprintln!("{}", to_json(&line));
    } else {
        eprintln!("mlschat: error: {message}");
    }
}

/// The JSON line of a report; reports always serialise.
fn to_json(report: &impl Serialize) -> String {
    serde_json::to_string(report).unwrap_or_default()
}

/// Prints `payload` as a QR code, on stdout or stderr.
fn print_qr(payload: &str, to_stdout: bool) -> anyhow::Result<()> {
    let code = QrCode::new(payload.as_bytes())?;
    let image = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build();
    if to_stdout {
        println!("{image}");
    } else {
        eprintln!("{image}");
    }
    Ok(())
}

/// A sender as a person reads it: someone using a contact's name with another key is marked
/// so that nobody takes them for the contact.
pub fn sender_label(name: &str, state: Option<SenderState>) -> String {
    match state {
        Some(SenderState::Impostor) => format!("{name} [NOT your contact {name}: another key]"),
        Some(SenderState::Verified) => format!("{name} ✓"),
        Some(SenderState::Unknown) => format!("{name} ?"),
        _ => name.to_owned(),
    }
}

/// A time (seconds since the Unix epoch) in local time, to the minute.
fn local_time(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// Who sent an invitation, as a person must read it: an impostor is marked as strongly as in
/// history, a stranger as not a contact.
pub fn inviter(request: &Invitation) -> String {
    let name = request.inviter.as_deref().unwrap_or("?");
    let key = request.inviter_fingerprint.as_deref().unwrap_or("?");
    match request.inviter_state {
        Some(SenderState::Impostor) => {
            format!("{name} [NOT your contact {name}: another key {key}]")
        }
        Some(SenderState::Contact | SenderState::Verified) => {
            format!("your contact {name} (key {key})")
        }
        _ => format!("{name} ? (not a contact; key {key})"),
    }
}

/// `mlschat status`: what needs our user's attention first, then the rest.
fn status(status: &Status) {
    println!("{}  {}", status.name, status.fingerprint);
    match (&status.home, status.link.connected) {
        (None, _) => println!("delivery node: none (groups are kept in files)"),
        (Some(home), true) => println!("delivery node: {home}, connected"),
        (Some(home), false) => println!(
            "delivery node: {home}, not connected ({})",
            status.link.why.as_deref().unwrap_or("?")
        ),
    }
    if status.alerts.is_empty() {
        println!("alerts: none");
    } else {
        println!(
            "alerts ({}; `mlschat status --ack` once read):",
            status.alerts.len()
        );
        for a in &status.alerts {
            println!("  ! {}  {}", local_time(a.at as i64), a.text);
        }
    }
    for r in status
        .invitations
        .iter()
        .filter(|i| i.request == Some(RequestState::Waiting))
    {
        println!(
            "invitation waiting: group {} from {} (`mlschat request accept|decline`)",
            r.group,
            inviter(r)
        );
    }
    let groups = &status.groups;
    let active = groups
        .iter()
        .filter(|g| g.state == GroupState::Active)
        .count();
    println!("groups: {} ({active} active)", groups.len());
    for g in groups.iter().filter(|g| g.state != GroupState::Active) {
        println!("  {}: {}", g.handle(), state_name(g.state));
    }
    for lane in &status.lanes {
        println!(
            "stuck: group {}: {} posts refused as stale with nothing new to read (backing off)",
            lane.group, lane.refusals
        );
    }
}

/// A group's state as `-o json` names it.
fn state_name(state: GroupState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn groups(groups: &[GroupSummary]) {
    for g in groups {
        let topic = match g.topic.as_deref() {
            Some(topic) if !topic.is_empty() => format!("  ({topic})"),
            _ => String::new(),
        };
        println!(
            "{:<20} id {}  epoch {:<5} {:>6} members  {}{topic}",
            g.handle(),
            g.id,
            g.epoch,
            g.members,
            state_name(g.state)
        );
    }
}

fn members(members: &[MemberWithState]) {
    for m in members {
        let name = m.name.as_deref().unwrap_or("(no name)");
        let mut label = sender_label(name, Some(m.state));
        if m.admin {
            label.push_str(" (admin)");
        }
        if m.invited {
            label.push_str(" (invited: not joined yet)");
        }
        println!("#{:<6} {label:<40} {}", m.leaf, m.fingerprint);
    }
}

fn history(entries: &[HistoryEntry]) {
    for e in entries {
        // When, not the row's number: rows are numbered across all groups.
        let sender = sender_label(&e.sender, Some(e.sender_state));
        let (at, epoch) = (local_time(e.at), e.epoch);
        match e.kind {
            HistoryKind::Text => println!("{at} e{epoch:<4} {sender}: {}", e.body),
            HistoryKind::Event => println!("{at} e{epoch:<4} * {sender} {}", e.body),
        }
    }
}

fn contacts(contacts: &[Contact]) {
    for c in contacts {
        let flag = c
            .flagged
            .as_deref()
            .map(|f| format!("  FLAGGED: {f} (`mlschat contact verify {}`)", c.name));
        let verified = if c.verified { "  verified" } else { "" };
        println!(
            "{:<30} {}{verified}{}",
            c.name,
            c.fingerprint,
            flag.unwrap_or_default()
        );
    }
}

fn safety_number(answer: &SafetyNumber) {
    let (name, number) = (&answer.contact, &answer.safety_number);
    if answer.changed_key {
        println!(
            "{name} is flagged: you were shown ANOTHER key for them ({}).\n\
             Accept it only if they read you this same number:",
            answer.fingerprint
        );
    } else {
        println!(
            "Your safety number with {name} (their key {}):",
            answer.fingerprint
        );
    }
    for line in number.split(' ').collect::<Vec<_>>().chunks(4) {
        println!("    {}", line.join(" "));
    }
    if std::io::stdout().is_terminal() {
        // The same number as a QR code, to compare by scanning each other's screen.
        let digits: String = number.split(' ').collect();
        let _ = print_qr(&format!("mlschat-safety-number:{digits}"), true);
    }
    if answer.verified {
        println!("verified: it matched when you compared it");
    } else {
        println!(
            "Compare it with {name} in person or on a call. If it is the same, run:\n    \
             mlschat contact verify {name} --matches '{number}'"
        );
    }
}

fn requests(requests: &[Invitation]) {
    if requests.is_empty() {
        println!("no invitations wait for you");
    }
    for r in requests {
        println!("group {}  from {}", r.group, inviter(r));
    }
}

fn whoami(who: &Whoami) {
    let fingerprint =
        Fingerprint::from_hex(&who.fingerprint).map_or(who.fingerprint.clone(), |f| f.to_string());
    let last_resort = if who.keypackages.last_resort {
        "a"
    } else {
        "no"
    };
    println!(
        "identity:    {}/{}\nfingerprint: {fingerprint}\nprofile:     {}\nkeypackages: {} one-time, \
         {last_resort} last-resort",
        who.user, who.device, who.profile, who.keypackages.one_time,
    );
}

fn synced(synced: &Synced) {
    let new: Vec<String> = synced
        .new
        .iter()
        .map(|g| format!("{} new in {}", g.entries, g.group))
        .collect();
    if new.is_empty() {
        // A running daemon applies what arrives as it comes: a sync through it may find
        // nothing that was not already shown.
        println!("up to date (`mlschat history GROUP` shows what arrived)");
    } else {
        println!("up to date: {}", new.join(", "));
    }
}

/// A text or an event as the line chat shows it.
fn chat_line(
    group: &str,
    sender: &str,
    state: SenderState,
    kind: HistoryKind,
    body: &str,
) -> String {
    let sender = sender_label(sender, Some(state));
    match kind {
        HistoryKind::Text => format!("{group}{sender}: {body}"),
        HistoryKind::Event => format!("{group}* {sender} {body}"),
    }
}

/// A group changed: where it stands now (with its settings after `group set`).
fn changed(changed: &Changed, settings: bool) {
    let group = match changed {
        Changed::Queued(_) => {
            return println!(
                "queued: the connection to the delivery node was lost; the change goes on once \
                 it is back"
            );
        }
        Changed::Group(group) => group,
    };
    let invited = match group.invited {
        0 => String::new(),
        n => format!(" ({n} invited: they join when they accept)"),
    };
    println!(
        "{}: epoch {}, {} members{invited}",
        group.handle(),
        group.epoch,
        group.members
    );
    if settings {
        println!(
            "shared name: {}\ntopic: {}",
            group.shared_name.as_deref().unwrap_or("(none)"),
            group.topic.as_deref().unwrap_or("(none)")
        );
    }
}

impl Report {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// One report: its JSON with `-o json`, else the text.
    fn emit(&self, to_stderr: bool, text: impl FnOnce() -> String, report: &impl Serialize) {
        let line = if self.json { to_json(report) } else { text() };
        if to_stderr {
            eprintln!("{line}");
        } else {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) is not an error worth a panic.
            let _ = writeln!(stdout, "{line}");
        }
    }

    /// `whoami`'s QR code: the identity and fingerprint, to scan from another device.
    pub fn whoami_qr(&self, who: &Whoami) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        let payload = format!("mlschat:{}/{}#{}", who.user, who.device, who.fingerprint);
        print_qr(&payload, true)
    }

    /// The code alone on stdout, so that `$(mlschat invite)` is the code; what a person reads
    /// beside it (the fingerprint to compare, the QR code) goes to stderr unless stdout is a
    /// terminal.
    pub fn invite(&self, invite: &OurInvite, qr: bool) -> anyhow::Result<()> {
        self.emit(false, || invite.code.clone(), invite);
        if !self.json {
            let to_terminal = std::io::stdout().is_terminal();
            let code: InviteCode = invite.code.parse()?;
            let fingerprint = Fingerprint::of_signature_key(&code.signature_key);
            let note = format!("{}: {fingerprint} (compare it with theirs)", code.name);
            if to_terminal {
                println!("{note}");
            } else {
                eprintln!("{note}");
            }
            if qr {
                print_qr(&invite.code, to_terminal)?;
            }
        }
        Ok(())
    }

    /// Prints the answer of a daemon API call.
    pub fn answer(&self, answer: &Answer) {
        if self.json {
            return self.emit(false, String::new, answer);
        }
        match answer {
            Answer::Leaving(_) => println!(
                "asked to leave: a member's next commit removes you (`mlschat group list` shows \
                 `removed` then)"
            ),
            Answer::Sent(Posted { posted: true }) => println!("sent"),
            Answer::Sent(Posted { posted: false }) => {
                println!("queued: the delivery node is unreachable; it goes out later")
            }
            Answer::Synced(answer) => synced(answer),
            Answer::Groups(answer) => groups(answer),
            Answer::Members(answer) => members(answer),
            Answer::History(answer) => history(answer),
            Answer::Events(events) => events.iter().for_each(|e| self.event(e)),
            Answer::Contact(c) => println!("contact {} ({})", c.name, c.fingerprint),
            Answer::ContactRemoved(c) => println!("removed contact {}", c.name),
            Answer::Contacts(answer) => contacts(answer),
            Answer::ContactVerify(answer) => safety_number(answer),
            Answer::Requests(answer) => requests(answer),
            Answer::Whoami(answer) => whoami(answer),
            Answer::Home(home) => match &home.address {
                Some(address) => println!(
                    "delivery node: {address} (certificate {})",
                    home.fingerprint.as_deref().unwrap_or_default()
                ),
                None => println!("no delivery node set: groups are kept in files"),
            },
            Answer::Status(answer) => status(answer),
            Answer::AlertsAck(a) => println!("acknowledged {} alerts", a.acknowledged),
            Answer::Renamed(r) => println!("group {} is now called {}", r.group, r.name),
            Answer::Declined(i) => println!(
                "declined the invitation to {} from {}",
                i.group,
                i.inviter.as_deref().unwrap_or_default()
            ),
            Answer::Created(group) => changed(&Changed::Group(group.clone()), false),
            Answer::Changed(answer) => changed(answer, false),
            Answer::SettingsChanged(answer) => changed(answer, true),
            Answer::Invite(invite) => println!("{}", invite.code),
            Answer::Subscribe(s) => println!("subscribed after event {}", s.after),
        }
    }

    /// Prints one event of the daemon: `[group] sender: text`.
    pub fn event(&self, event: &Event) {
        let group = format!("[{}] ", event.group);
        let text = || {
            chat_line(
                &group,
                &event.sender,
                event.sender_state,
                event.kind,
                &event.body,
            )
        };
        self.emit_now(text, event);
    }

    /// Prints one row of a group's history: `sender: text`.
    pub fn history_entry(&self, entry: &HistoryEntry) {
        let text = || {
            chat_line(
                "",
                &entry.sender,
                entry.sender_state,
                entry.kind,
                &entry.body,
            )
        };
        self.emit_now(text, entry);
    }

    /// A report on stdout, flushed at once (a pipe reader waits for it).
    fn emit_now(&self, text: impl FnOnce() -> String, report: &impl Serialize) {
        self.emit(false, text, report);
        let _ = std::io::stdout().flush();
    }

    pub fn key_package(&self, out: &OutArgs, last_resort: bool, one_time: u64, has_last: bool) {
        let report = KeyPackageWritten {
            keypackage: Written { last_resort },
            one_time_outstanding: one_time,
            last_resort_exists: has_last,
        };
        let text = || {
            let kind = if last_resort {
                "last-resort"
            } else {
                "one-time"
            };
            format!("wrote a {kind} KeyPackage ({one_time} one-time outstanding)")
        };
        self.emit(out.out.is_none(), text, &report);
    }

    pub fn group_created(&self, group: &GroupSummary) {
        let text = || format!("created group {} (id {})", group.handle(), group.id);
        self.emit(false, text, group);
    }

    pub fn committed(&self, out: &OutArgs, group: &str, action: Action, count: usize) {
        let report = Committed {
            group: group.to_owned(),
            action,
            count: count as u64,
        };
        let text = || format!("[{group}] {} {count}; commit written", action.as_str());
        self.emit(out.out.is_none(), text, &report);
    }

    pub fn sent(&self, out: &OutArgs, group: &str, outgoing: &Outgoing) {
        let sent = outgoing.to_group.len();
        let report = SentToFiles {
            group: group.to_owned(),
            sent: sent as u64,
        };
        let text = || format!("[{group}] sent ({sent} packet(s))");
        self.emit(out.out.is_none(), text, &report);
    }

    pub fn outbox(&self, out: &OutArgs, unsent: &[Unsent]) {
        let report = Outbox {
            unsent: unsent
                .iter()
                .map(|u| UnsentPacket {
                    group: u.group.clone(),
                    audience: u.audience.clone(),
                })
                .collect(),
        };
        let text = || format!("wrote {} unsent packet(s)", unsent.len());
        self.emit(out.out.is_none(), text, &report);
    }

    pub fn received(&self, received: &Received) {
        let (text, report) = match received {
            Received::Joined { group, inviter } => (
                format!(
                    "[{}] joined, added by {} ({} members, epoch {})",
                    group.handle(),
                    display_member(inviter),
                    group.members,
                    group.epoch
                ),
                PacketReport::Joined {
                    group: group.clone(),
                    inviter: inviter.into(),
                },
            ),
            Received::Message { group, incoming } => {
                let handle = group.handle();
                let group = group.clone();
                match incoming {
                    Incoming::Application { sender, plaintext } => {
                        let text = mlschat_wire::content::Content::show(plaintext);
                        (
                            format!("[{handle}] {}: {text}", display_member(sender)),
                            PacketReport::Message {
                                group,
                                sender: sender.into(),
                                text,
                            },
                        )
                    }
                    Incoming::Proposal { sender, summary } => (
                        format!("[{handle}] {} proposed: {summary}", display_member(sender)),
                        PacketReport::Proposal {
                            group,
                            sender: sender.into(),
                            proposal: summary.clone(),
                        },
                    ),
                    Incoming::Commit {
                        sender,
                        added,
                        removed,
                        settings,
                        removed_us,
                        epoch,
                    } => {
                        let who = display_member(sender);
                        let text = if *removed_us {
                            format!("[{handle}] you were removed by {who}")
                        } else {
                            let what = describe_commit(added, removed, settings.as_ref());
                            format!("[{handle}] {who} {what} (epoch {epoch})")
                        };
                        let report = PacketReport::Commit {
                            group,
                            sender: sender.into(),
                            added: added.iter().map(Into::into).collect(),
                            removed: removed.iter().map(Into::into).collect(),
                            settings: settings.as_ref().map(Into::into),
                            removed_us: *removed_us,
                            epoch: *epoch,
                        };
                        (text, report)
                    }
                }
            }
        };
        self.emit(false, || text, &report);
    }
}
