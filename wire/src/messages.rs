//! Every message of the protocol, in TLS presentation-language encoding (RFC 8446 §3, with the
//! variable-length vectors of RFC 9420 §2.1.2). `PROTOCOL.md` gives the same definitions in
//! prose and byte layout; a test pins the encodings.

use tls_codec::{TlsDeserializeBytes, TlsSerialize, TlsSize, VLBytes};

/// SHA-256 of a client's Ed25519 signature public key: its stable, self-certifying id.
pub type ClientId = [u8; 32];

/// SHA-256 of a per-epoch group token (see [`crate::token`]).
pub type TokenHash = [u8; 32];

/// A per-epoch group token: proof of membership in one epoch of one group.
pub type Token = [u8; 32];

/// The id a sender gives a post once and keeps when it encrypts the post again: the node
/// answers a repeat of (poster, group, id) with the original position instead of storing it twice.
pub type PostId = [u8; 16];

/// A boolean: one byte, 0 or 1; any other value is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u8)]
pub enum Flag {
    No = 0,
    Yes = 1,
}

impl From<bool> for Flag {
    fn from(b: bool) -> Self {
        if b { Flag::Yes } else { Flag::No }
    }
}

impl From<Flag> for bool {
    fn from(f: Flag) -> Self {
        f == Flag::Yes
    }
}

/// Client to node, one per bidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u16)]
pub enum Request {
    /// Asks for a fresh nonce to sign; answered by [`Response::Challenge`].
    #[tls_codec(discriminant = 1)]
    Challenge,
    /// Registers a signature key and authenticates the connection as its client.
    #[tls_codec(discriminant = 2)]
    Register(Register),
    /// Authenticates the connection as an already registered client.
    #[tls_codec(discriminant = 3)]
    Authenticate(Authenticate),

    /// Adds one-time KeyPackages and replaces the last-resort one (if not empty).
    #[tls_codec(discriminant = 10)]
    PublishKeyPackages(PublishKeyPackages),
    /// Claims one KeyPackage of `owner`.
    #[tls_codec(discriminant = 11)]
    ClaimKeyPackage { owner: ClientId },
    /// Our own stock of unclaimed KeyPackages.
    #[tls_codec(discriminant = 12)]
    KeyPackageStock,
    /// Who claimed our KeyPackages, after an entry number.
    #[tls_codec(discriminant = 13)]
    ClaimLog { after: u64 },
    /// Claims one KeyPackage of each owner, in order, in one round trip (an add of many
    /// members): at most [`MAX_CLAIMS`] owners; answered by [`Response::KeyPackages`].
    #[tls_codec(discriminant = 14)]
    ClaimKeyPackages { owners: Vec<ClientId> },

    /// Creates a group's log at epoch 0.
    #[tls_codec(discriminant = 20)]
    CreateGroup(CreateGroup),
    /// Posts a commit for the group's current epoch, with the Welcomes it releases.
    #[tls_codec(discriminant = 21)]
    PostCommit(PostCommit),
    /// Posts an application message (or a proposal) at the current epoch.
    #[tls_codec(discriminant = 22)]
    PostMessage(PostMessage),
    /// Reads a group's log after a sequence number.
    #[tls_codec(discriminant = 23)]
    FetchGroup(FetchGroup),
    /// Fetches the sealed ratchet tree a commit left at `epoch`, for its joiners.
    #[tls_codec(discriminant = 24)]
    FetchTree(FetchTree),
    /// Asks for pushes of a group's new log entries on this connection.
    #[tls_codec(discriminant = 25)]
    Subscribe(FetchGroup),
    /// Appends a notice (opaque to the node, [`crate::notice`]) to a group's log, with a token
    /// of any epoch of the group: answered [`Response::Accepted`].
    #[tls_codec(discriminant = 26)]
    PostNotice(PostNotice),

    /// Reads our mailbox (Welcomes) after an entry id.
    #[tls_codec(discriminant = 30)]
    FetchMailbox { after: u64, limit: u32 },
    /// Acknowledges mailbox entries up to and including `up_to`; they may then be deleted.
    #[tls_codec(discriminant = 31)]
    AckMailbox { up_to: u64 },
}

/// Node to client, the one answer on a request's stream.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u16)]
pub enum Response {
    #[tls_codec(discriminant = 0)]
    Error(ErrorResponse),
    #[tls_codec(discriminant = 1)]
    Ok,
    #[tls_codec(discriminant = 2)]
    Challenge { nonce: [u8; 32] },
    #[tls_codec(discriminant = 3)]
    Authenticated { client: ClientId },
    #[tls_codec(discriminant = 10)]
    KeyPackage { key_package: VLBytes },
    #[tls_codec(discriminant = 11)]
    KeyPackageStock { one_time: u32, last_resort: Flag },
    #[tls_codec(discriminant = 12)]
    ClaimLog { entries: Vec<ClaimLogEntry> },
    /// One answer per owner of [`Request::ClaimKeyPackages`], in its order.
    #[tls_codec(discriminant = 13)]
    KeyPackages { claims: Vec<ClaimAnswer> },
    /// A post was stored (durably) at `seq`; after a commit, the group is at `epoch`.
    #[tls_codec(discriminant = 20)]
    Accepted { seq: u64, epoch: u64 },
    #[tls_codec(discriminant = 21)]
    GroupEntries { entries: Vec<GroupEntry> },
    #[tls_codec(discriminant = 22)]
    Tree { sealed_tree: VLBytes },
    /// A commit was stored (durably) at `seq`, and the group is at `epoch`. `undelivered`:
    /// recipients whose Welcome the node did not deliver (their mailbox is full, or holds a
    /// Welcome of the same committer from the same last-resort KeyPackage); their claims
    /// stay unused. The committer decides what to do with them (mlschat removes them again).
    #[tls_codec(discriminant = 23)]
    Committed {
        seq: u64,
        epoch: u64,
        undelivered: Vec<ClientId>,
    },
    #[tls_codec(discriminant = 30)]
    Mailbox { entries: Vec<MailboxEntry> },
}

