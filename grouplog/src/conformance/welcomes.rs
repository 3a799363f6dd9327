//! The cases of Welcome escrow, mailboxes and retention.

use mlschat_wire::token::token_hash;

use super::{GROUP, NOW, QUOTA, claimed, claimed_as, commit, created, token};
use crate::{Committed, Cuts, GroupLog, Refused};

pub async fn mailbox_entries_go_only_after_acknowledgement_and_only_the_owners<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    let (alice, bob) = ([0xa1; 32], [0xb0; 32]);
    let first = commit(0, 1, vec![(alice, b"w1".to_vec()), (bob, b"wb".to_vec())]);
    claimed(db, &first).await;
    db.post_commit(&first, QUOTA, NOW).await.unwrap().unwrap();
    let second = commit(1, 2, vec![(alice, b"w2".to_vec())]);
    claimed(db, &second).await;
    db.post_commit(&second, QUOTA, NOW).await.unwrap().unwrap();
    let mailbox = db.fetch_mailbox(&alice, 0, 10.into()).await.unwrap();
    assert_eq!(
        mailbox
            .iter()
            .map(|e| e.welcome.as_slice())
            .collect::<Vec<_>>(),
        [b"w1", b"w2"]
    );
    // Reading does not delete; acknowledging the first does, and only Alice's.
    assert_eq!(
        db.fetch_mailbox(&alice, 0, 10.into()).await.unwrap().len(),
        2
    );
    assert_eq!(db.ack_mailbox(&alice, mailbox[0].id).await.unwrap(), 1);
    let rest = db.fetch_mailbox(&alice, 0, 10.into()).await.unwrap();
    assert_eq!(rest, mailbox[1..]);
    assert_eq!(db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap().len(), 1);
    // Acknowledging someone else's ids deletes nothing of theirs.
    assert_eq!(db.ack_mailbox(&alice, u64::MAX >> 2).await.unwrap(), 1);
    assert_eq!(db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap().len(), 1);
}

/// Issue 18, finding 3: a flooded mailbox made a real add fail with `quota_exceeded`. A full
/// recipient never refuses another member's commit: its Welcome is left out (the committer is
/// told) and the others' are delivered.
pub async fn a_full_mailbox_never_refuses_a_members_commit_and_retention_empties_old_mailboxes<
    L: GroupLog,
