//! The MLS group engine: every group operation a peer performs, on top of OpenMLS.
//!
//! The engine does no I/O of its own. Each call takes an OpenMLS provider (crypto plus a storage
//! backend chosen by the caller), the group, and bytes or a command; it returns bytes to send and
//! what happened. The CLI, the daemon, the benchmarks and the load tool all drive this same code;
//! the caller decides where the bytes go and where the transaction boundaries are.
//!
//! Costs measured in `DESIGN.md` shape three rules that hold for every group here:
//! - members are added **without** an UpdatePath, since a path in a sparse tree encrypts to
//!   nearly every leaf;
//! - the ratchet tree never travels inside the Welcome; it is exported and handed to the joiner
//!   out of band;
//! - removals of several members go into one commit.

use openmls::prelude::{
    tls_codec::{Deserialize as _, Serialize as _},
    *,
};
use openmls_basic_credential::SignatureKeyPair;

use crate::identity::{DeviceName, Fingerprint, Identity};
use mlschat_wire::Token;
use mlschat_wire::settings::GroupSettings;
use mlschat_wire::token::{TOKEN_LABEL, TOKEN_LEN};

mod error;
mod rules;

pub use error::EngineError;
use error::classify_process_error;

use rules::{authorize, authorize_proposal, capabilities, settings_extensions, settings_of};
pub use rules::{group_settings, may_manage, proposal_committer};

/// Every group and KeyPackage uses this suite unless told otherwise.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How many past epochs keep their message keys. None: OpenMLS stores the kept epochs' secret
/// trees with the current one and rewrites them all on every message, which made a message in a
/// 1,000-member group cost 3.2 ms instead of 75 µs (docs/BENCHMARKS.md). Messages are processed
/// in the group's one order (the delivery node's log, or the sender's file), so an application
/// message never arrives after the commit that ends its epoch.
const MAX_PAST_EPOCHS: usize = 0;

/// Private messages are padded to a multiple of this many bytes, so their size says less.
const PADDING: usize = 64;

/// A commit we made, ready to send. The commit is not merged yet: the caller merges it once it
/// is accepted (at once with no delivery node, after the node's "ok" with one).
#[derive(Debug)]
pub struct CommitOut {
    /// The commit, an `MLSMessage` for the current members.
    pub commit: Vec<u8>,
    /// For commits that add members: the `Welcome` and the ratchet tree to join with.
    pub welcome: Option<WelcomeOut>,
}

/// What a new member needs to join: the Welcome, and the tree that does not travel inside it.
#[derive(Debug, Clone)]
pub struct WelcomeOut {
    /// A `MLSMessage` holding the `Welcome`.
    pub welcome: Vec<u8>,
    /// The TLS-encoded ratchet tree of the new epoch.
    pub ratchet_tree: Vec<u8>,
}

/// A KeyPackage we made: the `MLSMessage` to hand out and its reference (RFC 9420 §5.2), by
/// which a Welcome names the package it was made for.
#[derive(Debug)]
pub struct NewKeyPackage {
    pub message: Vec<u8>,
    pub reference: Vec<u8>,
}

/// A member of a group as people see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub leaf_index: u32,
    pub name: Option<DeviceName>,
    pub fingerprint: Fingerprint,
}

/// The membership changes of a commit.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<MemberInfo>,
    pub removed: Vec<MemberInfo>,
    /// The group's new settings, if the commit changed them.
    pub settings: Option<GroupSettings>,
}

impl Changes {
    /// Reads them from a staged commit, before it is merged (the removed are still members).
    fn of(group: &MlsGroup, staged: &StagedCommit) -> Self {
        let added = staged
            .add_proposals()
            .map(|add| {
                let leaf = add.add_proposal().key_package().leaf_node();
                MemberInfo {
                    leaf_index: u32::MAX, // assigned at merge, see `resolve_leaves`
                    name: DeviceName::from_credential(leaf.credential()).ok(),
                    fingerprint: Fingerprint::of_signature_key(leaf.signature_key().as_slice()),
                }
            })
            .collect();
        let removed = staged
            .remove_proposals()
            .filter_map(|r| group.member_at(r.remove_proposal().removed()))
            .map(|m| member_info(&m))
            .collect();
        // Settings are checked before a commit is merged (`authorize`); unreadable here, they
        // are shown as unchanged.
        let new = settings_of(staged.group_context().extensions())
            .ok()
            .flatten();
        let settings = new.filter(|new| group_settings(group).ok().flatten().as_ref() != Some(new));
        Self {
            added,
            removed,
            settings,
        }
    }
}

