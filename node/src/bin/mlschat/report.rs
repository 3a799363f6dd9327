//! What the CLI prints: one readable line per fact, or one JSON object per line with `-o json`.
//! When MLS packets go to stdout, reports go to stderr so the two never mix.

use std::io::{IsTerminal as _, Write};
use std::path::Path;

use mlschat_node::engine::{Incoming, MemberInfo, display_member};
use mlschat_node::identity::Fingerprint;
use mlschat_node::profile::{
    GroupSummary, Home, InviteCode, Outgoing, Profile, Received, Unsent, describe_commit,
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
        _ => name.to_owned(),
    }
}

fn member_json(m: &MemberInfo) -> Value {
    json!({
        "leaf": m.leaf_index,
        "name": m.name.as_ref().map(|n| n.to_string()),
        "fingerprint": m.fingerprint.to_hex(),
    })
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

    pub fn whoami(&self, profile: &Profile, dir: &Path, qr: bool) -> anyhow::Result<()> {
        let identity = profile.identity();
        let fingerprint = identity.fingerprint();
        let (one_time, last_resort) = profile.key_package_stock()?;
        self.emit(
            false,
            || {
                format!(
                    "identity:    {}\nfingerprint: {}\nprofile:     {}\nkeypackages: {} one-time, {} last-resort",
                    identity.name,
                    fingerprint,
                    dir.display(),
                    one_time,
                    if last_resort { "a" } else { "no" }
                )
            },
            || {
                json!({
                    "user": identity.name.user,
                    "device": identity.name.device,
                    "fingerprint": fingerprint.to_hex(),
                    "profile": dir.display().to_string(),
                    "keypackages": {"one_time": one_time, "last_resort": last_resort},
                })
            },
        );
        if qr && !self.json {
            let payload = format!("mlschat:{}#{}", identity.name, fingerprint.to_hex());
            print_qr(&payload, true)?;
        }
        Ok(())
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

    pub fn home(&self, home: Option<&Home>) {
        let address = home.map(|h| h.address.clone());
        let fingerprint = home.map(|h| hex::encode(h.fingerprint));
        self.emit(
            false,
            || match home {
                Some(h) => format!(
                    "delivery node: {} (certificate {})",
                    h.address,
                    hex::encode(h.fingerprint)
                ),
                None => "no delivery node set: groups are kept in files".into(),
            },
            || json!({"address": address, "fingerprint": fingerprint}),
        );
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
                    println!("up to date, nothing new");
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
                    let sender = sender_label(s("sender"), s("sender_state"));
                    let (seq, epoch) = (e["seq"].as_i64(), e["epoch"].as_u64());
                    let (seq, epoch) = (seq.unwrap_or_default(), epoch.unwrap_or_default());
                    match s("kind") {
                        "text" => println!("{seq:>5} e{epoch:<4} {sender}: {}", s("body")),
                        _ => println!("{seq:>5} e{epoch:<4} * {sender} {}", s("body")),
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
                    let s = |k: &str| r[k].as_str().unwrap_or("?").to_owned();
                    println!(
                        "group {}  from {} (not a contact; key {})",
                        s("group"),
                        s("inviter"),
                        s("inviter_fingerprint")
                    );
                }
            }
            "request.decline" => println!(
                "declined the invitation to {} from {}",
                text("group"),
                text("inviter")
            ),
            _ if answer.get("epoch").is_some() => println!(
                "{}: epoch {}, {} members",
                answer["name"].as_str().unwrap_or(&text("id")),
                answer["epoch"],
                answer["members"]
            ),
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

    pub fn renamed(&self, group: &str, name: &str) {
        self.emit(
            false,
            || format!("group {group} is now called {name}"),
            || json!({"group": group, "name": name}),
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
