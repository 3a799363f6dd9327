//! The members a run is made of.
//!
//! - **KeyPackage members** exist only as a registration and KeyPackages on the node: each
//!   connects, registers, publishes and goes. They cost the tool one key pair each, so a run
//!   can have hundreds of thousands.
//! - **Full members** ([`Peer`]) are real peers: a durable profile and the `mlschat` sync core
//!   ([`Driver`]) on a thread of their own, processing every commit and decrypting every
//!   message as a user's device does. They carry out the run's operations (add, remove, send)
//!   and report what they hear ([`Heard`]) with the instant they heard it, so that latency is
//!   measured at real receivers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use mlschat_node::driver::Driver;
use mlschat_node::engine::Engine;
use mlschat_node::identity::{DeviceName, Identity};
use mlschat_node::profile::{
    HistoryKind, Home, Intent, InviteCode, Profile, ProfileError, SenderState, SettingsChange,
};
use mlschat_node::sync::{Core, Notice, SyncError, Ticket};
use mlschat_wire::quic::Connection;
use mlschat_wire::{PublishKeyPackages, Request, Response};
use openmls::prelude::GroupId;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::signatures::Signer as _;
use tokio::sync::{mpsc, oneshot};

use crate::target::{Node, Target};

/// How many members register at once.
const REGISTERING_AT_ONCE: usize = 64;

/// The text of the `n`th load message: receivers time it by its number.
pub fn load_text(n: u64) -> String {
    format!("load {n}")
}

fn load_number(text: &str) -> Option<u64> {
    text.strip_prefix("load ")?.parse().ok()
}

/// The home of member number `n`: its node of the target.
pub fn home(target: &Target, n: usize) -> Home {
    let node = target.node(n);
    Home {
        address: node.quic.to_string(),
        fingerprint: node.pin,
        invite: target.invite.clone(),
    }
}

/// A logged-in connection to `node`, registering `identity` on first use.
async fn log_in(node: &Node, invite: &[u8], identity: &Identity) -> anyhow::Result<Connection> {
    let connection = Connection::connect(node.quic, node.pin).await?;
    let sign = |bytes: &[u8]| identity.signer.sign(bytes).expect("Ed25519 signs");
    connection
        .log_in(identity.signer.public(), invite, sign)
        .await?;
    Ok(connection)
}

/// Member number `n`, who exists only as `key_packages` one-time KeyPackages on its node.
pub async fn key_package_member(
    target: &Target,
    n: usize,
    name: &str,
    key_packages: usize,
) -> anyhow::Result<InviteCode> {
    let device = DeviceName::new(name, "load")?;
    let engine = Engine::new(Identity::generate(device.clone()));
    let provider = OpenMlsRustCrypto::default();
    let one_time = (0..key_packages)
        .map(|_| Ok(engine.new_key_package(&provider, false)?.message.into()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let connection = log_in(target.node(n), &target.invite, engine.identity()).await?;
    let publish = Request::PublishKeyPackages(PublishKeyPackages {
        one_time,
        last_resort: Vec::new().into(),
    });
    connection.request(&publish).await?;
    connection.close();
    Ok(InviteCode {
        name: device,
        signature_key: engine.identity().signer.public().to_vec(),
        home: home(target, n),
        // A crowd member is never looked for on a LAN.
        discovery: None,
    })
}

/// Registers `names` as KeyPackage members, [`REGISTERING_AT_ONCE`] at a time; `done` is told
/// of each.
pub async fn key_package_members(
    target: &Target,
    names: impl IntoIterator<Item = String>,
    key_packages: usize,
    done: impl Fn(),
) -> anyhow::Result<Vec<InviteCode>> {
    let names: Vec<String> = names.into_iter().collect();
    let mut codes = Vec::with_capacity(names.len());
    for chunk in names.chunks(REGISTERING_AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, name) in chunk.iter().enumerate() {
            let (target, name, n) = (target.clone(), name.clone(), codes.len() + i);
            tasks.spawn(async move {
                let code = key_package_member(&target, n, &name, key_packages).await;
                (i, code.with_context(|| format!("registering {name}")))
            });
        }
        let mut batch: Vec<(usize, InviteCode)> = Vec::with_capacity(chunk.len());
        while let Some(joined) = tasks.join_next().await {
            let (i, code) = joined?;
            batch.push((i, code?));
            done();
        }
        batch.sort_by_key(|(i, _)| *i);
        codes.extend(batch.into_iter().map(|(_, c)| c));
    }
    Ok(codes)
}

/// A connection of the tool's own, registered, from which it claims KeyPackages to time them.
#[derive(Clone)]
pub struct Claimer {
    connection: Connection,
}

impl std::fmt::Debug for Claimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claimer")
    }
}