/// What processing one incoming message did.
#[derive(Debug)]
pub enum Incoming {
    /// A decrypted application message.
    Application {
        sender: MemberInfo,
        plaintext: Vec<u8>,
    },
    /// A proposal, now queued until some member commits it.
    Proposal { sender: MemberInfo, summary: String },
    /// A commit, now merged: the group is at `epoch`.
    Commit {
        sender: MemberInfo,
        added: Vec<MemberInfo>,
        removed: Vec<MemberInfo>,
        /// The group's new settings, if this commit changed them.
        settings: Option<GroupSettings>,
        /// True when this commit removed us; the group is inactive from now on.
        removed_us: bool,
        epoch: u64,
    },
}

/// The group's delivery token for its current epoch (`mlschat_wire::token`): what lets the node
/// tell a member from a stranger without a member list.
pub fn epoch_token(crypto: &impl OpenMlsCrypto, group: &MlsGroup) -> Result<Token, EngineError> {
    let token = group
        .export_secret(crypto, TOKEN_LABEL, group.group_id().as_slice(), TOKEN_LEN)
        .map_err(|e| EngineError::Invalid(format!("exporting the delivery token: {e}")))?;
    Ok(token.try_into().expect("TOKEN_LEN bytes"))
}

/// The token of the epoch our pending commit moves the group to.
pub fn pending_epoch_token(
    crypto: &impl OpenMlsCrypto,
    group: &MlsGroup,
) -> Result<Token, EngineError> {
    let staged = group
        .pending_commit()
        .ok_or_else(|| EngineError::Invalid("no pending commit".into()))?;
    let token = staged
        .export_secret(crypto, TOKEN_LABEL, group.group_id().as_slice(), TOKEN_LEN)
        .map_err(|e| EngineError::Invalid(format!("exporting the delivery token: {e}")))?;
    Ok(token.try_into().expect("TOKEN_LEN bytes"))
}

/// An incoming `MLSMessage`, parsed and sorted by what it is. Untrusted bytes become this at the
/// boundary; nothing past it sees raw bytes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per message and consumed at once
pub enum Parsed {
    /// A handshake or application message for some group.
    Protocol(ProtocolMessage),
    Welcome(Welcome),
    KeyPackage(KeyPackageIn),
}

/// Parses one `MLSMessage`; trailing bytes are an error.
pub fn parse_message(bytes: &[u8]) -> Result<Parsed, EngineError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| EngineError::Malformed(format!("not an MLS message: {e}")))?;
    match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => Ok(Parsed::Protocol(m.into())),
        MlsMessageBodyIn::PublicMessage(m) => Ok(Parsed::Protocol(m.into())),
        MlsMessageBodyIn::Welcome(w) => Ok(Parsed::Welcome(w)),
        MlsMessageBodyIn::KeyPackage(kp) => Ok(Parsed::KeyPackage(kp)),
        MlsMessageBodyIn::GroupInfo(_) => Err(EngineError::Malformed(
            "a GroupInfo message is not accepted here".into(),
        )),
    }
}

/// Parses and verifies a KeyPackage (signature, version, lifetime).
pub fn validate_key_package(
    crypto: &impl openmls_traits::crypto::OpenMlsCrypto,
    bytes: &[u8],
) -> Result<KeyPackage, EngineError> {
    match parse_message(bytes)? {
        Parsed::KeyPackage(kp) => kp
            .validate(crypto, ProtocolVersion::Mls10)
            .map_err(|e| EngineError::Forged(format!("KeyPackage rejected: {e}"))),
        _ => Err(EngineError::Malformed(
            "expected a KeyPackage message".into(),
        )),
    }
}

