//! The group log: what a delivery node (and, later, a peer that hosts a node-less group) keeps
//! for each group, and the rules every store of it follows.
//!
//! - **One order per group.** Every post takes the group's next sequence number (1, 2, 3, …;
//!   numbering goes on after a purge). A commit for epoch `e` is taken only while the group is
//!   at `e` and with the token of `e`, and moves it to `e + 1` (compare-and-set): of racing
//!   commits exactly one wins, the others learn the current epoch. A message is taken only at
//!   the group's current epoch, since members keep no keys of past epochs.
//! - **Tokens.** A post presents the token of its epoch; reads present a token of any epoch.
//!   A wrong token learns nothing, not even the current epoch.
//! - **Idempotent posts.** A message posted again under the same [`PostKey`] is answered with
//!   its first position and stored once.
//! - **Welcome escrow.** A commit's Welcomes, next token and sealed tree are written with it or
//!   not at all. A Welcome goes only to a client whose KeyPackage the committer claimed (through
//!   the same backend's [`keypackages::Store`]), one Welcome per claim; a full mailbox, or a
//!   second waiting Welcome from one claimer's last-resort claims, leaves that Welcome out and
//!   never refuses the commit.
//! - **Mailboxes** are read in pages and emptied by acknowledgement; **retention** deletes old
//!   log entries, claims and mailbox entries, and trees no Welcome waits for.
//!
//! No I/O of its own: time is a parameter, storage a trait ([`GroupLog`]).
//!
//! # Layout
//! - [`GroupLog`]: what a backend does atomically; [`MemoryLog`] implements it (with the
//!   KeyPackage store it checks Welcomes against).
//! - [`escrow`]: the one decision of Welcome escrow (which claim each Welcome of a commit
//!   uses, and whether it is delivered), for every store.
//! - [`host`]: the wire protocol's group requests answered from a log: what a delivery node,
//!   the simulator's node and a peer hosting a group all answer alike.
//! - `conformance` (feature `conformance`): the one suite every backend must pass.

pub mod escrow;
pub mod host;
mod memory;
mod welcome;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use memory::MemoryLog;
pub use welcome::{MalformedWelcome, parse_welcome};

use std::future::Future;

pub use mlschat_keypackages as keypackages;
pub use mlschat_keypackages::UnixTime;
pub use mlschat_wire::{ClientId, EntryKind, PostId, TokenHash};

/// A commit to post, with what it releases.
#[derive(Debug, Clone)]
pub struct NewCommit {
    /// Who posts it: a Welcome may go only to a client whose KeyPackage the poster claimed.
    pub poster: ClientId,
    pub group_id: Vec<u8>,
    pub epoch: u64,
    /// Hash of the token presented for `epoch`.
    pub token_hash: TokenHash,
    /// Hash of the token of `epoch + 1`.
    pub next_token_hash: TokenHash,
    pub commit: Vec<u8>,
    pub welcomes: Vec<NewWelcome>,
    /// The tree of `epoch + 1` sealed for the joiners, opaque; empty when the commit adds nobody.
    pub sealed_tree: Vec<u8>,
    /// SHA-256 of the access value that fetches `sealed_tree`.
    pub tree_access_hash: [u8; 32],
}

/// A Welcome a commit releases to `recipient`'s mailbox, with the tree secret sealed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWelcome {
    pub recipient: ClientId,
    pub welcome: Vec<u8>,
    pub tree_key: Vec<u8>,
    /// The KeyPackageRefs the Welcome's group secrets are encrypted to ([`parse_welcome`]):
    /// one must be a package of `recipient` that the poster claimed.
    pub references: Vec<Vec<u8>>,
}

/// A mailbox entry: a Welcome into `group_id` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub id: u64,
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub welcome: Vec<u8>,
    pub tree_key: Vec<u8>,
}

/// An application message (or proposal) to post.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub group_id: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// Hash of the token presented for `epoch`.
    pub token_hash: TokenHash,
    pub message: Vec<u8>,
    /// [`post_key`] of its poster and post id: a repeat is answered with the first position.
    /// `None` for a post that is never repeated (the node's own tools).
    pub post_key: Option<PostKey>,
}

/// What makes a post the same post again: SHA-256 of the poster's client id and the post id it
/// chose. The post id itself and the poster are not stored.
pub type PostKey = [u8; 32];

pub fn post_key(poster: &ClientId, post_id: &PostId) -> PostKey {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(poster)
        .chain_update(post_id)
        .finalize()
        .into()
}

/// A post was stored at `seq`; the group is at `epoch`. `repeat`: it had been stored before
/// (same poster, same post id), and `seq` and `epoch` are those of the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub seq: u64,
    pub epoch: u64,
    pub repeat: bool,
}

/// A commit was stored at `seq`, moving the group to `epoch`; its Welcomes are the mailbox
/// entries `welcomes`, in the order they were given, `None` for one that was not delivered
/// (its recipient's mailbox is full, or holds a Welcome of the same poster from the same
/// last-resort KeyPackage): a recipient never makes another member's commit fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seq: u64,
    pub epoch: u64,
    pub welcomes: Vec<Option<u64>>,
}

/// Why a post or a read was refused (normal outcomes, not failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    UnknownGroup,
    GroupExists,
    /// The group is at `current`, not at the epoch of the post.
    StaleEpoch {
        current: u64,
    },
    /// The token is not that of the epoch (or, for reads, of any epoch) of the group.
    BadToken,
    /// A Welcome for a client whose KeyPackage the poster did not claim (one claim, one
    /// Welcome, encrypted to that package): nobody can fill a stranger's mailbox.
    NotClaimed,
}