impl Claimer {
    /// Connects to the target's first node (claims are served from the database its nodes
    /// share).
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let identity = Identity::generate(DeviceName::new("claimer", "load")?);
        let connection = log_in(target.node(0), &target.invite, &identity).await?;
        Ok(Self { connection })
    }

    /// Claims one KeyPackage of `member`; the error is the node's code.
    pub async fn claim(&self, member: &InviteCode) -> Result<(), String> {
        let owner = mlschat_wire::token::client_id(&member.signature_key);
        match self
            .connection
            .request(&Request::ClaimKeyPackage { owner })
            .await
        {
            Ok(Response::KeyPackage { .. }) => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.code().map_or_else(|| "disconnected".into(), code_name)),
        }
    }
}

/// An error code as reports name it: `StaleEpoch` is `stale_epoch`.
pub fn code_name(code: impl std::fmt::Debug) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// Why an operation of a full member failed, as reports count it.
fn failure(e: &SyncError) -> String {
    match e {
        SyncError::Refused { code, .. } => code_name(code),
        SyncError::Disconnected => "disconnected".into(),
        SyncError::Removed => "removed".into(),
        _ => "client".into(),
    }
}

/// What a full member heard, and when.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Connected, KeyPackages published: it can be added.
    Ready,
    /// It joined the group from a Welcome.
    Joined,
    /// Its group reached this epoch.
    Epoch(u64),
    /// It decrypted load message number `n`.
    Text(u64),
    /// It stopped: it could not connect, or lost the node.
    Failed(String),
}

/// What the run asks of a full member.
#[derive(Debug)]
pub enum Order {
    CreateGroup(String),
    Add(String, Vec<String>),
    Remove(String, Vec<String>),
    Send(String, String),
    Promote(String, Vec<String>),
    /// Make this member a contact (so that it can be added by name).
    Trust(Box<InviteCode>),
    /// Stop the member's thread (its profile stays on disk).
    Stop,
}

/// An order's answer: the epoch of its group once done (0 for orders on no group), or why it
/// failed.
pub type Answer = Result<u64, String>;
type Reply = oneshot::Sender<Answer>;

/// A full member's profile, made and not yet started.
#[derive(Debug)]
pub struct NewPeer {
    pub name: String,
    pub code: InviteCode,
    pub fingerprint: String,
    profile: Profile,
}

impl NewPeer {
    /// Makes a profile for `name` in `dir`, homed on `home`.
    pub fn create(dir: &Path, name: &str, home: &Home) -> anyhow::Result<Self> {
        let mut profile = Profile::create(&dir.join(name), DeviceName::new(name, "load")?, None)?;
        profile.set_home(home)?;
        Ok(Self {
            name: name.to_owned(),
            code: profile.invite_code()?,
            fingerprint: profile.identity().fingerprint().to_hex(),
            profile,
        })
    }

    /// Makes these members contacts: their Welcomes are joined, they can be added by name.
    pub fn trust<'a>(
        &mut self,
        codes: impl IntoIterator<Item = &'a InviteCode>,
    ) -> anyhow::Result<()> {
        for code in codes {
            self.profile.add_contact(code)?;
        }
        Ok(())
    }

    /// Starts it on its own thread; it reports `(index, Heard, when)` on `heard`.
    pub fn start(
        self,
        index: usize,
        heard: mpsc::UnboundedSender<(usize, Heard, Instant)>,
    ) -> anyhow::Result<Peer> {
        let (orders, inbox) = mpsc::unbounded_channel();
        let profile = self.profile;
        std::thread::Builder::new()
            .name(format!("peer-{}", self.name))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(run_peer(profile, index, inbox, heard));
            })?;
        Ok(Peer {
            name: self.name,
            code: self.code,
            fingerprint: self.fingerprint,
            orders,
        })
    }
}

/// A full member on its own thread, and how to give it orders. The thread stops when every
/// handle is gone or on [`Order::Stop`].
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub code: InviteCode,
    pub fingerprint: String,
    orders: mpsc::UnboundedSender<(Order, Reply)>,
}

impl Peer {
    /// Gives an order; the answer comes when the node has taken it (or refused it).
    pub fn order(&self, order: Order) -> oneshot::Receiver<Answer> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, reply))) = self.orders.send((order, reply)) {
            let _ = reply.send(Err("stopped".into()));
        }
        answer
    }

    /// Gives an order and waits for its answer.
    pub async fn ask(&self, order: Order) -> Answer {
        self.order(order)
            .await
            .unwrap_or_else(|_| Err("stopped".into()))
    }
}

