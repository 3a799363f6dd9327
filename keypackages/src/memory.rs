//! A [`Store`] in memory: for tests, and for a node that keeps nothing across restarts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::{ClaimRecord, Claimed, ClientId, KeyPackage, Stock, Store, StoreError, UnixTime};

#[derive(Debug, Default)]
struct Owner {
    one_time: VecDeque<KeyPackage>,
    last_resort: Option<KeyPackage>,
    /// References ever published, so a re-published package is not claimable twice.
    seen: HashSet<Vec<u8>>,
    log: Vec<ClaimRecord>,
    /// The number of the next claim (numbers are not reused after a purge).
    next_seq: u64,
    /// Claims a Welcome has used ([`MemoryStore::use_claim`]).
    welcomed: HashSet<u64>,
}

/// One lock for everything: each operation is atomic, which is what the trait asks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    owners: Mutex<HashMap<ClientId, Owner>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ClientId, Owner>) -> R) -> Result<R, StoreError> {
        let mut owners = self
            .owners
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        Ok(f(&mut owners))
    }
}

/// What a group log kept beside this store needs (`mlschat_grouplog::MemoryLog`): a commit's
/// Welcome uses up one claim of its recipient's KeyPackage by the committer.
impl MemoryStore {
    /// `claimer`'s claims of `owner`'s packages that no Welcome has used yet, newest first (at
    /// most 64, as a committer claims just before it commits).
    pub fn open_claims(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        self.with(|owners| {
            let Some(owner) = owners.get(owner) else {
                return Vec::new();
            };
            owner
                .log
                .iter()
                .rev()
                .filter(|r| r.claimer == *claimer && !owner.welcomed.contains(&r.seq))
                .take(64)
                .cloned()
                .collect()
        })
    }

    /// Marks claim `seq` of `owner`'s packages as used by a Welcome.
    pub fn use_claim(&self, owner: &ClientId, seq: u64) -> Result<(), StoreError> {
        self.with(|owners| {
            owners.entry(*owner).or_default().welcomed.insert(seq);
        })
    }

    /// Forgets claim records made before `before` (retention); returns how many.
    pub fn purge_claims(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.with(|owners| {
            let mut purged = 0;
            for owner in owners.values_mut() {
                let kept = owner.log.len();
                owner.log.retain(|r| r.at >= before);
                purged += (kept - owner.log.len()) as u64;
                let log = &owner.log;
                owner
                    .welcomed
                    .retain(|seq| log.iter().any(|r| r.seq == *seq));
            }
            purged
        })
    }
}

impl Store for MemoryStore {
    async fn publish(
        &self,
        owner: &ClientId,
        one_time: Vec<KeyPackage>,
        last_resort: Option<KeyPackage>,
    ) -> Result<(), StoreError> {
        self.with(|owners| {
            let owner = owners.entry(*owner).or_default();
            for kp in one_time {
                if owner.seen.insert(kp.reference.clone()) {
                    owner.one_time.push_back(kp);
                }
            }
            if let Some(kp) = last_resort {
                owner.seen.insert(kp.reference.clone());
                owner.last_resort = Some(kp);
            }
        })
    }

    async fn claim(
        &self,
        owner: &ClientId,
        claimer: &ClientId,
        now: UnixTime,
        one_time: bool,
    ) -> Result<Option<Claimed>, StoreError> {
        self.with(|owners| {
            let owner = owners.get_mut(owner)?;
            owner.one_time.retain(|kp| kp.not_after >= now);
            let taken = if one_time {
                owner.one_time.pop_front()
            } else {
                None
            };
            let claimed = match taken {
                Some(kp) => Claimed {
                    key_package: kp,
                    last_resort: false,
                },
                None => Claimed {
                    key_package: owner.last_resort.clone().filter(|kp| kp.not_after >= now)?,
                    last_resort: true,
                },
            };
            owner.next_seq += 1;
            let seq = owner.next_seq;
            owner.log.push(ClaimRecord {
                seq,
                claimer: *claimer,
                at: now,
                last_resort: claimed.last_resort,
                reference: claimed.key_package.reference.clone(),
            });
            Some(claimed)
        })
    }

    async fn stock(&self, owner: &ClientId, now: UnixTime) -> Result<Stock, StoreError> {
        self.with(|owners| match owners.get(owner) {
            None => Stock::default(),
            Some(o) => Stock {
                one_time: o.one_time.iter().filter(|kp| kp.not_after >= now).count() as u32,
                last_resort: o.last_resort.as_ref().is_some_and(|kp| kp.not_after >= now),
            },
        })
    }

    async fn claim_log(
        &self,
        owner: &ClientId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ClaimRecord>, StoreError> {
        self.with(|owners| {
            owners
                .get(owner)
                .map(|o| {
                    o.log
                        .iter()
                        .filter(|r| r.seq > after)
                        .take(limit as usize)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        self.with(|owners| {
            let mut purged = 0;
            for owner in owners.values_mut() {
                let before = owner.one_time.len();
                owner.one_time.retain(|kp| kp.not_after >= now);
                purged += (before - owner.one_time.len()) as u64;
                if owner
                    .last_resort
                    .as_ref()
                    .is_some_and(|kp| kp.not_after < now)
                {
                    owner.last_resort = None;
                    purged += 1;
                }
            }
            purged
        })
    }
}