/// How much one read of a log or mailbox returns: at most `entries` entries, and past the first
/// (which always comes, however big) at most `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub entries: u32,
    pub bytes: u64,
}

impl From<u32> for Page {
    /// A page limited by count only.
    fn from(entries: u32) -> Self {
        Page {
            entries,
            bytes: u64::MAX,
        }
    }
}

impl Page {
    /// How many entries of these sizes (in order) the page holds.
    pub fn fit(&self, sizes: impl IntoIterator<Item = u64>) -> usize {
        let mut total = 0u64;
        let mut fit = 0;
        for size in sizes.into_iter().take(self.entries as usize) {
            total = total.saturating_add(size);
            if fit > 0 && total > self.bytes {
                break;
            }
            fit += 1;
        }
        fit
    }
}

/// Where each retention period ends, in unix seconds: what is older goes ([`GroupLog::purge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cuts {
    pub log_before: UnixTime,
    pub mailbox_before: UnixTime,
    pub tree_grace: UnixTime,
}

/// How much a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub log_entries: u64,
    pub claims: u64,
    pub mailbox_entries: u64,
    pub trees: u64,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub group_id: Vec<u8>,
    pub message: Vec<u8>,
}

/// The outcome of one call: `Err` is a failed backend, `Ok(Err)` a refusal (a normal answer).
pub type Judged<T, E> = Result<Result<T, Refused>, E>;

/// Storage for group logs. Each method is one atomic step, whatever runs at once. A backend
/// keeps the KeyPackages too (the supertrait), since a commit's Welcomes are checked against,
/// and use up, the poster's claims in the same step.
pub trait GroupLog: keypackages::Store {
    /// A failed backend (not a refusal).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates a group's log at epoch 0 with the hash of its epoch-0 token.
    fn create_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        now: UnixTime,
    ) -> impl Future<Output = Judged<(), Self::Error>> + Send;

    /// Posts a commit for `commit.epoch`: taken only if that is the group's current epoch and
    /// the token matches; then, in the same step, the next epoch's token, its tree and the
    /// Welcomes are stored. A refused commit writes nothing. Each Welcome uses up one claim, by
    /// the poster, of a KeyPackage of its recipient that the Welcome is encrypted to (newest
    /// first); one that cannot be delivered (see [`Committed`]) is left out and its claim kept.
    fn post_commit(
        &self,
        commit: &NewCommit,
        mailbox_quota: u64,
        now: UnixTime,
    ) -> impl Future<Output = Judged<Committed, Self::Error>> + Send;

    /// Posts several messages in one step (one fsync), each taken or refused on its own as
    /// [`Self::post_message`] would, in order.
    fn post_messages(
        &self,
        posts: &[NewMessage],
        now: UnixTime,
    ) -> impl Future<Output = Result<Vec<Result<Posted, Refused>>, Self::Error>> + Send;

    /// Posts an application message (or proposal) sent at `epoch`, taken only while that is
    /// the group's current epoch.
    fn post_message(
        &self,
        group_id: &[u8],
        epoch: u64,
        token_hash: &TokenHash,
        message: &[u8],
        now: UnixTime,
    ) -> impl Future<Output = Judged<Posted, Self::Error>> + Send {
        let post = NewMessage {
            group_id: group_id.to_vec(),
            epoch,
            token_hash: *token_hash,
            message: message.to_vec(),
            post_key: None,
        };
        async move {
            let mut results = self.post_messages(std::slice::from_ref(&post), now).await?;
            Ok(results.pop().expect("one result per post"))
        }
    }

    /// Appends a notice to a group's log at its current epoch, for a holder of a token of any
    /// of its epochs (the right to read it); the epoch does not change.
    fn post_notice(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        notice: &[u8],
        now: UnixTime,
    ) -> impl Future<Output = Judged<Posted, Self::Error>> + Send;

    /// Log entries after `after_seq`, oldest first, for a holder of a token of any epoch of
    /// the group.
    fn fetch_group(
        &self,
        group_id: &[u8],
        token_hash: &TokenHash,
        after_seq: u64,
        page: Page,
    ) -> impl Future<Output = Judged<Vec<Entry>, Self::Error>> + Send;

    /// The sealed tree the commit into `epoch` left, for whoever knows the access value whose
    /// hash is `access_hash`; nothing for anyone else (as if there were no tree).
    fn fetch_tree(
        &self,
        group_id: &[u8],
        epoch: u64,
        access_hash: &[u8; 32],
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Self::Error>> + Send;

    /// The owner's mailbox entries (Welcomes) after `after`, oldest first.
    fn fetch_mailbox(
        &self,
        owner: &ClientId,
        after: u64,
        page: Page,
    ) -> impl Future<Output = Result<Vec<Welcome>, Self::Error>> + Send;

    /// Deletes the owner's mailbox entries up to and including `up_to`; returns how many.
    fn ack_mailbox(
        &self,
        owner: &ClientId,
        up_to: u64,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Deletes what the retention periods are over for: log entries and claim records older
    /// than `log_before`, mailbox entries older than `mailbox_before` (acknowledged or not),
    /// and trees no mailbox entry waits for any more once older than `tree_grace` (a joiner who
    /// acknowledged its Welcome may still be fetching). A member who comes back after the cut
    /// finds a gap in the log where entries went, which its client reports.
    fn purge(&self, cuts: Cuts) -> impl Future<Output = Result<Purged, Self::Error>> + Send;
}