/// Describes a member from its leaf.
pub fn member_info(member: &Member) -> MemberInfo {
    MemberInfo {
        leaf_index: member.index.u32(),
        name: DeviceName::from_credential(&member.credential).ok(),
        fingerprint: Fingerprint::of_signature_key(&member.signature_key),
    }
}

/// All members of a group, in leaf order.
pub fn members(group: &MlsGroup) -> Vec<MemberInfo> {
    group.members().map(|m| member_info(&m)).collect()
}

/// Members added who have not joined yet: their leaf is still the one their KeyPackage gave,
/// which a joiner's first commit (its key refresh) replaces. Leaf 0 is the group's creator,
/// whose first leaf came from no Welcome.
pub fn invited(group: &MlsGroup) -> Vec<Fingerprint> {
    let tree = group.public_group();
    group
        .members()
        .filter(|m| m.index.u32() != 0)
        .filter(|m| {
            tree.leaf(m.index).is_some_and(|l| {
                matches!(
                    l.leaf_node_source(),
                    openmls::treesync::LeafNodeSource::KeyPackage(_)
                )
            })
        })
        .map(|m| member_info(&m).fingerprint)
        .collect()
}

/// The engine of one device: its identity and its group policy.
#[derive(Debug)]
pub struct Engine {
    identity: Identity,
}

impl Engine {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn signer(&self) -> &SignatureKeyPair {
        &self.identity.signer
    }

