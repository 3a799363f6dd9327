//! Who hears of what: each new log entry goes to the connections subscribed to its group, each
//! new Welcome to its owner's connections. A push is encoded once, however many connections
//! it goes to; each connection's queue is bounded, and a push that does not fit is dropped
//! (the client, seeing a gap in sequence numbers, fetches what it missed).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use mlschat_wire::{ClientId, GroupEntry, MailboxEntry, Push, frame};
use tokio::sync::mpsc;

/// One encoded push frame, shared by every queue it goes to.
pub type Frame = Arc<[u8]>;

/// A connection's queue of pushes.
pub type PushQueue = mpsc::Sender<Frame>;

/// Pushes waiting for a slow connection; beyond this they are dropped.
pub const PUSH_QUEUE: usize = 1024;

/// Queues by what they wait for.
#[derive(Debug)]
struct Listeners<K>(Mutex<HashMap<K, Vec<PushQueue>>>);

impl<K: Eq + Hash + Clone> Listeners<K> {
    fn new() -> Self {
        Listeners(Mutex::new(HashMap::new()))
    }

    fn add(&self, key: &K, queue: &PushQueue) {
        if let Ok(mut listeners) = self.0.lock() {
            let queues = listeners.entry(key.clone()).or_default();
            queues.retain(|q| !q.is_closed());
            if !queues.iter().any(|q| q.same_channel(queue)) {
                queues.push(queue.clone());
            }
        }
    }

    fn any(&self, key: &K) -> bool {
        self.0.lock().is_ok_and(|l| l.contains_key(key))
    }

    /// Sends `push`, encoded once, to every queue waiting for `key`; forgets closed queues.
    fn send(&self, key: &K, push: &Push) {
        let Ok(mut listeners) = self.0.lock() else {
            return;
        };
        let Some(queues) = listeners.get_mut(key) else {
            return;
        };
        let Ok(bytes) = frame::encode(push) else {
            tracing::error!("a push could not be encoded");
            return;
        };
        let bytes: Frame = bytes.into();
        queues.retain(|queue| {
            !matches!(
                queue.try_send(bytes.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
        if queues.is_empty() {
            listeners.remove(key);
        }
    }
}

/// The node's push registry.
#[derive(Debug)]
pub struct Fanout {
    groups: Listeners<Vec<u8>>,
    mailboxes: Listeners<ClientId>,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout {
            groups: Listeners::new(),
            mailboxes: Listeners::new(),
        }
    }
}

impl Fanout {
    /// This connection hears of the group's new entries from now on.
    pub fn subscribe(&self, group_id: &[u8], queue: &PushQueue) {
        self.groups.add(&group_id.to_vec(), queue);
    }

    /// This connection hears of `client`'s new Welcomes from now on.
    pub fn watch_mailbox(&self, client: &ClientId, queue: &PushQueue) {
        self.mailboxes.add(client, queue);
    }

    pub fn has_subscribers(&self, group_id: &[u8]) -> bool {
        self.groups.any(&group_id.to_vec())
    }

    pub fn has_watchers(&self, owner: &ClientId) -> bool {
        self.mailboxes.any(owner)
    }

    /// Hands a new log entry to every connection subscribed to its group. Pushes are sent
    /// after the entry is committed; they may arrive out of order, and clients order them by
    /// `seq`.
    pub fn publish(&self, group_id: &[u8], entry: GroupEntry) {
        let push = Push::Group {
            group_id: group_id.into(),
            entry,
        };
        self.groups.send(&group_id.to_vec(), &push);
    }

    /// Hands a new mailbox entry to its owner's connections.
    pub fn deliver(&self, owner: &ClientId, entry: MailboxEntry) {
        self.mailboxes.send(owner, &Push::Mailbox(entry));
    }
}
