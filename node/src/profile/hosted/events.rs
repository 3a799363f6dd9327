//! The numbered, durable events a front end reads and resumes from.

use super::*;

impl Profile {
    /// The newest event's id (0 when there is none).
    pub fn latest_event(&self) -> Result<i64, ProfileError> {
        self.last_history_seq()
    }

    /// How many events each group got after `after`, in the order they came.
    pub fn new_by_group(&self, after: i64) -> Result<Vec<(String, u64)>, ProfileError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT coalesce(g.name, lower(hex(g.group_id))), count(*)
             FROM messages m JOIN groups g USING (group_id)
             WHERE m.seq > ?1 GROUP BY g.group_id ORDER BY min(m.seq)",
        )?;
        let rows = stmt.query_map([after], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events (history rows of every group) after `after`, oldest first: what front ends
    /// resume from.
    pub fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>, ProfileError> {
        let mut stmt = self.store.conn().prepare_cached(
            "SELECT m.seq, coalesce(g.name, lower(hex(g.group_id))), m.epoch, m.sender, m.kind,
                    m.body, m.at, m.sender_fingerprint
             FROM messages m JOIN groups g USING (group_id)
             WHERE m.seq > ?1 AND g.declined = 0 ORDER BY m.seq LIMIT ?2",
        )?;
        let states = self.sender_states()?;
        let rows = stmt.query_map(params![after, limit], |r| {
            let sender: String = r.get(3)?;
            let fingerprint: Vec<u8> = r.get(7)?;
            Ok(Event {
                id: r.get(0)?,
                group: r.get(1)?,
                epoch: r.get::<_, i64>(2)? as u64,
                sender_state: states.of(&sender, &fingerprint),
                sender_fingerprint: hex::encode(&fingerprint),
                sender,
                kind: r.get(4)?,
                body: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(5)?).into_owned(),
                at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