    /// The policy every group follows, whether we created it or joined it.
    pub fn join_config() -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .padding_size(PADDING)
            .build()
    }

    /// A new KeyPackage, kept in storage with its private keys until a Welcome consumes it.
    /// A last-resort package is not consumed and may be used by several joiners.
    pub fn new_key_package(
        &self,
        provider: &impl OpenMlsProvider,
        last_resort: bool,
    ) -> Result<NewKeyPackage, EngineError> {
        // A KeyPackage may carry only extensions its leaf claims to support (RFC 9420 §7.2):
        // without this, a last-resort package fails validation everywhere.
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                provider,
                self.signer(),
                self.identity.credential_with_key(),
            )
            .map_err(|e| EngineError::Storage(format!("creating KeyPackage: {e}")))?;
        let key_package = bundle.key_package();
        Ok(NewKeyPackage {
            reference: key_package
                .hash_ref(provider.crypto())
                .map_err(|e| EngineError::Invalid(e.to_string()))?
                .as_slice()
                .to_vec(),
            message: encode(MlsMessageOut::from(key_package.clone()))?,
        })
    }

    /// The same policy as [`Self::join_config`], for a group we create.
    pub fn create_config() -> MlsGroupCreateConfig {
        Self::create_config_builder().build()
    }

    fn create_config_builder() -> MlsGroupCreateConfigBuilder {
        MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .capabilities(capabilities())
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(false)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .padding_size(PADDING)
    }

    /// The settings of a group we create: its name, and us as its only admin.
    pub fn new_settings(&self, name: &str) -> GroupSettings {
        GroupSettings {
            name: name.into(),
            topic: String::new(),
            admins: vec![self.identity.fingerprint().0],
        }
    }

    /// A new group with us as its only member, with `settings` (we must be among its admins).
    pub fn create_group(
        &self,
        provider: &impl OpenMlsProvider,
        group_id: GroupId,
        settings: &GroupSettings,
    ) -> Result<MlsGroup, EngineError> {
        if !settings.is_admin(&self.identity.fingerprint().0) {
            return Err(EngineError::NotAllowed(
                "a group we create must have us among its admins".into(),
            ));
        }
        let config = Self::create_config_builder()
            .with_group_context_extensions(settings_extensions(settings)?)
            .build();
        MlsGroup::new_with_group_id(
            provider,
            self.signer(),
            &config,
            group_id,
            self.identity.credential_with_key(),
        )
        .map_err(|e| match e {
            NewGroupError::GroupAlreadyExists => {
                EngineError::Invalid("a group with this id already exists".into())
            }
            NewGroupError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
            e => EngineError::Invalid(e.to_string()),
        })
    }

    /// Adds one or more members in one commit, without an UpdatePath (see the module doc).
    pub fn add_members(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
        key_packages: &[KeyPackage],
    ) -> Result<CommitOut, EngineError> {
        ensure_active(group)?;
        self.ensure_admin(group, "add members")?;
        let (commit, welcome, _group_info) = group
            .add_members_without_update(provider, self.signer(), key_packages)
            .map_err(|e| match e {
                AddMembersError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
                e => EngineError::Invalid(e.to_string()),
            })?;
        let ratchet_tree = pending_tree(provider.crypto(), group)?;
        Ok(CommitOut {
            commit: encode(commit)?,
            welcome: Some(WelcomeOut {
                welcome: encode(welcome)?,
                ratchet_tree,
            }),
        })
    }

    /// Removes the members at `leaves` in one commit.
    pub fn remove_members(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
        leaves: &[u32],
    ) -> Result<CommitOut, EngineError> {
        ensure_active(group)?;
        self.ensure_admin(group, "remove members")?;
        if leaves.contains(&group.own_leaf_index().u32()) {
            return Err(EngineError::Invalid(
                "cannot remove ourselves; leave the group instead".into(),
            ));
        }
        let leaves: Vec<LeafNodeIndex> = leaves.iter().map(|i| LeafNodeIndex::new(*i)).collect();
        let (commit, _welcome, _group_info) = group
            .remove_members(provider, self.signer(), &leaves)
            .map_err(|e| match e {
                RemoveMembersError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
                e => EngineError::Invalid(e.to_string()),
            })?;
        Ok(CommitOut {
            commit: encode(commit)?,
            welcome: None,
        })
    }

    /// Refreshes our leaf's keys (post-compromise security), committing any queued proposals
    /// with it. A joiner does this soon after joining, which also fills its part of the tree.
    pub fn self_update(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
    ) -> Result<CommitOut, EngineError> {
        ensure_active(group)?;
        let bundle = group
            .self_update(provider, self.signer(), LeafNodeParameters::default())
            .map_err(|e| match e {
                SelfUpdateError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
                e => EngineError::Invalid(e.to_string()),
            })?;
        let welcome = match bundle.to_welcome_msg() {
            Some(welcome) => Some(WelcomeOut {
                welcome: encode(welcome)?,
                ratchet_tree: pending_tree(provider.crypto(), group)?,
            }),
            None => None,
        };
        let (commit, _, _) = bundle.into_contents();
        Ok(CommitOut {
            commit: encode(commit)?,
            welcome,
        })
    }

    /// Commits new shared settings (name, topic, admins). Only an admin may.
    pub fn change_settings(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
        new: &GroupSettings,
    ) -> Result<CommitOut, EngineError> {
        ensure_active(group)?;
        self.ensure_admin(group, "change the group's settings")?;
        let (commit, _welcome, _group_info) = group
            .update_group_context_extensions(provider, settings_extensions(new)?, self.signer())
            .map_err(|e| match e {
                CreateGroupContextExtProposalError::StorageError(e) => {
                    EngineError::Storage(format!("{e:?}"))
                }
                e => EngineError::Invalid(e.to_string()),
            })?;
        Ok(CommitOut {
            commit: encode(commit)?,
            welcome: None,
        })
    }

    fn ensure_admin(&self, group: &MlsGroup, what: &str) -> Result<(), EngineError> {
        if may_manage(
            group_settings(group)?.as_ref(),
            &self.identity.fingerprint(),
        ) {
            return Ok(());
        }
        Err(EngineError::NotAllowed(format!(
            "only the group's admins may {what}; ask one of them"
        )))
    }

    /// Asks the group to remove us. Another member must commit the proposal.
    pub fn leave(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
    ) -> Result<Vec<u8>, EngineError> {
        ensure_active(group)?;
        let proposal = group
            .leave_group(provider, self.signer())
            .map_err(|e| match e {
                LeaveGroupError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
                e => EngineError::Invalid(e.to_string()),
            })?;
        encode(proposal)
    }

    /// Applies our own commit once it is accepted; returns whom it added and removed.
    pub fn merge_pending_commit(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
    ) -> Result<Changes, EngineError> {
        let staged = group
            .pending_commit()
            .ok_or_else(|| EngineError::Invalid("no pending commit".into()))?;
        let changes = Changes::of(group, staged);
        group
            .merge_pending_commit(provider)
            .map_err(|e| EngineError::Storage(format!("merging our commit: {e:?}")))?;
        Ok(Changes {
            added: resolve_leaves(group, changes.added),
            ..changes
        })
    }

    /// Encrypts an application message for the group.
    pub fn send(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        ensure_active(group)?;
        let message = group
            .create_message(provider, self.signer(), plaintext)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        encode(message)
    }

    /// Processes one handshake or application message for `group`. A commit is merged before
    /// this returns; a proposal is queued.
    pub fn process(
        &self,
        provider: &impl OpenMlsProvider,
        group: &mut MlsGroup,
        message: ProtocolMessage,
    ) -> Result<Incoming, EngineError> {
        if message.group_id() != group.group_id() {
            return Err(EngineError::NotForUs("message is for another group".into()));
        }
        if !group.is_active() {
            return Err(EngineError::Inactive);
        }
        let message_epoch = message.epoch().as_u64();
        let group_epoch = group.epoch().as_u64();
        // Its epoch's keys are gone (no past epochs are kept): OpenMLS would call it a replay.
        // A commit there means two commits for one epoch: with no node to order them, members
        // who applied the other one are now in another group state.
        if message_epoch < group_epoch {
            if message.content_type() == ContentType::Commit {
                return Err(EngineError::Fork {
                    epoch: message_epoch,
                });
            }
            return Err(EngineError::WrongEpoch {
                message: message_epoch,
                group: group_epoch,
            });
        }
        let processed = group
            .process_message(provider, message)
            .map_err(|e| classify_process_error(e, message_epoch, group_epoch))?;
        let sender = match processed.sender() {
            Sender::Member(leaf) => group
                .member_at(*leaf)
                .map(|m| member_info(&m))
                .ok_or_else(|| EngineError::Forged("sender is not a member".into()))?,
            _ => {
                return Err(EngineError::Invalid(
                    "messages from non-members are not accepted".into(),
                ));
            }
        };
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => Ok(Incoming::Application {
                sender,
                plaintext: m.into_bytes(),
            }),
            ProcessedMessageContent::ProposalMessage(proposal) => {
                let settings = group_settings(group)?;
                authorize_proposal(
                    group,
                    settings.as_ref(),
                    proposal.sender(),
                    proposal.proposal(),
                )?;
                let summary = describe_proposal(group, proposal.proposal());
                group
                    .store_pending_proposal(provider.storage(), *proposal)
                    .map_err(|e| EngineError::Storage(format!("{e:?}")))?;
                Ok(Incoming::Proposal { sender, summary })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                authorize(group, &staged)?;
                let Changes {
                    added,
                    removed,
                    settings,
                } = Changes::of(group, &staged);
                let removed_us = staged.self_removed();
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| EngineError::Storage(format!("merging commit: {e:?}")))?;
                let added = if removed_us {
                    added
                } else {
                    resolve_leaves(group, added)
                };
                Ok(Incoming::Commit {
                    sender,
                    added,
                    removed,
                    settings,
                    removed_us,
                    epoch: group.epoch().as_u64(),
                })
            }
            ProcessedMessageContent::OwnPendingCommit
            | ProcessedMessageContent::OwnPrivateMessage => Err(EngineError::OwnMessage),
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(EngineError::Invalid(
                "external join proposals are not accepted".into(),
            )),
        }
    }

    /// Joins a group from a Welcome and the ratchet tree sent beside it. Returns the group and
    /// the member who added us.
    pub fn join(
        &self,
        provider: &impl OpenMlsProvider,
        welcome: Welcome,
        ratchet_tree: &[u8],
    ) -> Result<(MlsGroup, MemberInfo), EngineError> {
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree)
            .map_err(|e| EngineError::Malformed(format!("ratchet tree: {e}")))?;
        let staged =
            StagedWelcome::new_from_welcome(provider, &Self::join_config(), welcome, Some(tree))
                .map_err(|e| match e {
                    WelcomeError::NoMatchingKeyPackage | WelcomeError::NoMatchingEncryptionKey => {
                        EngineError::NotForUs("Welcome is for someone else".into())
                    }
                    WelcomeError::StorageError(e) => EngineError::Storage(format!("{e:?}")),
                    WelcomeError::GroupAlreadyExists => {
                        EngineError::Invalid("we are already in this group".into())
                    }
                    e => EngineError::Forged(format!("Welcome rejected: {e}")),
                })?;
        let inviter = staged
            .welcome_sender()
            .map(|leaf| MemberInfo {
                leaf_index: staged.welcome_sender_index().u32(),
                name: DeviceName::from_credential(leaf.credential()).ok(),
                fingerprint: Fingerprint::of_signature_key(leaf.signature_key().as_slice()),
            })
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        // The GroupInfo's signer made the commit that added us. Only an admin may add: a
        // non-admin's add is rejected by every member who reads it, and the group we would join
        // is a fork they will never read (RFC 9420 gives a joiner no older epoch to check).
        let settings = settings_of(staged.group_context().extensions())?;
        if !may_manage(settings.as_ref(), &inviter.fingerprint) {
            return Err(EngineError::NotAllowed(format!(
                "{} added us, but is not an admin of the group: its members reject that \
                 commit, so the group we would join is a fork nobody else reads",
                display_member(&inviter)
            )));
        }
        let group = staged
            .into_group(provider)
            .map_err(|e| EngineError::Storage(format!("{e:?}")))?;
        Ok((group, inviter))
    }
}

