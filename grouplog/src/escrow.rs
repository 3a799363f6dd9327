//! Welcome escrow's one decision, for every store: which claim each of a commit's Welcomes
//! uses up, and whether it is delivered. A store reads what it knows of each recipient
//! ([`Recipient`]) before it writes anything, asks [`releases`], then writes what it says.

use std::collections::BTreeMap;

use crate::{ClientId, NewCommit, Refused};

/// A claim of the recipient's KeyPackage by the poster that no Welcome has used yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenClaim {
    /// The claim's number in its store.
    pub seq: u64,
    /// The claimed package's KeyPackageRef.
    pub reference: Vec<u8>,
    pub last_resort: bool,
}

/// What a store knows of one recipient of a commit's Welcomes, before the commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// The poster's open claims of the recipient's packages, newest first (at most 64: an
    /// honest committer claims just before it commits).
    pub open_claims: Vec<OpenClaim>,
    /// Welcomes waiting in the recipient's mailbox.
    pub held: u64,
    /// Whether a Welcome of this poster from a last-resort claim waits there already.
    pub last_resort_waiting: bool,
}

/// What one Welcome of a commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The claim it uses up; `None`: it is not delivered (the mailbox is full, or a
    /// last-resort Welcome of this poster waits there), and the commit goes on without it.
    pub claim: Option<u64>,
    pub last_resort: bool,
}

/// Decides each Welcome of `commit`, in order: it needs an open claim of its recipient's
/// package that it is encrypted to (else the whole commit is [`Refused::NotClaimed`]), one
/// claim per Welcome; it is delivered while the mailbox holds fewer than `mailbox_quota`,
/// and from a last-resort claim only if no other last-resort Welcome of the poster waits
/// there, so that however often a last-resort package is claimed it cannot fill a mailbox.
/// `recipients` holds every recipient of the commit.
pub fn releases(
    commit: &NewCommit,
    mailbox_quota: u64,
    recipients: &BTreeMap<ClientId, Recipient>,
) -> Result<Vec<Release>, Refused> {
    let mut releases: Vec<Release> = Vec::with_capacity(commit.welcomes.len());
    for welcome in &commit.welcomes {
        let known = recipients
            .get(&welcome.recipient)
            .expect("the store read every recipient");
        // Welcomes of this commit to the same recipient that are delivered before this one.
        let earlier: Vec<&Release> = commit
            .welcomes
            .iter()
            .zip(&releases)
            .filter(|(w, r)| w.recipient == welcome.recipient && r.claim.is_some())
            .map(|(_, r)| r)
            .collect();
        let claim = known
            .open_claims
            .iter()
            .find(|c| {
                !earlier.iter().any(|r| r.claim == Some(c.seq))
                    && welcome.references.contains(&c.reference)
            })
            .ok_or(Refused::NotClaimed)?;
        let mut deliver = known.held + (earlier.len() as u64) < mailbox_quota;
        if deliver && claim.last_resort {
            deliver = !known.last_resort_waiting && !earlier.iter().any(|r| r.last_resort);
        }
        releases.push(Release {
            claim: deliver.then_some(claim.seq),
            last_resort: claim.last_resort,
        });
    }
    Ok(releases)
}
