//! `mlschat-demo`: a group's life with a delivery node and four peers, each a real process (an
//! embedded `mlschat-delivery` on SQLite, and an `mlschat daemon` per person), printed as what
//! each member sees. It ends by checking that every member holds the same epoch authenticator.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mlschat_tests::cluster::{DeliveryProcess, PeerProcess, converged, eventually};
use serde_json::{Value, json};

/// Where `mlschat` and `mlschat-delivery` are: beside this binary (a cargo build), else on PATH.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the demo's binary")?;
    let here = exe.parent().context("the binary's directory")?.to_owned();
    if here.join("mlschat-delivery").exists() && here.join("mlschat").exists() {
        return Ok(here);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join("mlschat-delivery").exists() && dir.join("mlschat").exists() {
            return Ok(dir);
        }
    }
    bail!(
        "mlschat-delivery is neither beside {} nor on PATH",
        exe.display()
    )
}

/// The cast and the group they share.
struct Play {
    alice: PeerProcess,
    bob: PeerProcess,
    carol: PeerProcess,
    dave: PeerProcess,
    /// History rows each member has been shown, so each line is printed once.
    shown: std::collections::HashMap<(String, String), usize>,
}

fn scene(title: &str) {
    println!("\n== {title}");
}

fn says(who: &PeerProcess, group: &str, text: &str) -> anyhow::Result<()> {
    println!("  {:<6}> {text}", who.name);
    let answer = who.call("send", json!({"group": group, "text": text}))?;
    if answer["posted"] != true {
        bail!("{}'s message was not posted", who.name);
    }
    Ok(())
}

impl Play {
    /// Prints what `who` has newly seen in `group`, waiting until at least `count` rows.
    fn sees(&mut self, who: &str, group: &str, count: usize) -> anyhow::Result<()> {
        let peer = self.peer(who);
        let mut rows = Vec::new();
        eventually(&format!("{who} sees {count} entries"), || {
            rows = peer.history(group).unwrap_or_default();
            rows.len() >= count
        })?;
        let shown = self
            .shown
            .entry((who.to_owned(), group.to_owned()))
            .or_default();
        for row in rows.iter().skip(*shown) {
            println!("  {:<6}| {}", who, line(row));
        }
        *shown = rows.len();
        Ok(())
    }

    fn peer(&self, name: &str) -> &PeerProcess {
        match name {
            "alice" => &self.alice,
            "bob" => &self.bob,
            "carol" => &self.carol,
            _ => &self.dave,
        }
    }
}

fn line(row: &Value) -> String {
    let s = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
    let user = s("sender").split('/').next().unwrap_or_default().to_owned();
    match s("kind").as_str() {
        "text" => format!("{user}: {}", s("body")),
        _ => format!("* {user} {}", s("body")),
    }
}

/// `mlschat-demo [--dir DIR]`: DIR keeps the files and logs (default: a temporary directory).
fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir: Option<PathBuf> = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--dir"), Some(dir)) => Some(dir.into()),
        _ => bail!("usage: mlschat-demo [--dir DIR]"),
    };
    run(dir.as_deref())
}