/// Node to client, one per unidirectional stream the node opens.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u16)]
pub enum Push {
    /// A new entry in a subscribed group's log.
    #[tls_codec(discriminant = 1)]
    Group {
        group_id: VLBytes,
        entry: GroupEntry,
    },
    /// A new entry in our mailbox.
    #[tls_codec(discriminant = 2)]
    Mailbox(MailboxEntry),
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct Register {
    /// The Ed25519 public key (32 bytes).
    pub signature_key: VLBytes,
    /// An invite token issued by the operator; empty where registration is open.
    pub invite: VLBytes,
    /// Signature over the [`crate::auth::Transcript`] with label `register`.
    pub signature: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct Authenticate {
    pub signature_key: VLBytes,
    /// Signature over the [`crate::auth::Transcript`] with label `authenticate`.
    pub signature: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct PublishKeyPackages {
    /// One-time KeyPackages, each an `MLSMessage` (wire format `mls_key_package`).
    pub one_time: Vec<VLBytes>,
    /// The last-resort KeyPackage, or empty to keep the current one.
    pub last_resort: VLBytes,
}

/// Most owners one [`Request::ClaimKeyPackages`] may name.
pub const MAX_CLAIMS: usize = 100;

/// One owner's answer to [`Request::ClaimKeyPackages`]: a KeyPackage, or the refusal a single
/// claim would have had.
#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u16)]
pub enum ClaimAnswer {
    /// An `MLSMessage` (wire format `mls_key_package`).
    #[tls_codec(discriminant = 1)]
    KeyPackage(VLBytes),
    #[tls_codec(discriminant = 2)]
    Refused(ErrorResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct ClaimLogEntry {
    pub seq: u64,
    pub claimer: ClientId,
    /// Unix seconds.
    pub at: u64,
    pub last_resort: Flag,
    /// The claimed KeyPackage's reference (RFC 9420 §5.2).
    pub reference: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct CreateGroup {
    pub group_id: VLBytes,
    /// Hash of the epoch-0 token.
    pub token_hash: TokenHash,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct PostCommit {
    pub group_id: VLBytes,
    /// The epoch the commit is for: it must be the group's current epoch.
    pub epoch: u64,
    /// The token of `epoch`.
    pub token: Token,
    /// Hash of the token of `epoch + 1`, registered if the commit is accepted.
    pub next_token_hash: TokenHash,
    /// The commit, an `MLSMessage`.
    pub commit: VLBytes,
    /// Welcomes for the members the commit adds, released only if it is accepted.
    pub welcomes: Vec<WelcomeFor>,
    /// The ratchet tree of `epoch + 1` sealed for the joiners (PROTOCOL.md §5): opaque to the
    /// node. Empty if the commit adds nobody.
    pub sealed_tree: VLBytes,
    /// SHA-256 of the access value a joiner presents to fetch `sealed_tree`.
    pub tree_access_hash: TokenHash,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct WelcomeFor {
    pub recipient: ClientId,
    /// An `MLSMessage` holding the Welcome.
    pub welcome: VLBytes,
    /// The tree secret sealed to the recipient's KeyPackage (an HPKE ciphertext).
    pub tree_key: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct PostMessage {
    pub group_id: VLBytes,
    pub epoch: u64,
    pub token: Token,
    /// Chosen by the poster once per message; a repeat is answered with the first position.
    pub post_id: PostId,
    /// An `MLSMessage` (a PrivateMessage with an application message or a proposal).
    pub message: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct PostNotice {
    pub group_id: VLBytes,
    /// A token of any epoch of the group (the same right as a fetch).
    pub token: Token,
    /// At most [`crate::notice::MAX_NOTICE`] bytes.
    pub notice: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct FetchGroup {
    pub group_id: VLBytes,
    /// A token of any epoch of the group.
    pub token: Token,
    pub after_seq: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct FetchTree {
    pub group_id: VLBytes,
    pub epoch: u64,
    /// The access value derived from the tree secret; its SHA-256 must be the commit's
    /// `tree_access_hash`.
    pub access: [u8; 32],
}

/// Kinds of group log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
#[repr(u8)]
pub enum EntryKind {
    Commit = 1,
    Message = 2,
    /// A [`crate::notice::Notice`], signed by its poster; the epoch does not change.
    Notice = 3,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct GroupEntry {
    pub seq: u64,
    /// The epoch the message was sent in.
    pub epoch: u64,
    pub kind: EntryKind,
    pub message: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct MailboxEntry {
    pub id: u64,
    /// The group the Welcome is for.
    pub group_id: VLBytes,
    /// The epoch the Welcome joins, whose sealed tree [`Request::FetchTree`] returns.
    pub epoch: u64,
    pub welcome: VLBytes,
    /// The tree secret, sealed to the KeyPackage the Welcome is for.
    pub tree_key: VLBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
pub struct ErrorResponse {
    pub code: ErrorCode,
    /// For [`ErrorCode::StaleEpoch`]: the group's current epoch. Zero otherwise.
    pub current_epoch: u64,
    /// A short English explanation, UTF-8; for people, not for programs.
    pub detail: VLBytes,
}

/// What went wrong, for programs. Stable: codes are never reused. A code this implementation
/// does not know (a newer node's) decodes as [`ErrorCode::Unknown`]: a refusal to show, not
/// to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame or its body could not be decoded.
    Malformed = 1,
    /// The frame is over the size limit.
    TooLarge = 2,
    /// The frame's protocol version is not spoken here.
    UnsupportedVersion = 3,
    /// The request needs an authenticated connection.
    Unauthenticated = 4,
    /// The authentication signature is invalid, or its challenge was already used.
    AuthFailed = 5,
    /// Registration needs a valid invite token.
    InviteRequired = 6,
    /// The resource belongs to another client.
    Forbidden = 7,
    UnknownClient = 8,
    UnknownGroup = 9,
    /// A handshake message for an epoch that is not the group's current one.
    StaleEpoch = 10,
    /// The group token does not match the epoch: not (or no longer) a member.
    BadToken = 11,
    /// The owner has no KeyPackage left.
    NoKeyPackage = 12,
    RateLimited = 13,
    QuotaExceeded = 14,
    GroupExists = 15,
    /// A KeyPackage is malformed, badly signed, expired, or not the uploader's.
    InvalidKeyPackage = 16,
    /// The node failed; the detail is in its log.
    Internal = 17,
    /// The node is shutting down; retry elsewhere or later.
    Unavailable = 18,
    /// The request did not arrive whole in time (a stalled stream), or waited too long for
    /// room among the connection's requests in flight.
    Timeout = 19,
    /// The client wrote more bytes (commits, messages, KeyPackages) than its quota allows for
    /// now; the detail says when it may go on.
    ByteQuota = 20,
    /// The client created more groups than its quota allows for now.
    GroupQuota = 21,
    /// Too many registrations from the client's address for now.
    RegistrationLimited = 22,
    /// A code not known to this implementation.
    Unknown = 0xFFFF,
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 22] = [
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::InviteRequired,
        ErrorCode::Forbidden,
        ErrorCode::UnknownClient,
        ErrorCode::UnknownGroup,
        ErrorCode::StaleEpoch,
        ErrorCode::BadToken,
        ErrorCode::NoKeyPackage,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::GroupExists,
        ErrorCode::InvalidKeyPackage,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::ByteQuota,
        ErrorCode::GroupQuota,
        ErrorCode::RegistrationLimited,
    ];

    /// The code numbered `n`, or [`ErrorCode::Unknown`].
    pub fn from_u16(n: u16) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|code| *code as u16 == n)
            .unwrap_or(ErrorCode::Unknown)
    }
}

impl tls_codec::Size for ErrorCode {
    fn tls_serialized_len(&self) -> usize {
        2
    }
}

impl tls_codec::Serialize for ErrorCode {
    fn tls_serialize<W: std::io::Write>(&self, writer: &mut W) -> Result<usize, tls_codec::Error> {
        (*self as u16).tls_serialize(writer)
    }
}

impl tls_codec::DeserializeBytes for ErrorCode {
    fn tls_deserialize_bytes(bytes: &[u8]) -> Result<(Self, &[u8]), tls_codec::Error> {
        let (n, rest) = u16::tls_deserialize_bytes(bytes)?;
        Ok((ErrorCode::from_u16(n), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tls_codec::{DeserializeBytes as _, Serialize as _};

    #[test]
    fn every_known_code_round_trips_and_an_unknown_one_decodes_as_unknown() {
        for code in ErrorCode::KNOWN {
            let bytes = code.tls_serialize_detached().unwrap();
            assert_eq!(
                ErrorCode::tls_deserialize_exact_bytes(&bytes).unwrap(),
                code
            );
        }
        let newer = ErrorResponse {
            code: ErrorCode::Unknown,
            current_epoch: 0,
            detail: b"from a newer node".to_vec().into(),
        };
        let mut bytes = newer.tls_serialize_detached().unwrap();
        bytes[..2].copy_from_slice(&4242u16.to_be_bytes());
        let read = ErrorResponse::tls_deserialize_exact_bytes(&bytes).unwrap();
        assert_eq!(read.code, ErrorCode::Unknown);
        assert_eq!(read.detail.as_slice(), b"from a newer node");
    }
}
