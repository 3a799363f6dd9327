//! Pushes across node processes that share one Postgres (DESIGN.md, "Federation and scale").
//!
//! After a write commits, the process that took it pushes to its own connections and announces
//! the write on a Postgres channel (`NOTIFY`). Every other process listens; if it has
//! connections waiting for that group or mailbox, it reads the entries from the database and
//! pushes them. An announcement says where to look, never what is there: a `NOTIFY` payload
//! holds at most 8000 bytes, a message up to 64 MiB.
//!
//! Like every push, an announcement is best effort: one lost to a crash or a dropped listening
//! connection only delays delivery until the client's next fetch (clients fetch on any gap, and
//! on reconnecting). SQLite has one process by construction, so there nothing is announced.

use std::sync::Arc;

use mlschat_grouplog::host::{group_entry, mailbox_entry};
use mlschat_wire::ClientId;

use crate::fanout::Fanout;
use crate::storage::{Database, GroupLog, Page, StorageError};

/// The Postgres channel every node process listens on.
pub const CHANNEL: &str = "mlschat_writes";

/// A `NOTIFY` payload must stay below 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

/// One committed write that other processes may have to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// Log entries `first..=last` of a group.
    Log {
        group_id: Vec<u8>,
        first: u64,
        last: u64,
    },
    /// Mailbox entry `id` of `owner` (a Welcome).
    Mailbox { owner: ClientId, id: u64 },
}

impl Announcement {
    fn line(&self) -> String {
        match self {
            Announcement::Log {
                group_id,
                first,
                last,
            } => format!("L {} {first} {last}", hex::encode(group_id)),
            Announcement::Mailbox { owner, id } => format!("M {} {id}", hex::encode(owner)),
        }
    }

    fn parse(line: &str) -> Option<Announcement> {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["L", group, first, last] => Some(Announcement::Log {
                group_id: hex::decode(group).ok()?,
                first: first.parse().ok()?,
                last: last.parse().ok()?,
            }),
            ["M", owner, id] => Some(Announcement::Mailbox {
                owner: hex::decode(owner).ok()?.try_into().ok()?,
                id: id.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Announces this process's writes, signed with a random origin so it can skip its own.
#[derive(Debug, Clone)]
pub struct Announcer {
    db: Database,
    origin: u64,
}

impl Announcer {
    pub fn new(db: Database) -> Self {
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin).expect("randomness for the node's origin id");
        Self {
            db,
            origin: u64::from_le_bytes(origin),
        }
    }

    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Announces `writes` in the background (the writer does not wait for it): as few
    /// `NOTIFY`s as fit them.
    pub fn announce(&self, writes: Vec<Announcement>) {
        if writes.is_empty() || !matches!(self.db, Database::Postgres(_)) {
            return;
        }
        let payloads = payloads(self.origin, &writes);
        let db = self.db.clone();
        tokio::spawn(async move {
            for payload in payloads {
                if let Err(e) = db.notify(CHANNEL, &payload).await {
                    tracing::warn!(error = %e, "announcing a write to other node processes");
                }
            }
        });
    }
}

/// `origin` on the first line, then one write per line, split to fit `NOTIFY`.
fn payloads(origin: u64, writes: &[Announcement]) -> Vec<String> {
    let head = origin.to_string();
    let mut payloads = Vec::new();
    let mut payload = head.clone();
    for line in writes.iter().map(Announcement::line) {
        if payload.len() + 1 + line.len() > MAX_PAYLOAD && payload.len() > head.len() {
            payloads.push(std::mem::replace(&mut payload, head.clone()));
        }
        payload.push('\n');
        payload.push_str(&line);
    }
    payloads.push(payload);
    payloads
}

/// What a payload from another process announces; nothing for our own (or a malformed one).
pub fn parse(payload: &str, own_origin: u64) -> Vec<Announcement> {
    let mut lines = payload.split('\n');
    match lines.next().and_then(|o| o.parse::<u64>().ok()) {
        Some(origin) if origin != own_origin => lines.filter_map(Announcement::parse).collect(),
        _ => Vec::new(),
    }
}

/// Listens for other processes' writes until the task is dropped, and pushes each to this
/// process's connections that wait for it. Starts again a second after the listening
/// connection fails (what was announced meanwhile is fetched by the clients themselves).
pub async fn listen(db: Database, fanout: Arc<Fanout>, own_origin: u64) {
    let Database::Postgres(pool) = &db else {
        return;
    };
    loop {
        if let Err(e) = follow(&db, pool, &fanout, own_origin).await {
            tracing::warn!(error = %e, "listening for other node processes");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn follow(
    db: &Database,
    pool: &sqlx::PgPool,
    fanout: &Fanout,
    own_origin: u64,
) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        for write in parse(notification.payload(), own_origin) {
            if let Err(e) = push(db, fanout, write).await {
                tracing::warn!(error = %e, "reading what another node process announced");
            }
        }
    }
}

/// Pushes what another process wrote to this one's connections that wait for it.
async fn push(db: &Database, fanout: &Fanout, write: Announcement) -> Result<(), StorageError> {
    match write {
        Announcement::Log {
            group_id,
            first,
            last,
        } if fanout.has_subscribers(&group_id) => {
            let count = u32::try_from(last.saturating_sub(first) + 1).unwrap_or(u32::MAX);
            for entry in db
                .log_after(&group_id, first.saturating_sub(1), count)
                .await?
            {
                fanout.publish(&group_id, group_entry(entry));
            }
        }
        Announcement::Mailbox { owner, id } if fanout.has_watchers(&owner) => {
            let page = Page::from(1);
            let entries = db.fetch_mailbox(&owner, id.saturating_sub(1), page).await?;
            for entry in entries.into_iter().filter(|e| e.id == id) {
                fanout.deliver(&owner, mailbox_entry(entry));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_split_under_the_limit_and_skip_our_own() {
        let writes: Vec<Announcement> = (0..400u64)
            .map(|i| Announcement::Log {
                group_id: vec![i as u8; 40],
                first: i,
                last: i + 2,
            })
            .chain([Announcement::Mailbox {
                owner: [7; 32],
                id: 9,
            }])
            .collect();
        let payloads = payloads(42, &writes);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<Announcement> = payloads.iter().flat_map(|p| parse(p, 1)).collect();
        assert_eq!(parsed, writes);
        assert!(payloads.iter().all(|p| parse(p, 42).is_empty()));
        assert!(parse("not a number\nL 00 1 1", 1).is_empty());
        assert_eq!(parse("5\nL zz 1 1\nM 00 1\nL 0a 3 4", 1).len(), 1);
    }
}
