//! What our user should know about the account, beyond any one group: our KeyPackages drained
//! (`key_packages.rs`), someone using a contact's name with another key. Kept in `alerts`,
//! listed by `status`, each kind at most once in [`ALERT_WINDOW`].

use rusqlite::params;
use serde::Serialize;

use super::{Profile, ProfileError};

/// Something our user should know about the account.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alert {
    pub at: u64,
    pub text: String,
}

/// How long an alert of one kind keeps another of that kind from being raised.
pub const ALERT_WINDOW: u64 = 3600;

/// Records an alert of `kind` unless one of that kind was raised in the last [`ALERT_WINDOW`];
/// returns it if it was raised.
pub(super) fn raise_alert(
    conn: &rusqlite::Connection,
    kind: &str,
    text: &str,
    now: u64,
) -> Result<Option<Alert>, ProfileError> {
    let recent: i64 = conn.query_row(
        "SELECT count(*) FROM alerts WHERE kind = ?1 AND at >= ?2",
        params![kind, now.saturating_sub(ALERT_WINDOW) as i64],
        |r| r.get(0),
    )?;
    if recent > 0 {
        return Ok(None);
    }
    tracing::warn!(alert = %text, "account alert");
    conn.execute(
        "INSERT INTO alerts (at, kind, text) VALUES (?1, ?2, ?3)",
        params![now as i64, kind, text],
    )?;
    Ok(Some(Alert {
        at: now,
        text: text.to_owned(),
    }))
}

impl Profile {
    /// The latest alerts, oldest first.
    pub fn alerts(&self) -> Result<Vec<Alert>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT at, text FROM (SELECT id, at, text FROM alerts ORDER BY id DESC LIMIT 20)
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Alert {
                at: r.get::<_, i64>(0)? as u64,
                text: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