fn ensure_active(group: &MlsGroup) -> Result<(), EngineError> {
    if group.is_active() {
        Ok(())
    } else {
        Err(EngineError::Inactive)
    }
}

fn encode(message: MlsMessageOut) -> Result<Vec<u8>, EngineError> {
    message
        .tls_serialize_detached()
        .map_err(|e| EngineError::Invalid(format!("encoding: {e}")))
}

/// The ratchet tree of the epoch our pending commit creates, for joiners.
fn pending_tree(
    crypto: &impl openmls_traits::crypto::OpenMlsCrypto,
    group: &MlsGroup,
) -> Result<Vec<u8>, EngineError> {
    let staged = group
        .pending_commit()
        .ok_or_else(|| EngineError::Invalid("no pending commit".into()))?;
    let tree = staged
        .export_ratchet_tree(crypto, group.export_ratchet_tree())
        .map_err(|e| EngineError::Invalid(format!("exporting tree: {e}")))?
        .ok_or_else(|| EngineError::Invalid("pending commit has no tree".into()))?;
    tree.tls_serialize_detached()
        .map_err(|e| EngineError::Invalid(format!("encoding tree: {e}")))
}

/// After a merge, finds the leaves the new members were given.
fn resolve_leaves(group: &MlsGroup, added: Vec<MemberInfo>) -> Vec<MemberInfo> {
    let all = members(group);
    added
        .into_iter()
        .map(|new| {
            all.iter()
                .find(|m| m.fingerprint == new.fingerprint)
                .cloned()
                .unwrap_or(new)
        })
        .collect()
}

fn describe_proposal(group: &MlsGroup, proposal: &Proposal) -> String {
    match proposal {
        Proposal::Remove(r) => match group.member_at(r.removed()) {
            Some(m) => format!("remove {}", display_member(&member_info(&m))),
            None => "remove an unknown leaf".into(),
        },
        Proposal::Add(a) => {
            match DeviceName::from_credential(a.key_package().leaf_node().credential()) {
                Ok(name) => format!("add {name}"),
                Err(_) => "add a member".into(),
            }
        }
        Proposal::Update(_) => "update".into(),
        other => format!("{:?}", other.proposal_type()),
    }
}

/// `alice/laptop` or, for a foreign credential, its fingerprint.
pub fn display_member(member: &MemberInfo) -> String {
    match &member.name {
        Some(name) => name.to_string(),
        None => format!("<{}>", &member.fingerprint.to_hex()[..16]),
    }
}
