//! History: what each group's members said and did, as our user reads it (and the events the
//! API streams are its rows). Each function writes in the caller's transaction, stamped `at`.

use openmls::prelude::GroupId;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{ProfileError, contacts};
use crate::engine::{Incoming, MemberInfo, display_member};
use mlschat_wire::content::{Content, ContentKind};
use mlschat_wire::settings::GroupSettings;

/// Appends an event (a join, a change, a notice: not a text, see `append_text`) to a group's
/// history.
pub(super) fn append_history(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    sender: &MemberInfo,
    body: &str,
    at: i64,
) -> Result<(), ProfileError> {
    contacts::notice_impostor(conn, id, sender, at)?;
    conn.prepare_cached(
        "INSERT INTO messages (group_id, epoch, sender, sender_fingerprint, kind, body, at)
         VALUES (?1, ?2, ?3, ?4, 'event', ?5, ?6)",
    )?
    .execute(params![
        id.as_slice(),
        epoch as i64,
        display_member(sender),
        sender.fingerprint.0,
        body.as_bytes(),
        at
    ])?;
    Ok(())
}

/// Appends a text to history; false (and nothing written) when the sender's post id is there
/// already.
pub(super) fn append_text(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    sender: &MemberInfo,
    content: &Content,
    at: i64,
) -> Result<bool, ProfileError> {
    contacts::notice_impostor(conn, id, sender, at)?;
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO messages
                 (group_id, epoch, sender, sender_fingerprint, kind, body, at, post_id)
             VALUES (?1, ?2, ?3, ?4, 'text', ?5, ?6, ?7)",
        )?
        .execute(params![
            id.as_slice(),
            epoch as i64,
            display_member(sender),
            sender.fingerprint.0,
            content.display().as_bytes(),
            at,
            content.id.as_slice()
        ])?;
    Ok(inserted == 1)
}

/// Records that `message` was seen; false if it had been already.
/// Remembers when members were added, for removing those who never join.
pub(super) fn note_invitees(
    conn: &rusqlite::Connection,
    id: &GroupId,
    added: &[MemberInfo],
    at: i64,
) -> Result<(), ProfileError> {
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO invitees (group_id, fingerprint, since) VALUES (?1, ?2, ?3)",
    )?;
    for member in added {
        insert.execute(params![id.as_slice(), member.fingerprint.0, at])?;
    }
    Ok(())
}

/// Remembers which commit ended `epoch` of a group, for judging a fork later.
pub(super) fn remember_commit(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    commit: &[u8],
) -> Result<(), ProfileError> {
    let hash: [u8; 32] = Sha256::digest(commit).into();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO applied_commits (group_id, epoch, commit_hash) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id.as_slice(), epoch as i64, hash])?;
    Ok(())
}

pub(super) fn mark_processed(
    conn: &rusqlite::Connection,
    message: &[u8],
    at: i64,
) -> Result<bool, ProfileError> {
    let hash: [u8; 32] = Sha256::digest(message).into();
    let inserted = conn
        .prepare_cached("INSERT OR IGNORE INTO processed (message_hash, at) VALUES (?1, ?2)")?
        .execute(params![hash, at])?;
    Ok(inserted == 1)
}

pub(super) fn record_incoming(
    conn: &rusqlite::Connection,
    id: &GroupId,
    epoch: u64,
    incoming: &Incoming,
    at: i64,
) -> Result<(), ProfileError> {
    match incoming {
        Incoming::Application { sender, plaintext } => match Content::decode(plaintext) {
            // An announcement is an event of the group, not something someone said.
            Ok(content) if content.kind == ContentKind::Continuation => {
                append_history(conn, id, epoch, sender, &content.display(), at)
            }
            // A second copy from the same sender (encrypted again) is dropped by its id.
            Ok(content) => append_text(conn, id, epoch, sender, &content, at).map(|_| ()),
            Err(e) => {
                let body = format!("sent a message this client cannot read ({e})");
                append_history(conn, id, epoch, sender, &body, at)
            }
        },
        Incoming::Proposal { sender, summary } => {
            append_history(conn, id, epoch, sender, &format!("proposed: {summary}"), at)
        }
        Incoming::Commit {
            sender,
            added,
            removed,
            settings,
            removed_us,
            ..
        } => {
            append_history(
                conn,
                id,
                epoch,
                sender,
                &describe_commit(added, removed, settings.as_ref()),
                at,
            )?;
            note_invitees(conn, id, added, at)?;
            if *removed_us {
                conn.execute(
                    "UPDATE groups SET state = 'removed' WHERE group_id = ?1",
                    [id.as_slice()],
                )?;
            }
            Ok(())
        }
    }
}

/// "added bob/phone; removed carol/tablet", or "updated their keys".
pub fn describe_commit(
    added: &[MemberInfo],
    removed: &[MemberInfo],
    settings: Option<&GroupSettings>,
) -> String {
    let list = |ms: &[MemberInfo]| ms.iter().map(display_member).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if let Some(s) = settings {
        let topic = match s.topic.as_str() {
            "" => "no topic".to_owned(),
            topic => format!("topic “{topic}”"),
        };
        let admins = match s.admins.len() {
            1 => "1 admin".to_owned(),
            n => format!("{n} admins"),
        };
        parts.push(format!(
            "set the group's name “{}”, {topic}, {admins}",
            s.name
        ));
    }
    if !added.is_empty() {
        parts.push(format!("added {}", list(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", list(removed)));
    }
    if parts.is_empty() {
        "updated their keys".into()
    } else {
        parts.join("; ")
    }
}
