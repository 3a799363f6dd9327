//! What the CLI prints: one readable line per fact, or one JSON object per line with `-o json`.
//! When MLS packets go to stdout, reports go to stderr so the two never mix.

use std::io::{IsTerminal as _, Write};

use mlschat_node::engine::{Incoming, MemberInfo, display_member};
use mlschat_node::identity::Fingerprint;
use mlschat_node::profile::{
    GroupSummary, InviteCode, Outgoing, Received, Unsent, describe_commit,
};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde_json::{Value, json};

use crate::OutArgs;
use crate::exit::Exit;

pub struct Report {
    pub json: bool,
}

/// Prints an error as one line (or one JSON object) on stderr.
pub fn error(json: bool, error: &anyhow::Error, code: Exit) {
    let message = format!("{error:#}");
    if json {
        eprintln!("{}", json!({"error": message, "exit_code": code as i32}));
    } else {
        eprintln!("mlschat: error: {message}");
    }
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
pub fn sender_label(name: &str, state: &str) -> String {
    match state {
        "impostor" => format!("{name} [NOT your contact {name}: another key]"),
        "verified" => format!("{name} ✓"),
        "unknown" => format!("{name} ?"),
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

fn member_json(m: &MemberInfo) -> Value {
    json!({
        "leaf": m.leaf_index,
        "name": m.name.as_ref().map(|n| n.to_string()),
        "fingerprint": m.fingerprint.to_hex(),
    })
}

/// Who sent an invitation, as a person must read it: an impostor is marked as strongly as in
/// history, a stranger as not a contact.
fn inviter(request: &Value) -> String {
    let name = request["inviter"].as_str().unwrap_or("?");
    let key = request["inviter_fingerprint"].as_str().unwrap_or("?");
    match request["inviter_state"].as_str() {
        Some("impostor") => format!("{name} [NOT your contact {name}: another key {key}]"),
        Some("contact") | Some("verified") => format!("your contact {name} (key {key})"),
        _ => format!("{name} ? (not a contact; key {key})"),
    }
}

/// `mlschat status`: what needs our user's attention first, then the rest.
fn status(answer: &Value) {
    let list = |k: &str| answer[k].as_array().cloned().unwrap_or_default();
    let link = &answer["link"];
    let home = answer["home"].as_str();
    println!(
        "{}  {}",
        answer["name"].as_str().unwrap_or_default(),
        answer["fingerprint"].as_str().unwrap_or_default()
    );
    match (home, link["connected"].as_bool()) {
        (None, _) => println!("delivery node: none (groups are kept in files)"),
        (Some(home), Some(true)) => println!("delivery node: {home}, connected"),
        (Some(home), _) => println!(
            "delivery node: {home}, not connected ({})",
            link["why"].as_str().unwrap_or("?")
        ),
    }
    let alerts = list("alerts");
    if alerts.is_empty() {
        println!("alerts: none");
    } else {
        println!(
            "alerts ({}; `mlschat status --ack` once read):",
            alerts.len()
        );
        for a in &alerts {
            let at = local_time(a["at"].as_i64().unwrap_or_default());
            println!("  ! {at}  {}", a["text"].as_str().unwrap_or_default());
        }
    }
    let waiting: Vec<Value> = list("invitations")
        .into_iter()
        .filter(|i| i["request"] == "waiting")
        .collect();
    for r in &waiting {
        println!(
            "invitation waiting: group {} from {} (`mlschat request accept|decline`)",
            r["group"].as_str().unwrap_or("?"),
            inviter(r)
        );
    }
    let groups = list("groups");
    let active = groups.iter().filter(|g| g["state"] == "active").count();
    println!("groups: {} ({active} active)", groups.len());
    for g in groups.iter().filter(|g| g["state"] != "active") {
        println!(
            "  {}: {}",
            g["name"].as_str().or(g["id"].as_str()).unwrap_or_default(),
            g["state"].as_str().unwrap_or_default()
        );
    }
    for lane in list("lanes") {
        println!(
            "stuck: group {}: {} posts refused as stale with nothing new to read (backing off)",
            lane["group"].as_str().unwrap_or_default(),
            lane["refusals"]
        );
    }
}

impl Report {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    fn emit(&self, to_stderr: bool, text: impl FnOnce() -> String, value: impl FnOnce() -> Value) {
        let line = if self.json {
            value().to_string()
        } else {
            text()
        };
        if to_stderr {
            eprintln!("{line}");
        } else {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) is not an error worth a panic.
            let _ = writeln!(stdout, "{line}");
        }
    }

    /// `whoami`'s QR code: the identity and fingerprint, to scan from another device.
    pub fn whoami_qr(&self, answer: &Value) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        let s = |k: &str| answer[k].as_str().unwrap_or_default();
        print_qr(
            &format!("mlschat:{}/{}#{}", s("user"), s("device"), s("fingerprint")),
            true,
        )
    }

    /// The code alone on stdout, so that `$(mlschat invite)` is the code; what a person reads
    /// beside it (the fingerprint to compare, the QR code) goes to stderr unless stdout is a
    /// terminal.
    pub fn invite(&self, code: &InviteCode, qr: bool) -> anyhow::Result<()> {
        let text = code.to_string();
        let fingerprint = Fingerprint::of_signature_key(&code.signature_key);
        self.emit(
            false,
            || text.clone(),
            || json!({"code": text, "fingerprint": fingerprint.to_hex()}),
        );
        if !self.json {
            let to_terminal = std::io::stdout().is_terminal();
            let note = format!("{}: {fingerprint} (compare it with theirs)", code.name);
            if to_terminal {
                println!("{note}");
            } else {
                eprintln!("{note}");
            }
            if qr {
                print_qr(&text, to_terminal)?;
            }
        }
        Ok(())
    }

    /// Prints the answer of a daemon API method.
    pub fn answer(&self, method: &str, answer: &Value) {
        if self.json {
            self.emit(false, String::new, || answer.clone());
            return;
        }
        let text = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
        match method {
            "group.leave" => println!(
                "asked to leave: a member's next commit removes you (`mlschat group list` shows \
                 `removed` then)"
            ),
            _ if answer["queued"] == true => println!(
                "queued: the connection to the delivery node was lost; the change goes on once \
                 it is back"
            ),
            "send" if answer["posted"] == true => println!("sent"),
            "send" => println!("queued: the delivery node is unreachable; it goes out later"),
            "sync" | "request.accept" => {
                let new: Vec<String> = answer["new"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        format!(
                            "{} new in {}",
                            g["entries"],
                            g["group"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                if new.is_empty() {
                    // A running daemon applies what arrives as it comes: a sync through it may
                    // find nothing that was not already shown.
                    println!("up to date (`mlschat history GROUP` shows what arrived)");
                } else {
                    println!("up to date: {}", new.join(", "));
                }
            }
            "groups" => {
                for g in answer.as_array().into_iter().flatten() {
                    let id = g["id"].as_str().unwrap_or_default();
                    let topic = match g["topic"].as_str() {
                        Some(topic) if !topic.is_empty() => format!("  ({topic})"),
                        _ => String::new(),
                    };
                    println!(
                        "{:<20} id {id}  epoch {:<5} {:>6} members  {}{topic}",
                        g["name"].as_str().unwrap_or(id),
                        g["epoch"].as_u64().unwrap_or_default(),
                        g["members"].as_u64().unwrap_or_default(),
                        g["state"].as_str().unwrap_or_default()
                    );
                }
            }
            "members" => {
                for m in answer.as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or("(no name)");
                    let mut label = sender_label(name, m["state"].as_str().unwrap_or_default());
                    if m["admin"] == true {
                        label.push_str(" (admin)");
                    }
                    if m["invited"] == true {
                        label.push_str(" (invited: not joined yet)");
                    }
                    println!(
                        "#{:<6} {label:<40} {}",
                        m["leaf"].as_u64().unwrap_or_default(),
                        m["fingerprint"].as_str().unwrap_or_default()
                    );
                }
            }
            "history" => {
                for e in answer.as_array().into_iter().flatten() {
                    let s = |k: &str| e[k].as_str().unwrap_or_default();
                    // When, not the row's number: rows are numbered across all groups.
                    let sender = sender_label(s("sender"), s("sender_state"));
                    let at = local_time(e["at"].as_i64().unwrap_or_default());
                    let epoch = e["epoch"].as_u64().unwrap_or_default();
                    match s("kind") {
                        "text" => println!("{at} e{epoch:<4} {sender}: {}", s("body")),
                        _ => println!("{at} e{epoch:<4} * {sender} {}", s("body")),
                    }
                }
            }
            "contact.add" => println!("contact {} ({})", text("name"), text("fingerprint")),
            "contact.remove" => println!("removed contact {}", text("name")),
            "contacts" => {
                for c in answer.as_array().into_iter().flatten() {
                    let flag = c["flagged"].as_str().map(|f| {
                        format!("  FLAGGED: {f} (`mlschat contact verify {}`)", c["name"])
                    });
                    let verified = if c["verified"] == true {
                        "  verified"
                    } else {
                        ""
                    };
                    println!(
                        "{:<30} {}{verified}{}",
                        c["name"].as_str().unwrap_or_default(),
                        c["fingerprint"].as_str().unwrap_or_default(),
                        flag.unwrap_or_default()
                    );
                }
            }
            "contact.verify" => {
                let (name, number) = (text("contact"), text("safety_number"));
                if answer["changed_key"] == true {
                    println!(
                        "{name} is flagged: you were shown ANOTHER key for them ({}).\n\
                         Accept it only if they read you this same number:",
                        text("fingerprint")
                    );
                } else {
                    println!(
                        "Your safety number with {name} (their key {}):",
                        text("fingerprint")
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
                if answer["verified"] == true {
                    println!("verified: it matched when you compared it");
                } else {
                    println!(
                        "Compare it with {name} in person or on a call. If it is the same, run:\n    \
                         mlschat contact verify {name} --matches '{number}'"
                    );
                }
            }
            "requests" => {
                let requests = answer.as_array().cloned().unwrap_or_default();
                if requests.is_empty() {
                    println!("no invitations wait for you");
                }
                for r in requests {
                    println!(
                        "group {}  from {}",
                        r["group"].as_str().unwrap_or("?"),
                        inviter(&r)
                    );
                }
            }
            "whoami" => {
                let s = |k: &str| answer[k].as_str().unwrap_or_default();
                let stock = &answer["keypackages"];
                println!(
                    "identity:    {}/{}\nfingerprint: {}\nprofile:     {}\nkeypackages: {} one-time, {} last-resort",
                    s("user"),
                    s("device"),
                    Fingerprint::from_hex(s("fingerprint"))
                        .map_or(s("fingerprint").to_owned(), |f| f.to_string()),
                    s("profile"),
                    stock["one_time"],
                    if stock["last_resort"] == true {
                        "a"
                    } else {
                        "no"
                    }
                );
            }
            "home" => match answer["address"].as_str() {
                Some(address) => println!(
                    "delivery node: {address} (certificate {})",
                    text("fingerprint")
                ),
                None => println!("no delivery node set: groups are kept in files"),
            },
            "status" => status(answer),
            "alerts.ack" => println!("acknowledged {} alerts", answer["acknowledged"]),
            "group.rename" => println!("group {} is now called {}", text("group"), text("name")),
            "request.decline" => println!(
                "declined the invitation to {} from {}",
                text("group"),
                text("inviter")
            ),
            _ if answer.get("epoch").is_some() => {
                let invited = match answer["invited"].as_u64() {
                    Some(n) if n > 0 => format!(" ({n} invited: they join when they accept)"),
                    _ => String::new(),
                };
                println!(
                    "{}: epoch {}, {} members{invited}",
                    answer["name"].as_str().unwrap_or(&text("id")),
                    answer["epoch"],
                    answer["members"]
                );
                if method == "group.set" {
                    println!(
                        "shared name: {}\ntopic: {}",
                        answer["shared_name"].as_str().unwrap_or("(none)"),
                        answer["topic"].as_str().unwrap_or("(none)")
                    );
                }
            }
            _ => println!("{answer}"),
        }
    }

    /// Prints one event of the daemon (or one history row): `[group] sender: text`.
    pub fn event(&self, event: &Value) {
        if self.json {
            self.emit(false, String::new, || event.clone());
            return;
        }
        let s = |k: &str| event[k].as_str().unwrap_or_default();
        let group = if s("group").is_empty() {
            String::new()
        } else {
            format!("[{}] ", s("group"))
        };
        let sender = sender_label(s("sender"), s("sender_state"));
        let line = match s("kind") {
            "text" => format!("{group}{sender}: {}", s("body")),
            _ => format!("{group}* {sender} {}", s("body")),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    pub fn key_package(&self, out: &OutArgs, last_resort: bool, one_time: u64, has_last: bool) {
        self.emit(
            out.out.is_none(),
            || {
                let kind = if last_resort { "last-resort" } else { "one-time" };
                format!("wrote a {kind} KeyPackage ({one_time} one-time outstanding)")
            },
            || json!({"keypackage": {"last_resort": last_resort}, "one_time_outstanding": one_time, "last_resort_exists": has_last}),
        );
    }

    pub fn group_created(&self, group: &GroupSummary) {
        self.emit(
            false,
            || format!("created group {} (id {})", group.handle(), group.id),
            || json!(group),
        );
    }

    pub fn committed(&self, out: &OutArgs, group: &str, what: &str, count: usize) {
        self.emit(
            out.out.is_none(),
            || format!("[{group}] {what} {count}; commit written"),
            || json!({"group": group, "action": what, "count": count}),
        );
    }

    pub fn sent(&self, out: &OutArgs, group: &str, outgoing: &Outgoing) {
        self.emit(
            out.out.is_none(),
            || format!("[{group}] sent ({} packet(s))", outgoing.to_group.len()),
            || json!({"group": group, "sent": outgoing.to_group.len()}),
        );
    }

    pub fn outbox(&self, out: &OutArgs, unsent: &[Unsent]) {
        self.emit(
            out.out.is_none(),
            || format!("wrote {} unsent packet(s)", unsent.len()),
            || {
                json!({"unsent": unsent.iter().map(|u| json!({"group": u.group, "audience": u.audience})).collect::<Vec<_>>()})
            },
        );
    }

    pub fn received(&self, received: &Received) {
        match received {
            Received::Joined { group, inviter } => self.emit(
                false,
                || {
                    format!(
                        "[{}] joined, added by {} ({} members, epoch {})",
                        group.handle(),
                        display_member(inviter),
                        group.members,
                        group.epoch
                    )
                },
                || json!({"event": "joined", "group": group, "inviter": member_json(inviter)}),
            ),
            Received::Message { group, incoming } => {
                let handle = group.handle();
                match incoming {
                    Incoming::Application { sender, plaintext } => {
                        let text = mlschat_wire::content::Content::show(plaintext);
                        self.emit(
                            false,
                            || format!("[{handle}] {}: {text}", display_member(sender)),
                            || json!({"event": "message", "group": group, "sender": member_json(sender), "text": text}),
                        )
                    }
                    Incoming::Proposal { sender, summary } => self.emit(
                        false,
                        || format!("[{handle}] {} proposed: {summary}", display_member(sender)),
                        || json!({"event": "proposal", "group": group, "sender": member_json(sender), "proposal": summary}),
                    ),
                    Incoming::Commit {
                        sender,
                        added,
                        removed,
                        settings,
                        removed_us,
                        epoch,
                    } => self.emit(
                        false,
                        || {
                            let who = display_member(sender);
                            if *removed_us {
                                format!("[{handle}] you were removed by {who}")
                            } else {
                                format!("[{handle}] {who} {} (epoch {epoch})", describe_commit(added, removed, settings.as_ref()))
                            }
                        },
                        || {
                            json!({
                                "event": "commit", "group": group, "sender": member_json(sender),
                                "added": added.iter().map(member_json).collect::<Vec<_>>(),
                                "removed": removed.iter().map(member_json).collect::<Vec<_>>(),
                                "settings": settings.as_ref().map(|s| json!({
                                    "name": s.name, "topic": s.topic,
                                    "admins": s.admins.iter().map(hex::encode).collect::<Vec<_>>(),
                                })),
                                "removed_us": removed_us, "epoch": epoch,
                            })
                        },
                    ),
                }
            }
        }
    }
}
