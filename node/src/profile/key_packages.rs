//! Our KeyPackages after they leave us: the node's claim log says who took which. From it we
//! tell our user when our stock is drained abnormally (someone adding us to many groups at once,
//! or draining us: the prekey-depletion attack), and we delete the private keys of packages
//! that were claimed but never used by a Welcome in time, or that expired: a key that can no
//! longer be used should not wait on disk to be stolen.

use super::alerts::{Alert, raise_alert};
use super::{Profile, ProfileError};
use crate::store::StoreError;
use mlschat_wire::ClientId;
use openmls::prelude::KeyPackageRef;
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _, VLBytes};
use openmls_traits::storage::StorageProvider as _;
use rusqlite::params;

/// One claim of one of our packages, as the node's claim log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub seq: u64,
    pub claimer: ClientId,
    pub at: u64,
    pub last_resort: bool,
    pub reference: Vec<u8>,
}

/// The window in which claims are counted.
pub const DRAIN_WINDOW: u64 = 3600;
/// More one-time packages than this claimed within [`DRAIN_WINDOW`] is a drain, not people
/// adding us (the node limits each owner's one-time claims; beyond, it hands out our
/// last-resort package).
pub const DRAIN_ALERT: u64 = 20;
/// More claims than this by one claimer within [`DRAIN_WINDOW`] is suspicious too.
pub const CLAIMER_ALERT: u64 = 10;
/// How long a claimed package waits for the Welcome that uses it: as long as the node keeps an
/// unacknowledged Welcome (its default mailbox retention).
pub const WELCOME_WINDOW: u64 = 30 * 86_400;
/// A package's lifetime (OpenMLS's default): after it nobody may use it.
pub const LIFETIME: u64 = 84 * 86_400;

impl Profile {
    /// The last claim log entry we read.
    pub fn claim_log_seq(&self) -> Result<u64, ProfileError> {
        let seq: Option<i64> = self
            .store
            .query_opt("SELECT claim_log_seq FROM home WHERE id = 1", [])?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Reads claims of our packages (new ones past [`Self::claim_log_seq`]): records which
    /// package each took, and raises an alert if the claims in the last [`DRAIN_WINDOW`] look
    /// like a drain. Returns the alerts raised.
    pub fn record_claims(&mut self, claims: &[Claim]) -> Result<Vec<Alert>, ProfileError> {
        let after = self.claim_log_seq()?;
        let fresh: Vec<&Claim> = claims.iter().filter(|c| c.seq > after).collect();
        let Some(last) = fresh.last() else {
            return Ok(Vec::new());
        };
        let now = self.now() as u64;
        self.store.transaction(|| {
            let conn = self.store.conn();
            for claim in &fresh {
                conn.execute(
                    "INSERT OR IGNORE INTO claims (seq, claimer, at, last_resort)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        claim.seq as i64,
                        claim.claimer.as_slice(),
                        claim.at as i64,
                        claim.last_resort
                    ],
                )?;
                conn.execute(
                    "UPDATE key_packages SET claimed_at = ?2
                     WHERE key_package_ref = ?1 AND last_resort = 0 AND claimed_at IS NULL",
                    params![claim.reference, claim.at as i64],
                )?;
            }
            conn.execute(
                "UPDATE home SET claim_log_seq = ?1 WHERE id = 1",
                [last.seq as i64],
            )?;
            let since = now.saturating_sub(DRAIN_WINDOW) as i64;
            conn.execute("DELETE FROM claims WHERE at < ?1", [since])?;
            let one_time: i64 = conn.query_row(
                "SELECT count(*) FROM claims WHERE at >= ?1 AND last_resort = 0",
                [since],
                |r| r.get(0),
            )?;
            let busiest: i64 = conn.query_row(
                "SELECT coalesce(max(n), 0) FROM
                     (SELECT count(*) AS n FROM claims WHERE at >= ?1 GROUP BY claimer)",
                [since],
                |r| r.get(0),
            )?;
            let mut alerts = Vec::new();
            if one_time as u64 > DRAIN_ALERT {
                let text = format!(
                    "{one_time} of your one-time KeyPackages were claimed in the last hour: \
                     someone may be draining them (new ones were published)"
                );
                alerts.push(("drain", text));
            }
            if busiest as u64 > CLAIMER_ALERT {
                let text =
                    format!("one client claimed {busiest} of your KeyPackages in the last hour");
                alerts.push(("claimer", text));
            }
            let mut raised = Vec::new();
            for (kind, text) in alerts {
                raised.extend(raise_alert(conn, kind, &text, now)?);
            }
            Ok(raised)
        })
    }

    /// Deletes the private keys of one-time packages nobody can use any more: claimed more
    /// than [`WELCOME_WINDOW`] before `now` with no Welcome using them, or past their
    /// [`LIFETIME`]. Returns how many.
    pub fn forget_unusable_key_packages(&mut self, now: u64) -> Result<usize, ProfileError> {
        let claimed_before = now.saturating_sub(WELCOME_WINDOW) as i64;
        let created_before = now.saturating_sub(LIFETIME) as i64;
        let references: Vec<Vec<u8>> = {
            let mut stmt = self.store.conn().prepare(
                "SELECT key_package_ref FROM key_packages
                 WHERE last_resort = 0 AND consumed_at IS NULL AND forgotten_at IS NULL
                   AND (claimed_at < ?1 OR created_at < ?2)",
            )?;
            stmt.query_map(params![claimed_before, created_before], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        if references.is_empty() {
            return Ok(0);
        }
        self.store.transaction(|| {
            let storage = self.store.mls_storage();
            for reference in &references {
                let reference = key_package_ref(reference)?;
                storage
                    .delete_key_package(&reference)
                    .map_err(StoreError::from)?;
                self.store.conn().execute(
                    "UPDATE key_packages SET forgotten_at = ?2 WHERE key_package_ref = ?1",
                    params![reference.as_slice(), now as i64],
                )?;
            }
            Ok(references.len())
        })
    }
}

/// A reference as we keep it (its bytes) as OpenMLS takes it.
fn key_package_ref(bytes: &[u8]) -> Result<KeyPackageRef, ProfileError> {
    let corrupt = || ProfileError::Corrupt("a KeyPackage reference".into());
    let encoded = VLBytes::from(bytes)
        .tls_serialize_detached()
        .map_err(|_| corrupt())?;
    KeyPackageRef::tls_deserialize_exact_bytes(&encoded).map_err(|_| corrupt())
}
