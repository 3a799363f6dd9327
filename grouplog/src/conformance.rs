//! The test suite every [`GroupLog`] must pass. A backend's own tests call [`run_all`] with a
//! way to make a fresh, empty log; run it on a multi-threaded Tokio runtime so that the racing
//! commits really race.

use std::future::Future;
use std::sync::Arc;

use mlschat_keypackages::KeyPackage;
use mlschat_wire::token::token_hash;

use crate::{Committed, EntryKind, GroupLog, NewCommit, NewMessage, NewWelcome, Posted, Refused};

mod welcomes;

pub use welcomes::*;

const GROUP: &[u8] = b"group-1";
const QUOTA: u64 = 100;
const NOW: u64 = 1_800_000_000;

/// Runs every case, each on a fresh log from `fresh`.
pub async fn run_all<L, F, Fut>(fresh: F)
where
    L: GroupLog + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = L>,
{
    racing_commits_for_one_epoch_accept_one_and_release_only_its_welcomes(Arc::new(fresh().await))
        .await;
    a_stale_commit_is_refused_with_the_current_epoch_and_writes_nothing(&fresh().await).await;
    a_member_removed_at_an_epoch_cannot_post_after_it(&fresh().await).await;
    the_log_orders_commits_and_messages_and_reads_after_a_sequence_number(&fresh().await).await;
    mailbox_entries_go_only_after_acknowledgement_and_only_the_owners(&fresh().await).await;
    a_batch_of_posts_is_one_transaction_but_each_post_is_judged_alone(&fresh().await).await;
    a_full_mailbox_never_refuses_a_members_commit_and_retention_empties_old_mailboxes(
        &fresh().await,
    )
    .await;
    a_repeated_post_is_answered_with_its_first_position_and_stored_once(&fresh().await).await;
    welcomes_go_only_to_clients_whose_key_package_the_committer_claimed(&fresh().await).await;
    a_last_resort_claim_lets_one_welcome_wait_and_a_welcome_must_name_the_claimed_package(
        &fresh().await,
    )
    .await;
    two_welcomes_for_one_recipient_use_two_claims(&fresh().await).await;
    reads_are_paged_by_bytes_and_a_big_entry_still_comes_alone(&fresh().await).await;
    a_wrong_token_learns_nothing_of_the_current_epoch(&fresh().await).await;
    a_notice_goes_in_with_a_token_of_any_epoch_and_moves_nothing(&fresh().await).await;
    retention_deletes_old_entries_and_the_trees_no_joiner_waits_for(&fresh().await).await;
}

fn token(epoch: u64, variant: u8) -> [u8; 32] {
    let mut t = [variant; 32];
    t[..8].copy_from_slice(&epoch.to_be_bytes());
    t
}

/// The KeyPackage of `recipient` that `poster` claims to add it at `epoch`: each test claim
/// is of a package of its own.
fn reference(recipient: &[u8; 32], poster: u8, epoch: u64) -> Vec<u8> {
    [recipient.as_slice(), &[poster], &epoch.to_be_bytes()].concat()
}

fn commit(epoch: u64, by: u8, welcomes: Vec<([u8; 32], Vec<u8>)>) -> NewCommit {
    NewCommit {
        poster: [by; 32],
        group_id: GROUP.to_vec(),
        epoch,
        token_hash: token_hash(&token(epoch, 0)),
        next_token_hash: token_hash(&token(epoch + 1, 0)),
        commit: vec![by; 10],
        sealed_tree: if welcomes.is_empty() {
            vec![]
        } else {
            vec![by; 100]
        },
        tree_access_hash: [by; 32],
        welcomes: welcomes
            .into_iter()
            .map(|(recipient, welcome)| NewWelcome {
                recipient,
                welcome,
                tree_key: vec![by; 3],
                references: vec![reference(&recipient, by, epoch)],
            })
            .collect(),
    }
}

/// The poster of `c` claimed a KeyPackage of each of its Welcomes' recipients, as a committer
/// adding them does: the one each Welcome names.
async fn claimed<L: GroupLog>(db: &L, c: &NewCommit) {
    claimed_as(db, c, false).await;
}

/// As [`claimed`], the claims taking the recipients' last-resort packages when `last_resort`.
async fn claimed_as<L: GroupLog>(db: &L, c: &NewCommit, last_resort: bool) {
    for welcome in &c.welcomes {
        let package = KeyPackage {
            reference: welcome.references[0].clone(),
            message: [b"kp:".as_slice(), &welcome.references[0]].concat(),
            not_after: NOW + 3600,
        };
        let owner = &welcome.recipient;
        if last_resort {
            db.publish(owner, vec![], Some(package)).await.unwrap();
        } else {
            db.publish(owner, vec![package], None).await.unwrap();
        }
        let claim = db.claim(owner, &c.poster, NOW, !last_resort).await;
        let claim = claim.unwrap().expect("a package to claim");
        assert_eq!(claim.key_package.reference, welcome.references[0]);
    }
}