fn run(dir: Option<&Path>) -> anyhow::Result<()> {
    let temp;
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let bins = bin_dir()?;
    scene("an embedded delivery node (SQLite) and four people, each a process");
    let node = DeliveryProcess::start(&bins, &dir.join("delivery"), None, &[])?;
    println!(
        "  delivery node on {} (certificate {}…)",
        node.address,
        &node.fingerprint[..16]
    );
    let peers = dir.join("peers");
    let new = |name: &str| PeerProcess::new(&bins, &peers, name, &node);
    let (mut alice, bob, mut carol, dave) =
        (new("alice")?, new("bob")?, new("carol")?, new("dave")?);
    alice.start()?;
    carol.start()?;
    let mut dave = dave;
    dave.start()?;
    // Bob has been online once, which published his KeyPackages; now he is away.
    bob.cli(&["sync"])?;
    for other in [&bob, &carol, &dave] {
        alice.meet(other)?;
    }
    println!("  alice, carol and dave are online; bob is away");

    scene("alice creates a group and adds carol, and bob while he is away");
    let group = alice.call("group.create", json!({"name": "book-club"}))?;
    let group = group["id"].as_str().context("a group id")?.to_owned();
    alice.call(
        "group.add",
        json!({"group": group, "who": ["carol", "bob"]}),
    )?;
    let mut play = Play {
        alice,
        bob,
        carol,
        dave,
        shown: Default::default(),
    };
    play.sees("carol", &group, 1)?;

    scene("messages while bob is away");
    says(&play.alice, &group, "Welcome! First book: Middlemarch?")?;
    says(&play.carol, &group, "Yes please. Bob will love it.")?;
    play.sees("alice", &group, 5)?;

    scene("bob comes back and catches up, in order");
    play.bob.start()?;
    play.sees("bob", &group, 3)?;
    says(&play.bob, &group, "Back! Count me in.")?;
    play.sees("carol", &group, 6)?;

    scene("alice removes carol; carol reads nothing after that");
    play.alice
        .call("group.remove", json!({"group": group, "who": ["carol"]}))?;
    says(
        &play.alice,
        &group,
        "(a surprise for carol's birthday: she must not see this)",
    )?;
    play.sees("bob", &group, 7)?;
    eventually("carol learns she was removed", || {
        play.carol
            .group(&group)
            .is_some_and(|g| g["state"] == "removed")
    })?;
    play.sees("carol", &group, 7)?;
    let secret = play
        .carol
        .texts(&group)?
        .iter()
        .any(|t| t.contains("surprise"));
    println!("  carol can read the surprise: {secret}");
    if secret {
        bail!("a removed member read a message sent after her removal");
    }

    scene("alice adds carol back (a new leaf, new keys)");
    // A removed member keeps her old state for history; she joins again as a new member.
    play.alice
        .call("group.add", json!({"group": group, "who": ["carol"]}))?;
    eventually("carol is back in", || {
        play.carol.try_call("groups", json!({})).is_ok_and(|gs| {
            gs.as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["id"] == group.as_str())
                .any(|g| g["state"] == "active")
        })
    })?;
    says(&play.alice, &group, "Welcome back, carol!")?;
    eventually("carol reads the welcome back", || {
        play.carol
            .texts(&group)
            .is_ok_and(|t| t.iter().any(|t| t.contains("Welcome back")))
    })?;
    println!("  carol | alice: Welcome back, carol!");

    scene("a 1:1 chat is a two-member group on the same path");
    let direct = play
        .alice
        .call("group.create", json!({"name": "alice+dave"}))?;
    let direct = direct["id"].as_str().context("a group id")?.to_owned();
    play.alice
        .call("group.add", json!({"group": direct, "who": ["dave"]}))?;
    play.sees("dave", &direct, 1)?;
    says(&play.alice, &direct, "Dave, are you coming on Thursday?")?;
    says(&play.dave, &direct, "Wouldn't miss it.")?;
    play.sees("alice", &direct, 5)?;

    scene("bob and carol commit at the same moment; the node orders one, the other redoes");
    let before = play.bob.group(&group).map(|g| g["epoch"].clone());
    std::thread::scope(|s| {
        let bob = s.spawn(|| play.bob.call("group.update", json!({"group": group})));
        let carol = s.spawn(|| play.carol.call("group.update", json!({"group": group})));
        bob.join()
            .expect("bob's thread")
            .and(carol.join().expect("carol's thread"))
    })?;
    let members = [&play.alice, &play.bob, &play.carol];
    let (epoch, authenticator) = converged(&members, &group)?;
    println!(
        "  epoch {} -> {epoch}: both updates applied, one after the other",
        before.unwrap_or_default()
    );

    scene("does everyone agree?");
    for peer in members {
        let g = peer.group(&group).context("the group")?;
        println!(
            "  {:<6} book-club  epoch {}  {} members  authenticator {}…",
            peer.name,
            g["epoch"],
            g["members"],
            &g["epoch_authenticator"].as_str().unwrap_or_default()[..16]
        );
    }
    let (_, direct_auth) = converged(&[&play.alice, &play.dave], &direct)?;
    println!(
        "  alice and dave agree on their 1:1 chat ({}…)",
        &direct_auth[..16]
    );
    println!(
        "\nevery member holds the same epoch authenticator ({}…): the demo passed",
        &authenticator[..16]
    );
    Ok(())
}