>(
    db: &L,
) {
    created(db).await;
    let (bob, carol) = ([0xb0; 32], [0xc0; 32]);
    let first = commit(0, 1, vec![(bob, b"w1".to_vec())]);
    claimed(db, &first).await;
    db.post_commit(&first, 1, NOW).await.unwrap().unwrap();
    // Bob's mailbox holds its quota of one: the commit goes through, Carol's Welcome is
    // delivered and Bob's is not.
    let second = commit(1, 2, vec![(bob, b"w2".to_vec()), (carol, b"w3".to_vec())]);
    claimed(db, &second).await;
    let committed = db.post_commit(&second, 1, NOW).await.unwrap().unwrap();
    assert_eq!((committed.seq, committed.epoch), (2, 2));
    assert!(matches!(committed.welcomes.as_slice(), [None, Some(_)]));
    assert_eq!(db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap().len(), 1);
    assert_eq!(
        db.fetch_mailbox(&carol, 0, 10.into()).await.unwrap().len(),
        1
    );
    assert_eq!(
        db.post_commit(&commit(2, 3, vec![]), 1, NOW).await.unwrap(),
        Ok(Committed {
            seq: 3,
            epoch: 3,
            welcomes: vec![]
        }),
    );
    // Retention: entries stored before the cut go, acknowledged or not; newer ones stay.
    let (long_ago, later) = (1_000_000, u64::MAX >> 2);
    let mailbox_cut = |mailbox_before| Cuts {
        log_before: long_ago,
        mailbox_before,
        tree_grace: long_ago,
    };
    let purged = db.purge(mailbox_cut(long_ago)).await.unwrap();
    assert_eq!(purged.mailbox_entries, 0);
    assert_eq!(db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap().len(), 1);
    let purged = db.purge(mailbox_cut(later)).await.unwrap();
    assert_eq!(purged.mailbox_entries, 2);
    assert!(
        db.fetch_mailbox(&bob, 0, 10.into())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Issue 10, finding 1: a stranger filled a user's mailbox with Welcomes from its own groups,
/// so that a real add of that user was refused. A Welcome now needs a claim of its recipient's
/// KeyPackage by the committer, one Welcome per claim; the flood is refused and the real add
/// goes through.
pub async fn welcomes_go_only_to_clients_whose_key_package_the_committer_claimed<L: GroupLog>(
    db: &L,
) {
    created(db).await;
    let victim = [0xb0; 32];
    // The stranger's own groups, each commit carrying a Welcome for the victim.
    for i in 0..50u8 {
        let group = format!("junk-{i}").into_bytes();
        db.create_group(&group, &token_hash(&token(0, 0)), NOW)
            .await
            .unwrap()
            .unwrap();
        let mut junk = commit(0, 0x66, vec![(victim, b"junk".to_vec())]);
        junk.group_id = group;
        assert_eq!(
            db.post_commit(&junk, QUOTA, NOW).await.unwrap(),
            Err(Refused::NotClaimed),
            "junk Welcome {i}"
        );
    }
    assert!(
        db.fetch_mailbox(&victim, 0, 100.into())
            .await
            .unwrap()
            .is_empty()
    );
    // One claim allows one Welcome, and a refused commit does not use it up.
    let add = commit(0, 1, vec![(victim, b"welcome".to_vec())]);
    claimed(db, &add).await;
    let mut refused = add.clone();
    refused.token_hash = token_hash(&token(0, 0x77));
    assert_eq!(
        db.post_commit(&refused, QUOTA, NOW).await.unwrap(),
        Err(Refused::BadToken)
    );
    db.post_commit(&add, QUOTA, NOW).await.unwrap().unwrap();
    let mut again = commit(1, 1, vec![(victim, b"again".to_vec())]);
    again.token_hash = token_hash(&token(1, 0));
    assert_eq!(
        db.post_commit(&again, QUOTA, NOW).await.unwrap(),
        Err(Refused::NotClaimed)
    );
    // Nor does naming the package already welcomed to use its claim again.
    again.welcomes[0].references = add.welcomes[0].references.clone();
    assert_eq!(
        db.post_commit(&again, QUOTA, NOW).await.unwrap(),
        Err(Refused::NotClaimed),
        "a claim a Welcome used was used again"
    );
    let mailbox = db.fetch_mailbox(&victim, 0, 100.into()).await.unwrap();
    assert_eq!(mailbox.len(), 1);
    assert_eq!(mailbox[0].welcome, b"welcome");
}

/// Issue 18, finding 3: one account claimed a victim's last-resort KeyPackage 505 times and
/// sent a junk Welcome on each claim. A Welcome must be encrypted to a package the committer
/// claimed from its recipient, and a last-resort claim lets its claimer have one Welcome
/// waiting in that mailbox at a time, however often it claims.
pub async fn a_last_resort_claim_lets_one_welcome_wait_and_a_welcome_must_name_the_claimed_package<
    L: GroupLog,
>(
    db: &L,
) {
    let victim = [0xb0; 32];
    for i in 0..5u8 {
        let group = format!("junk-{i}").into_bytes();
        db.create_group(&group, &token_hash(&token(0, 0)), NOW)
            .await
            .unwrap()
            .unwrap();
        let mut junk = commit(0, 0x66, vec![(victim, b"junk".to_vec())]);
        junk.group_id = group;
        claimed_as(db, &junk, true).await;
        let committed = db.post_commit(&junk, QUOTA, NOW).await.unwrap().unwrap();
        assert_eq!(
            committed.welcomes[0].is_some(),
            i == 0,
            "junk Welcome {i} from a last-resort claim"
        );
    }
    assert_eq!(
        db.fetch_mailbox(&victim, 0, 100.into())
            .await
            .unwrap()
            .len(),
        1
    );
    // Another committer's claim of the same package is its own.
    created(db).await;
    let add = commit(0, 1, vec![(victim, b"welcome".to_vec())]);
    claimed_as(db, &add, true).await;
    let mut elsewhere = add.clone();
    elsewhere.welcomes[0].references = vec![b"another package".to_vec()];
    assert_eq!(
        db.post_commit(&elsewhere, QUOTA, NOW).await.unwrap(),
        Err(Refused::NotClaimed),
        "a Welcome encrypted to a package nobody claimed"
    );
    let committed = db.post_commit(&add, QUOTA, NOW).await.unwrap().unwrap();
    assert!(committed.welcomes[0].is_some());
    // Once the victim has read its mailbox, a new claim may bring a new Welcome.
    let last = db
        .fetch_mailbox(&victim, 0, 100.into())
        .await
        .unwrap()
        .last()
        .unwrap()
        .id;
    db.ack_mailbox(&victim, last).await.unwrap();
    let mut again = commit(1, 1, vec![(victim, b"again".to_vec())]);
    again.token_hash = token_hash(&token(1, 0));
    claimed_as(db, &again, true).await;
    let committed = db.post_commit(&again, QUOTA, NOW).await.unwrap().unwrap();
    assert!(committed.welcomes[0].is_some());
}

/// Two Welcomes for one client in one commit (two of its devices, or a client added twice)
/// need two claims; the second claim is not taken from the first.
pub async fn two_welcomes_for_one_recipient_use_two_claims<L: GroupLog>(db: &L) {
    created(db).await;
    let bob = [0xb0; 32];
    // Both Welcomes may be for the package claimed; one claim still lets only one through.
    let mut twice = commit(0, 1, vec![(bob, b"w1".to_vec()), (bob, b"w2".to_vec())]);
    let mut first = twice.clone();
    first.welcomes.truncate(1);
    claimed(db, &first).await;
    assert_eq!(
        db.post_commit(&twice, QUOTA, NOW).await.unwrap(),
        Err(Refused::NotClaimed),
        "one claim let two Welcomes through"
    );
    let second_package = b"second package".to_vec();
    twice.welcomes[1].references.push(second_package.clone());
    let mut second = twice.clone();
    second.welcomes.remove(0);
    second.welcomes[0].references = vec![second_package];
    claimed(db, &second).await;
    let committed = db.post_commit(&twice, QUOTA, NOW).await.unwrap().unwrap();
    assert!(matches!(committed.welcomes.as_slice(), [Some(_), Some(_)]));
    assert_eq!(db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap().len(), 2);
}

/// Issue 10, finding 5: group logs, trees and claim logs were never deleted. Log and claim log
/// entries go after their retention; a tree goes once no Welcome waits for it (and its grace is
/// over); numbering goes on, so a member further behind sees the gap.
pub async fn retention_deletes_old_entries_and_the_trees_no_joiner_waits_for<L: GroupLog>(db: &L) {
    created(db).await;
    let bob = [0xb0; 32];
    let first = commit(0, 1, vec![(bob, b"w1".to_vec())]);
    claimed(db, &first).await;
    db.post_commit(&first, QUOTA, NOW).await.unwrap().unwrap();
    let t1 = token_hash(&token(1, 0));
    db.post_message(GROUP, 1, &t1, b"old news", NOW)
        .await
        .unwrap()
        .unwrap();
    let (long_ago, later) = (1_000_000, u64::MAX >> 2);
    let everything_old = Cuts {
        log_before: later,
        mailbox_before: long_ago,
        tree_grace: later,
    };
    let purged = db.purge(everything_old).await.unwrap();
    assert_eq!((purged.log_entries, purged.claims), (2, 1));
    assert_eq!(purged.trees, 0, "Bob's Welcome still waits for its tree");
    assert!(db.fetch_tree(GROUP, 1, &[1; 32]).await.unwrap().is_some());
    let posted = db
        .post_message(GROUP, 1, &t1, b"news", NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(posted.seq, 3, "numbering goes on after a purge");
    let log = db
        .fetch_group(GROUP, &t1, 0, 100.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    // Once Bob has his Welcome, its tree goes too.
    let welcome = db.fetch_mailbox(&bob, 0, 10.into()).await.unwrap();
    db.ack_mailbox(&bob, welcome[0].id).await.unwrap();
    assert_eq!(db.purge(everything_old).await.unwrap().trees, 1);
    assert!(db.fetch_tree(GROUP, 1, &[1; 32]).await.unwrap().is_none());
}
