//! What our user should know about the account, beyond any one group: our KeyPackages drained
//! (`key_packages.rs`), someone using a contact's name with another key. Kept in `alerts`,
//! listed by `status`, each kind at most once in [`ALERT_WINDOW`].

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Profile, ProfileError};

/// Something our user must know (a key change, a request), until acknowledged (`status
/// --ack`, API `alerts.ack`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Increasing: `alerts.ack` acknowledges up to one.
    #[schemars(range(min = 1))]
    pub id: i64,
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
    // Shown by `status` and the chat; a warning would land in whatever terminal ran the verb.
    tracing::info!(alert = %text, "account alert");
    conn.execute(
        "INSERT INTO alerts (at, kind, text) VALUES (?1, ?2, ?3)",
        params![now as i64, kind, text],
    )?;
    Ok(Some(Alert {
        id: conn.last_insert_rowid(),
        at: now,
        text: text.to_owned(),
    }))
}

impl Profile {
    /// The alerts our user has not acknowledged yet (the latest 20), oldest first.
    pub fn alerts(&self) -> Result<Vec<Alert>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT id, at, text FROM (SELECT id, at, text FROM alerts WHERE acknowledged = 0
                                       ORDER BY id DESC LIMIT 20)
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Alert {
                id: r.get(0)?,
                at: r.get::<_, i64>(1)? as u64,
                text: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Our user has seen the alerts up to `up_to` (all of them with `None`); returns how many.
    pub fn acknowledge_alerts(&mut self, up_to: Option<i64>) -> Result<usize, ProfileError> {
        Ok(self.store.conn().execute(
            "UPDATE alerts SET acknowledged = 1 WHERE acknowledged = 0 AND id <= ?1",
            params![up_to.unwrap_or(i64::MAX)],
        )?)
    }
}
