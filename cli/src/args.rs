//! The command line as `clap` types: global options, verbs and their arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit;

#[derive(Parser)]
#[command(
    name = "mlschat",
    version,
    about = "End-to-end encrypted group chat on MLS (RFC 9420)"
)]
#[command(after_help = exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// Where profiles live. Default: $XDG_DATA_HOME/mlschat or ~/.local/share/mlschat.
    #[arg(long, global = true, env = "MLSCHAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Which profile (one identity and its groups) to use.
    #[arg(
        long,
        global = true,
        env = "MLSCHAT_PROFILE",
        default_value = "default"
    )]
    pub profile: String,
    /// A file holding the passphrase of an encrypted profile (or set MLSCHAT_PASSPHRASE).
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Output format of reports.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "text"
    )]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum HomeCommand {
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
pub enum ContactCommand {
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
pub enum RequestCommand {
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
pub enum GroupCommand {
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
pub struct OutArgs {
    /// Write the MLS packets to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}
