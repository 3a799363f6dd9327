//! `mlschat` on a real terminal: the chat (issue 11, finding 5) and the passphrase prompt
//! (finding 7). A tmux pane runs it, keys go in with `send-keys`, the screen comes back with
//! `capture-pane`.

use std::process::Command;

use mlschat_tests::{Node, bin_dir, eventually};
use serde_json::json;

/// A tmux server of its own (its own socket), killed with the test.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, env: &[(&str, String)]) -> Self {
        // One server per pane: the tests of this file run at once, in one process.
        static PANES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pane = PANES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("mlschat-test-{}-{pane}", std::process::id());
        let mut tmux = Command::new("tmux");
        tmux.args(["-L", &socket, "new-session", "-d", "-x", "100", "-y", "24"]);
        for (key, value) in env {
            tmux.args(["-e", &format!("{key}={value}")]);
        }
        let status = tmux.arg(command).status().expect("tmux is installed");
        assert!(status.success());
        Self { socket }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "0"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn type_line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen once it holds `text`; fails with the screen as it is after 30 s.
    fn shows(&self, what: &str, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting for {what}: {text:?} is not on the screen:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn the_terminal_chat_sends_shows_members_switches_groups_and_counts_unread() {
    let node = Node::start();
    let mut alice = node.peer("alice");
    let mut bob = node.peer("bob");
    alice.start().unwrap();
    bob.start().unwrap();
    alice.meet(&bob).unwrap();
    // Bob compared safety numbers with Alice (`cli` answers in JSON).
    let number: serde_json::Value =
        serde_json::from_str(&bob.cli(&["contact", "verify", "alice"]).unwrap()).unwrap();
    bob.cli(&[
        "contact",
        "verify",
        "alice",
        "--matches",
        number["safety_number"].as_str().unwrap(),
    ])
    .unwrap();
    let id = |group: serde_json::Value| group["id"].as_str().unwrap().to_owned();
    let team = id(alice.call("group.create", json!({"name": "team"})).unwrap());
    let other = id(alice
        .call("group.create", json!({"name": "random"}))
        .unwrap());
    for group in [&team, &other] {
        alice
            .call("group.add", json!({"group": group, "who": ["bob"]}))
            .unwrap();
    }
    alice
        .call(
            "send",
            json!({"group": team, "text": "welcome to the team"}),
        )
        .unwrap();
    eventually("bob is in both groups", || {
        bob.group(&team).is_some() && bob.group(&other).is_some()
    });
    eventually("bob has the welcome text", || {
        bob.texts(&team).unwrap().len() == 1
    });
    bob.cli(&["group", "rename", &team, "team"]).unwrap();
    bob.cli(&["group", "rename", &other, "random"]).unwrap();
    alice
        .call(
            "group.set",
            json!({"group": team, "topic": "launch friday"}),
        )
        .unwrap();
    eventually("bob sees the topic", || {
        bob.group(&team)
            .is_some_and(|g| g["topic"] == "launch friday")
    });

    let chat = format!(
        "{} --profile bob chat team",
        bin_dir().join("mlschat").display()
    );
    let tmux = Tmux::start(
        &chat,
        &[("MLSCHAT_DATA_DIR", bob.data_dir().display().to_string())],
    );
    // The scrollback with times, and the members with what they are to Bob.
    let screen = tmux.shows("the history", "welcome to the team");
    assert!(
        regex_like_time(&screen),
        "no HH:MM time before the text:\n{screen}"
    );
    assert!(screen.contains("alice/laptop ✓"), "{screen}");
    assert!(screen.contains("bob/laptop  (you)"), "{screen}");
    // The shared topic beside the name, and who may add and remove.
    assert!(screen.contains("team · launch friday"), "{screen}");
    assert!(screen.contains("alice/laptop (admin)"), "{screen}");

    // What Bob types is sent, and shown once.
    tmux.type_line("hello from the terminal");
    let screen = tmux.shows("bob's text", "bob/laptop: hello from the terminal");
    eventually("alice reads bob's text", || {
        alice
            .texts(&team)
            .unwrap()
            .iter()
            .any(|t| t.contains("hello from the terminal"))
    });
    assert_eq!(
        screen.matches("hello from the terminal").count(),
        1,
        "{screen}"
    );

    // An arrival in the other group is counted there; Tab goes to it and clears the count.
    alice
        .call("send", json!({"group": other, "text": "psst"}))
        .unwrap();
    alice
        .call("send", json!({"group": other, "text": "over here"}))
        .unwrap();
    let screen = tmux.shows("the unread count", "random (2)");
    println!("{screen}"); // the README's picture
    tmux.keys(&["Tab"]);
    let screen = tmux.shows("the other group", "over here");
    assert!(!screen.contains("random (2)"), "{screen}");

    // Arrivals while typing do not land in the input line.
    tmux.keys(&["-l", "half typ"]);
    alice
        .call("send", json!({"group": other, "text": "interrupting"}))
        .unwrap();
    let screen = tmux.shows("the arrival", "alice/laptop ✓: interrupting");
    assert!(screen.contains("> half typ"), "{screen}");
    tmux.keys(&["C-u"]);

    // A command is not sent as text.
    tmux.type_line("/help");
    tmux.shows("the help", "/verify NAME [NUMBER]");
    assert!(
        !alice
            .texts(&team)
            .unwrap()
            .iter()
            .any(|t| t.contains("help"))
    );

    // An unknown command says so; /quit ends the chat.
    tmux.type_line("/nonsense");
    tmux.shows("the refusal", "not a command: /nonsense");
    tmux.type_line("/quit");
    eventually("the chat ends", || !tmux.screen().contains("Ctrl-C quit"));
}

/// Whether some line holds `HH:MM ` followed by a sender.
fn regex_like_time(screen: &str) -> bool {
    screen.lines().any(|line| {
        line.char_indices().any(|(i, _)| {
            let b = line.as_bytes();
            b.len() > i + 6
                && b[i].is_ascii_digit()
                && b[i + 1].is_ascii_digit()
                && b[i + 2] == b':'
                && b[i + 3].is_ascii_digit()
                && b[i + 4].is_ascii_digit()
                && b[i + 5] == b' '
        })
    })
}

/// Issue 11, finding 7: an encrypted profile opened from a terminal with no passphrase set
/// failed; now it asks, without showing what is typed.
#[test]
fn an_encrypted_profile_asks_for_its_passphrase_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mlschat = bin_dir().join("mlschat");
    let data = dir.path().display().to_string();
    let created = Command::new(&mlschat)
        .args([
            "--data-dir",
            &data,
            "--profile",
            "p",
            "init",
            "--user",
            "ann",
            "--encrypt",
        ])
        .env("MLSCHAT_PASSPHRASE", "correct horse")
        .status()
        .unwrap();
    assert!(created.success());
    let command = format!(
        "{} --data-dir {data} --profile p -o json whoami; echo exit=$?; {0} --data-dir {data} --profile p whoami; echo exit=$?; sleep 60",
        mlschat.display()
    );
    let tmux = Tmux::start(&command, &[]);
    tmux.shows("the prompt", "passphrase for profile p:");
    tmux.type_line("correct horse");
    let screen = tmux.shows("the profile opened", "exit=0");
    assert!(screen.contains(r#""user":"ann""#), "{screen}");
    assert!(
        !screen.contains("correct horse"),
        "the passphrase was shown:\n{screen}"
    );
    // A wrong one is refused as a passphrase failure (exit 8).
    tmux.shows("the second prompt", "exit=0\npassphrase for profile p:");
    tmux.type_line("battery staple");
    let screen = tmux.shows("the refusal", "exit=8");
    assert!(!screen.contains("battery staple"), "{screen}");
}

/// Issue 11: `contact verify` on a terminal shows the safety number as a QR code too.
#[test]
fn a_safety_number_shows_as_a_qr_code_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mlschat = bin_dir().join("mlschat");
    let data = dir.path().display().to_string();
    let run = |profile: &str, args: &[&str]| -> String {
        let output = Command::new(&mlschat)
            .args(["--data-dir", &data, "--profile", profile])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let pin = "ab".repeat(32);
    for (profile, user) in [("a", "ann"), ("b", "ben")] {
        run(profile, &["init", "--user", user]);
        run(profile, &["home", "set", "127.0.0.1:4433", &pin]);
    }
    let code = run("b", &["invite"]);
    run("a", &["contact", "add", code.trim()]);
    let command = format!(
        "{} --data-dir {data} --profile a contact verify ben; sleep 60",
        mlschat.display()
    );
    let tmux = Tmux::start(&command, &[]);
    tmux.shows("the QR code", "█ ▄▄▄▄▄ █");
    // How to record a match follows the code (the number above it has scrolled off).
    let screen = tmux.shows("what to do next", "contact verify ben/default --matches");
    assert!(screen.contains("█ ▄▄▄▄▄ █"), "{screen}");
}

/// Issue 19, finding 8: the chat's input line could not be edited (Ctrl-A/E/K/W typed letters,
/// arrows did nothing, Up recalled nothing), a group joined or a topic changed while it ran never
/// showed, and invitations and alerts could be neither seen nor answered in it.
#[test]
fn the_chat_edits_like_readline_and_shows_what_changes_while_it_runs() {
    let node = Node::start();
    let mut alice = node.peer("alice");
    let mut bob = node.peer("bob");
    let mut carol = node.peer("carol");
    for peer in [&mut alice, &mut bob, &mut carol] {
        peer.start().unwrap();
    }
    alice.meet(&bob).unwrap();
    carol.knows(&bob).unwrap();
    let id = |group: serde_json::Value| group["id"].as_str().unwrap().to_owned();
    let team = id(alice.call("group.create", json!({"name": "team"})).unwrap());
    alice
        .call("group.add", json!({"group": team, "who": ["bob"]}))
        .unwrap();
    eventually("bob is in the team", || bob.group(&team).is_some());
    let chat = format!(
        "{} --profile bob chat team",
        bin_dir().join("mlschat").display()
    );
    let tmux = Tmux::start(
        &chat,
        &[("MLSCHAT_DATA_DIR", bob.data_dir().display().to_string())],
    );
    tmux.shows("the chat", "Ctrl-C quit");
    let alice_reads = |text: &str| {
        eventually(&format!("alice reads {text:?}"), || {
            alice
                .texts(&team)
                .unwrap()
                .iter()
                .any(|t| t.ends_with(&format!(": {text}")))
        })
    };

    // Readline keys: Home and Ctrl-A, arrows, Ctrl-E and End, Ctrl-W, Ctrl-K.
    tmux.keys(&["-l", "helo world"]);
    tmux.keys(&["C-a", "Right", "Right", "Right"]);
    tmux.keys(&["-l", "l"]);
    tmux.keys(&["End"]);
    tmux.keys(&["-l", "!"]);
    tmux.shows("the edited line", "> hello world!");
    tmux.keys(&["Enter"]);
    alice_reads("hello world!");
    tmux.keys(&["-l", "one two three"]);
    tmux.keys(&["C-w"]);
    tmux.keys(&["Home", "Right", "Right", "Right", "C-k"]);
    tmux.keys(&["-l", " more"]);
    tmux.keys(&["C-e"]);
    tmux.shows("the cut line", "> one more");
    tmux.keys(&["Enter"]);
    alice_reads("one more");
    // Up recalls what was sent, newest first; Down comes back.
    tmux.keys(&["Up"]);
    tmux.shows("the last text recalled", "> one more");
    tmux.keys(&["Up"]);
    tmux.shows("the one before", "> hello world!");
    tmux.keys(&["Down", "Down"]);
    let screen = tmux.shows("the empty line again", "> \u{20}");
    assert!(!screen.contains("> hello"), "{screen}");

    // A topic set and a group joined while the chat runs show at once.
    alice
        .call(
            "group.set",
            json!({"group": team, "topic": "launch friday"}),
        )
        .unwrap();
    tmux.shows("the new topic", "team · launch friday");
    let second = id(alice
        .call("group.create", json!({"name": "second"}))
        .unwrap());
    alice
        .call("group.add", json!({"group": second, "who": ["bob"]}))
        .unwrap();
    tmux.shows("the group joined", "you are in a new group");

    // A stranger's invitation: counted below, listed by /requests, answered by /accept.
    let party = id(carol
        .call("group.create", json!({"name": "party"}))
        .unwrap());
    carol
        .call("group.add", json!({"group": party, "who": ["bob"]}))
        .unwrap();
    tmux.shows("the invitation counted", "1 invitation: /requests");
    tmux.type_line("/requests");
    tmux.shows("the request", "from carol/laptop ? (not a contact");
    let screen = tmux.shows("the alert counted", "1 alert: /alerts");
    println!("{screen}"); // the README's picture
    tmux.type_line("/alerts");
    tmux.shows("the alert", "! ");
    eventually("the alert is read", || {
        !tmux.screen().contains("alert: /alerts")
    });
    tmux.type_line(&format!("/accept {}", &party[..8]));
    eventually("bob joins carol's group", || bob.group(&party).is_some());
    tmux.shows("the party tab", " party ");
    eventually("no invitation waits", || {
        !tmux.screen().contains("invitation: /requests")
    });
    tmux.type_line("/quit");
}

/// Issue 19, finding 8: long texts wrap between words, days are marked, and what arrived while
/// we looked at another group is marked new when we come back.
#[test]
fn the_chat_wraps_words_and_marks_days_and_what_is_new() {
    let node = Node::start();
    let mut alice = node.peer("alice");
    let mut bob = node.peer("bob");
    alice.start().unwrap();
    bob.start().unwrap();
    alice.meet(&bob).unwrap();
    let id = |group: serde_json::Value| group["id"].as_str().unwrap().to_owned();
    let team = id(alice.call("group.create", json!({"name": "team"})).unwrap());
    let other = id(alice
        .call("group.create", json!({"name": "other"}))
        .unwrap());
    for group in [&team, &other] {
        alice
            .call("group.add", json!({"group": group, "who": ["bob"]}))
            .unwrap();
    }
    eventually("bob is in both", || {
        bob.group(&team).is_some() && bob.group(&other).is_some()
    });
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi \
                 omicron pi rho sigma tau upsilon phi chi psi omega";
    alice
        .call("send", json!({"group": team, "text": words}))
        .unwrap();
    eventually("bob has it", || bob.texts(&team).unwrap().len() == 1);
    let chat = format!(
        "{} --profile bob chat team",
        bin_dir().join("mlschat").display()
    );
    let tmux = Tmux::start(
        &chat,
        &[("MLSCHAT_DATA_DIR", bob.data_dir().display().to_string())],
    );
    let screen = tmux.shows("the long text", "omega");
    // No word is cut in two: each is whole on some line.
    for word in words.split(' ') {
        assert!(
            screen
                .lines()
                .any(|l| l.split([' ', '│']).any(|w| w == word)),
            "{word} is cut:\n{screen}"
        );
    }
    let today = chrono_like_today();
    assert!(screen.contains(&format!("──── {today}")), "{screen}");
    // Away in the other group, a text arrives here: back, it is marked new.
    tmux.keys(&["Tab"]);
    tmux.shows("the other group", " other ");
    alice
        .call(
            "send",
            json!({"group": team, "text": "while you were away"}),
        )
        .unwrap();
    tmux.shows("the unread count", "team (1)");
    tmux.keys(&["BTab"]);
    let screen = tmux.shows("the new text", "while you were away");
    let marker = screen.find("──── new ────").expect("a new marker");
    assert!(
        marker < screen.find("while you were away").unwrap(),
        "{screen}"
    );
    assert!(marker > screen.find("omega").unwrap(), "{screen}");
}

/// Today as the chat's day lines say it, from `date` (the test's process has no chrono).
fn chrono_like_today() -> String {
    let out = Command::new("date").arg("+%A %-d %B %Y").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