async fn created<L: GroupLog>(db: &L) {
    db.create_group(GROUP, &token_hash(&token(0, 0)), NOW)
        .await
        .unwrap()
        .unwrap();
}

/// A notice (an admin's word that the group forked) goes in for a holder of any epoch's token,
/// at the group's current epoch, and moves the group to no other epoch.
pub async fn a_notice_goes_in_with_a_token_of_any_epoch_and_moves_nothing<L: GroupLog>(db: &L) {
    created(db).await;
    db.post_commit(&commit(0, 1, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    let old = token_hash(&token(0, 0));
    assert_eq!(
        db.post_notice(GROUP, &old, b"notice", NOW).await.unwrap(),
        Ok(Posted {
            seq: 2,
            epoch: 1,
            repeat: false
        })
    );
    let stranger = token_hash(&token(0, 0x42));
    assert_eq!(
        db.post_notice(GROUP, &stranger, b"junk", NOW)
            .await
            .unwrap(),
        Err(Refused::BadToken)
    );
    assert_eq!(
        db.post_notice(b"nope", &old, b"junk", NOW).await.unwrap(),
        Err(Refused::UnknownGroup)
    );
    let t1 = token_hash(&token(1, 0));
    let after = db.post_message(GROUP, 1, &t1, b"on", NOW).await.unwrap();
    assert_eq!(after.map(|p| (p.seq, p.epoch)), Ok((3, 1)));
    let log = db
        .fetch_group(GROUP, &t1, 0, 10.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log[1].kind, EntryKind::Notice);
    assert_eq!(log[1].message, b"notice");
}

pub async fn racing_commits_for_one_epoch_accept_one_and_release_only_its_welcomes<L>(db: Arc<L>)
where
    L: GroupLog + 'static,
{
    created(&*db).await;
    let racers: Vec<_> = (0..32u8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let c = commit(0, i, vec![([i; 32], vec![i; 5])]);
                claimed(&*db, &c).await;
                (i, db.post_commit(&c, QUOTA, NOW).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            (
                i,
                Ok(Committed {
                    seq: 1,
                    epoch: 1,
                    welcomes,
                }),
            ) if welcomes.len() == 1 => winners.push(i),
            (_, Err(Refused::StaleEpoch { current: 1 })) => {}
            (i, other) => panic!("racer {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one commit per epoch");
    let winner = winners[0];
    for i in 0..32u8 {
        let mailbox = db.fetch_mailbox(&[i; 32], 0, 10.into()).await.unwrap();
        if i == winner {
            assert_eq!(mailbox.len(), 1);
            assert_eq!(mailbox[0].welcome, vec![i; 5]);
            assert_eq!(mailbox[0].tree_key, vec![i; 3]);
            assert_eq!(mailbox[0].epoch, 1);
        } else {
            assert!(
                mailbox.is_empty(),
                "a losing commit's Welcome was delivered"
            );
        }
    }
    assert_eq!(
        db.fetch_tree(GROUP, 1, &[winner; 32]).await.unwrap(),
        Some(vec![winner; 100])
    );
    // Without the access value the tree is not there.
    let stranger = [winner.wrapping_add(1); 32];
    assert_eq!(db.fetch_tree(GROUP, 1, &stranger).await.unwrap(), None);
    let log = db
        .fetch_group(GROUP, &token_hash(&token(0, 0)), 0, 100.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message, vec![winner; 10]);
}

pub async fn a_stale_commit_is_refused_with_the_current_epoch_and_writes_nothing<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    db.post_commit(&commit(0, 1, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    db.post_commit(&commit(1, 2, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    let late = commit(0, 3, vec![([9; 32], vec![9])]);
    claimed(db, &late).await;
    assert_eq!(
        db.post_commit(&late, QUOTA, NOW).await.unwrap(),
        Err(Refused::StaleEpoch { current: 2 })
    );
    assert!(
        db.fetch_mailbox(&[9; 32], 0, 10.into())
            .await
            .unwrap()
            .is_empty()
    );
    let log = db
        .fetch_group(GROUP, &token_hash(&token(2, 0)), 0, 100.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.len(), 2);
}

pub async fn a_member_removed_at_an_epoch_cannot_post_after_it<L: GroupLog>(db: &L) {
    created(db).await;
    // The commit into epoch 1 registers token 1; the removed member only knows token 0.
    db.post_commit(&commit(0, 1, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    let old = token_hash(&token(0, 0));
    let new = token_hash(&token(1, 0));
    assert_eq!(
        db.post_message(GROUP, 1, &old, b"from the removed", NOW)
            .await
            .unwrap(),
        Err(Refused::BadToken)
    );
    assert_eq!(
        db.post_message(GROUP, 0, &old, b"at the old epoch", NOW)
            .await
            .unwrap(),
        Err(Refused::StaleEpoch { current: 1 })
    );
    let mut forged = commit(1, 7, vec![]);
    forged.token_hash = old;
    assert_eq!(
        db.post_commit(&forged, QUOTA, NOW).await.unwrap(),
        Err(Refused::BadToken)
    );
    assert_eq!(
        db.post_message(GROUP, 1, &new, b"from a member", NOW)
            .await
            .unwrap(),
        Ok(Posted {
            seq: 2,
            epoch: 1,
            repeat: false
        })
    );
    // Nothing the removed member tried is in the log.
    let log = db
        .fetch_group(GROUP, &new, 0, 100.into())
        .await
        .unwrap()
        .unwrap();
    let messages: Vec<&[u8]> = log.iter().map(|e| e.message.as_slice()).collect();
    assert_eq!(messages, [&[1u8; 10][..], b"from a member"]);
}

pub async fn the_log_orders_commits_and_messages_and_reads_after_a_sequence_number<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    let t0 = token_hash(&token(0, 0));
    let t1 = token_hash(&token(1, 0));
    for i in 0..3u8 {
        db.post_message(GROUP, 0, &t0, &[i], NOW)
            .await
            .unwrap()
            .unwrap();
    }
    db.post_commit(&commit(0, 9, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    let last = db
        .post_message(GROUP, 1, &t1, b"after", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last,
        Posted {
            seq: 5,
            epoch: 1,
            repeat: false
        }
    );
    let all = db
        .fetch_group(GROUP, &t1, 0, 100.into())
        .await
        .unwrap()
        .unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(all[3].kind, EntryKind::Commit);
    assert_eq!((all[3].epoch, all[4].epoch), (0, 1));
    let page = db
        .fetch_group(GROUP, &t0, 2, 2.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    let stranger = token_hash(&token(0, 0xee));
    assert_eq!(
        db.fetch_group(GROUP, &stranger, 0, 100.into())
            .await
            .unwrap(),
        Err(Refused::BadToken)
    );
    assert_eq!(
        db.fetch_group(b"nope", &t0, 0, 100.into()).await.unwrap(),
        Err(Refused::UnknownGroup)
    );
    assert_eq!(
        db.post_message(b"nope", 0, &t0, b"x", NOW).await.unwrap(),
        Err(Refused::UnknownGroup)
    );
    assert_eq!(
        db.create_group(GROUP, &t0, NOW).await.unwrap(),
        Err(Refused::GroupExists)
    );
}

pub async fn a_batch_of_posts_is_one_transaction_but_each_post_is_judged_alone<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    let good = token_hash(&token(0, 0));
    let post = |token_hash, body: &[u8]| NewMessage {
        group_id: GROUP.to_vec(),
        epoch: 0,
        token_hash,
        message: body.to_vec(),
        post_key: None,
    };
    let stranger = token_hash(&token(0, 0x55));
    // A second group, interleaved, that a commit has moved to epoch 1.
    let other = |epoch, body: &[u8]| NewMessage {
        group_id: b"group-2".to_vec(),
        epoch,
        token_hash: token_hash(&token(epoch, 0)),
        message: body.to_vec(),
        post_key: None,
    };
    db.create_group(b"group-2", &token_hash(&token(0, 0)), NOW)
        .await
        .unwrap()
        .unwrap();
    let mut moved = commit(0, 1, vec![]);
    moved.group_id = b"group-2".to_vec();
    db.post_commit(&moved, QUOTA, NOW).await.unwrap().unwrap();
    let unknown = NewMessage {
        group_id: b"nowhere".to_vec(),
        ..post(good, b"u")
    };
    let results = db
        .post_messages(
            &[
                post(good, b"a"),
                other(1, b"p"),
                post(stranger, b"x"),
                other(0, b"stale"),
                unknown,
                post(good, b"b"),
                other(1, b"q"),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        results,
        [
            Ok(Posted {
                seq: 1,
                epoch: 0,
                repeat: false
            }),
            Ok(Posted {
                seq: 2,
                epoch: 1,
                repeat: false
            }),
            Err(Refused::BadToken),
            Err(Refused::StaleEpoch { current: 1 }),
            Err(Refused::UnknownGroup),
            Ok(Posted {
                seq: 2,
                epoch: 0,
                repeat: false
            }),
            Ok(Posted {
                seq: 3,
                epoch: 1,
                repeat: false
            }),
        ]
    );
    let log = db
        .fetch_group(GROUP, &good, 0, 10.into())
        .await
        .unwrap()
        .unwrap();
    let bodies: Vec<&[u8]> = log.iter().map(|e| e.message.as_slice()).collect();
    assert_eq!(bodies, [b"a".as_slice(), b"b"]);
    let log = db
        .fetch_group(b"group-2", &good, 1, 10.into())
        .await
        .unwrap()
        .unwrap();
    let bodies: Vec<&[u8]> = log.iter().map(|e| e.message.as_slice()).collect();
    assert_eq!(bodies, [b"p".as_slice(), b"q"]);
}

/// Finding 2 of issue 9: a post whose answer was lost is posted again (maybe encrypted again at
/// a later epoch); the node answers with the first position and stores nothing new.
pub async fn a_repeated_post_is_answered_with_its_first_position_and_stored_once<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    let (t0, t1) = (token_hash(&token(0, 0)), token_hash(&token(1, 0)));
    let key = crate::post_key(&[1; 32], &[2; 16]);
    let post = |epoch, token_hash, body: &[u8], post_key| NewMessage {
        group_id: GROUP.to_vec(),
        epoch,
        token_hash,
        message: body.to_vec(),
        post_key,
    };
    let first = db
        .post_messages(&[post(0, t0, b"first", Some(key))], NOW)
        .await
        .unwrap();
    assert_eq!(
        first,
        [Ok(Posted {
            seq: 1,
            epoch: 0,
            repeat: false
        })]
    );
    db.post_commit(&commit(0, 1, vec![]), QUOTA, NOW)
        .await
        .unwrap()
        .unwrap();
    // The same post again, at the new epoch, and twice in one batch beside a fresh one; the
    // same post id from another poster is another post.
    let other_poster = crate::post_key(&[3; 32], &[2; 16]);
    let again = db
        .post_messages(
            &[
                post(1, t1, b"again", Some(key)),
                post(1, t1, b"other", Some(other_poster)),
                post(1, t1, b"other again", Some(other_poster)),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        [
            Ok(Posted {
                seq: 1,
                epoch: 0,
                repeat: true
            }),
            Ok(Posted {
                seq: 3,
                epoch: 1,
                repeat: false
            }),
            Ok(Posted {
                seq: 3,
                epoch: 1,
                repeat: true
            }),
        ]
    );
    let log = db
        .fetch_group(GROUP, &t1, 0, 10.into())
        .await
        .unwrap()
        .unwrap();
    let bodies: Vec<&[u8]> = log.iter().map(|e| e.message.as_slice()).collect();
    assert_eq!(bodies, [b"first".as_slice(), &[1u8; 10], b"other"]);
}

/// Issue 10, finding 2, on both backends: a read returns at most a page's bytes past its first
/// entry, which always comes however big.
pub async fn reads_are_paged_by_bytes_and_a_big_entry_still_comes_alone<L: GroupLog>(db: &L) {
    created(db).await;
    let t0 = token_hash(&token(0, 0));
    for size in [300usize, 50, 50, 1000, 10] {
        db.post_message(GROUP, 0, &t0, &vec![1; size], NOW)
            .await
            .unwrap()
            .unwrap();
    }
    let page = crate::Page {
        entries: 100,
        bytes: 400,
    };
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let read = db
            .fetch_group(GROUP, &t0, after, page)
            .await
            .unwrap()
            .unwrap();
        let Some(last) = read.last() else { break };
        after = last.seq;
        pages.push(read.iter().map(|e| e.message.len()).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec![300, 50, 50], vec![1000], vec![10]]);
}

/// Issue 10, finding 4 (in part): a wrong token at an old epoch was answered `stale_epoch` with
/// the group's current epoch, so anyone knowing a group id learned its epoch. The token is now
/// judged first; only a holder of that epoch's token hears the current one.
pub async fn a_wrong_token_learns_nothing_of_the_current_epoch<L: GroupLog>(db: &L) {
    created(db).await;
    for epoch in 0..3u8 {
        db.post_commit(&commit(u64::from(epoch), epoch, vec![]), QUOTA, NOW)
            .await
            .unwrap()
            .unwrap();
    }
    let stranger = token_hash(&token(0, 0x99));
    assert_eq!(
        db.post_message(GROUP, 0, &stranger, b"x", NOW)
            .await
            .unwrap(),
        Err(Refused::BadToken)
    );
    let mut forged = commit(1, 9, vec![]);
    forged.token_hash = stranger;
    assert_eq!(
        db.post_commit(&forged, QUOTA, NOW).await.unwrap(),
        Err(Refused::BadToken)
    );
    // A former member, with the token of the epoch it posts at, is told where the group is.
    let old = token_hash(&token(1, 0));
    assert_eq!(
        db.post_message(GROUP, 1, &old, b"late", NOW).await.unwrap(),
        Err(Refused::StaleEpoch { current: 3 })
    );
}