async fn run_peer(
    profile: Profile,
    index: usize,
    mut orders: mpsc::UnboundedReceiver<(Order, Reply)>,
    heard: mpsc::UnboundedSender<(usize, Heard, Instant)>,
) {
    let report = |what: Heard| {
        let _ = heard.send((index, what, Instant::now()));
    };
    let mut driver = Driver::new(profile);
    if let Err(e) = driver.connect().await {
        return report(Heard::Failed(format!("connecting: {e}")));
    }
    if let Err(e) = driver.sync().await {
        return report(Heard::Failed(format!("its first sync: {e}")));
    }
    report(Heard::Ready);
    let mut cursor = driver.profile().latest_event().unwrap_or(0);
    let mut epochs: HashMap<String, u64> = HashMap::new();
    // Orders under way: their answer and their group.
    let mut waiting: HashMap<Ticket, (Reply, String)> = HashMap::new();
    loop {
        tokio::select! {
            order = orders.recv() => {
                let Some((order, reply)) = order else { return };
                if matches!(order, Order::Stop) {
                    return;
                }
                match take(&mut driver, order) {
                    Ok(Some(under_way)) => {
                        waiting.insert(under_way.0, (reply, under_way.1));
                    }
                    Ok(None) => {
                        let _ = reply.send(Ok(0));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                driver.flush();
            }
            () = driver.step() => {}
        }
        // A load test measures a node that stays up: a lost connection ends the run.
        if let Some(why) = driver.offline() {
            return report(Heard::Failed(format!("lost the node: {why}")));
        }
        while let Some(notice) = driver.poll_notice() {
            match notice {
                Notice::Done { ticket, result } => {
                    if let Some((reply, group)) = waiting.remove(&ticket) {
                        // Done as the commit merged: the epoch now is the one it made.
                        let epoch = epoch_of(&mut driver, &group);
                        let _ = reply.send(result.map(|()| epoch).map_err(|e| failure(&e)));
                    }
                }
                Notice::Joined(_) => report(Heard::Joined),
                Notice::Alert(_) => {}
            }
        }
        // Reading events judges their senders against every contact: only when there are new
        // ones (a group's creator may know 100,000 members).
        if driver.profile().latest_event().unwrap_or(0) <= cursor {
            continue;
        }
        let Ok(events) = driver.profile().events_after(cursor, 10_000) else {
            continue;
        };
        let mut groups_changed = Vec::new();
        for event in &events {
            cursor = cursor.max(event.id);
            match load_number(&event.body) {
                Some(_) if event.sender_state == SenderState::Me => {}
                Some(n) if event.kind == HistoryKind::Text => report(Heard::Text(n)),
                _ => groups_changed.push(event.group.clone()),
            }
        }
        groups_changed.dedup();
        for group in groups_changed {
            let profile = driver.profile();
            let Ok(id) = profile.find_group(&group) else {
                continue;
            };
            let Ok((epoch, _)) = profile.group_token(&id) else {
                continue;
            };
            if epochs.insert(group, epoch) != Some(epoch) {
                report(Heard::Epoch(epoch));
            }
        }
    }
}

/// The epoch of `group` in the member's profile (0 if it has no such group).
fn epoch_of(driver: &mut Driver, group: &str) -> u64 {
    let profile = driver.profile();
    let id = profile.find_group(group);
    id.and_then(|id| profile.group_token(&id))
        .map_or(0, |(epoch, _)| epoch)
}

/// The group a member's order names.
fn group_id(core: &mut Core, group: &str) -> Result<GroupId, ProfileError> {
    core.profile().find_group(group)
}

/// Hands an order to the sync core: a ticket to wait for and the order's group, or done at
/// once.
fn take(driver: &mut Driver, order: Order) -> Result<Option<(Ticket, String)>, String> {
    let core = driver.core();
    let ticket = match order {
        Order::CreateGroup(name) => {
            core.create_group(&name).map_err(|e| e.to_string())?;
            return Ok(None);
        }
        Order::Stop => return Ok(None),
        Order::Trust(code) => {
            core.profile()
                .add_contact(&code)
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
        Order::Add(group, who) => (
            group_id(core, &group).and_then(|id| core.add(&id, &who)),
            group,
        ),
        Order::Remove(group, who) => (
            group_id(core, &group).and_then(|id| core.remove(&id, &who)),
            group,
        ),
        Order::Send(group, text) => (
            group_id(core, &group).and_then(|id| core.send(&id, &text)),
            group,
        ),
        Order::Promote(group, fingerprints) => {
            let promote = SettingsChange {
                promote: fingerprints,
                ..SettingsChange::default()
            };
            let changed =
                group_id(core, &group).and_then(|id| core.change(&id, Intent::Settings(promote)));
            (changed, group)
        }
    };
    match ticket {
        (Ok(ticket), group) => Ok(Some((ticket, group))),
        (Err(e), _) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_the_node_names_them() {
        #[derive(Debug)]
        struct TooManyRequests;
        assert_eq!(code_name(TooManyRequests), "too_many_requests");
        assert_eq!(load_number(&load_text(42)), Some(42));
        assert_eq!(load_number("hello"), None);
    }
}
