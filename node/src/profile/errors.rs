//! What can go wrong in a profile operation: [`ProfileError`], and one type per kind of
//! operation for what our user asked that cannot be done (a text, a settings change, a group's
//! name, where a group is kept, contacts, adds, packets), as OpenMLS does per operation. Each
//! maps to one [`ErrorKind`](crate::kind::ErrorKind), in `kind.rs`.

use crate::engine::EngineError;
use crate::store::StoreError;

use super::SenderState;

/// What can go wrong in a profile operation.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This exact message was processed (or sent by us) before; it was ignored.
    #[error("duplicate: this message was already processed")]
    Duplicate,
    /// No group matches the name or id given.
    #[error("no group named or with id {0:?}")]
    UnknownGroup(String),
    /// We were removed from the group (or left it).
    #[error("you are no longer a member of group {0}")]
    NotMember(String),
    /// An MLS message for a group this profile is not in.
    #[error("message is for a group we are not in ({0})")]
    NotOurGroup(String),
    /// More than one group or member matches.
    #[error("{0:?} is ambiguous: it matches more than one {1}")]
    Ambiguous(String, &'static str),
    /// No member of the group matches.
    #[error("no member {0:?} in this group")]
    UnknownMember(String),
    /// A packet this operation does not take.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    /// A text refused before anything was written.
    #[error(transparent)]
    Text(#[from] TextError),
    /// A change of a group's shared settings refused.
    #[error(transparent)]
    Settings(#[from] SettingsChangeError),
    /// A local name for a group refused.
    #[error(transparent)]
    GroupName(#[from] GroupNameError),
    /// The operation is not for where the group is kept (files or a node).
    #[error(transparent)]
    Place(#[from] PlaceError),
    /// An invite code, a contact or a safety number refused.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// An add refused before anything was claimed.
    #[error(transparent)]
    Add(#[from] AddError),
    /// No invitation waiting for our answer matches.
    #[error("no request for a group {0}…: `mlschat request list` shows them")]
    NoRequest(String),
    /// Our commit and the log we read do not fit together.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Something our user typed is not what it should be (an address, a fingerprint).
    #[error("{0}")]
    Input(String),
    /// A packet could not be made (it would be over the size limit).
    #[error(transparent)]
    Packet(#[from] mlschat_wire::packet::PacketError),
    /// No contact has this name.
    #[error("no contact named {0:?} (add one with `mlschat contact add CODE`)")]
    UnknownContact(String),
    /// A contact's key is not the one we were given: never accepted silently.
    #[error("contact {0:?} is flagged: {1}")]
    ContactFlagged(String, String),
    /// We cannot go on in this group: a commit we could not process.
    #[error("group {0:?} is broken: {1}")]
    Broken(String, String),
    /// The operation needs a delivery node and none is set.
    #[error("no delivery node is set (run `mlschat home set ADDRESS FINGERPRINT`)")]
    NoHome,
    /// The profile's files do not hold a complete identity.
    #[error("profile is incomplete: {0}")]
    Corrupt(String),
    /// A Welcome from someone who is not a contact: it waits for our user to accept or decline.
    #[error(
        "{} (key {fingerprint}): their invitation waits for you (`mlschat request list`, then \
         `mlschat request accept GROUP` or `mlschat request decline GROUP`)",
        state.describe(inviter)
    )]
    Request {
        inviter: String,
        fingerprint: crate::identity::Fingerprint,
        state: SenderState,
    },
    /// A tree for joiners could not be sealed, or opened.
    #[error("tree for joiners: {0}")]
    Sealed(#[from] crate::sealed_tree::SealError),
}

impl From<rusqlite::Error> for ProfileError {
    fn from(e: rusqlite::Error) -> Self {
        ProfileError::Store(StoreError::Sqlite(e))
    }
}

/// A packet given to `receive` that cannot be processed as it is.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(
        "a bare Welcome cannot be joined without its ratchet tree; use the join packet written \
         by `group add`"
    )]
    BareWelcome,
    #[error("this is a KeyPackage: pass it to `group add`")]
    KeyPackage,
    #[error("join packet without a Welcome")]
    JoinWithoutWelcome,
}

/// A text refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("an empty text is not sent")]
    Empty,
    #[error("a text may hold at most {max_kib} KiB; this one has {kib} KiB")]
    TooLong { max_kib: usize, kib: usize },
    /// Queued behind our leave proposal, it could never go out once we are removed.
    #[error("you asked to leave this group: nothing more can be sent to it")]
    Leaving,
}

/// A change of a group's shared settings refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsChangeError {
    #[error("nothing to change: give --name, --topic, --admin or --not-admin")]
    NothingToChange,
    #[error(
        "this group was made without shared settings (by another client, or an older mlschat): \
         it has no name, topic or admins to change"
    )]
    NoSettings,
    #[error("a group needs at least one admin: make someone else an admin first")]
    LastAdmin,
    #[error(transparent)]
    Invalid(#[from] mlschat_wire::settings::SettingsError),
}

/// A local name for a group refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupNameError {
    #[error("invalid group name {0:?}")]
    Invalid(String),
    #[error("a group named {0:?} already exists")]
    Taken(String),
}

/// The operation is not for where the group is kept.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(
        "group {0:?} is kept in files, not on the delivery node: use the file verbs (with --out) \
         while no daemon runs"
    )]
    KeptInFiles(String),
    #[error(
        "this group is on a delivery node: leave it through the node (`mlschat group leave` does)"
    )]
    OnNode,
}

/// An invite code, a contact or a safety number refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("not a valid invite code: {0}")]
    BadInviteCode(String),
    #[error(
        "{name} uses another delivery node ({theirs}); federation between nodes is not built \
         yet, so contacts must share ours ({ours})"
    )]
    OtherNode {
        name: String,
        theirs: String,
        ours: String,
    },
    #[error(
        "that is not the safety number you share with {0} now: nothing was recorded. Run \
         `mlschat contact verify {0}` and compare again"
    )]
    WrongSafetyNumber(String),
    #[error("the node handed out a KeyPackage for {0} with another key")]
    ForeignKeyPackage(String),
}

/// An add refused before anything was claimed.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(
        "{0:?} looks like a KeyPackage file, but this group is on the delivery node: add members \
         by contact name (`mlschat contact list`)"
    )]
    KeyPackageFile(String),
    #[error("{0} is already in this group")]
    AlreadyMember(String),
}

/// Our commit and the log we read do not fit together.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("a commit of ours is still waiting for the log")]
    CommitPending,
    #[error("our commit is at log position {seq}, but we have read only up to {cursor}")]
    Behind { seq: u64, cursor: u64 },
}
