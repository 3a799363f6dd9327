//! Which of two commits for one epoch of a node-less group wins, when no node ordered them
//! (PROTOCOL.md §11.1): every member decides alike from what both commits show in the clear to
//! a member (the epoch, the committer's leaf, the message), so replicas that met different
//! commits first converge on one.
//!
//! The commit whose committer comes first in the cyclic leaf order that starts at
//! `epoch mod leaves` wins; one committer's two commits for one epoch (only a modified client
//! makes them) are ordered by the lower SHA-256 of their messages. The rank depends on the
//! epoch and the committer's place only, so grinding a commit's bytes buys a member nothing
//! against another member, and each leaf comes first once in every `leaves` epochs: while the
//! tree keeps its width, a change that lost a race goes in within `leaves` epochs of being made
//! again, however often another member commits.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

/// A commit for one epoch, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contender<'a> {
    /// The committer's leaf index in the tree of that epoch.
    pub committer: u32,
    /// The commit's `MLSMessage` bytes.
    pub message: &'a [u8],
}

/// Where `committer` stands at `epoch` in a tree `leaves` wide: 0 comes first.
pub fn rank(epoch: u64, leaves: u32, committer: u32) -> u64 {
    let leaves = u64::from(leaves.max(1));
    (u64::from(committer) + leaves - epoch % leaves) % leaves
}

/// How `a` compares with `b` for `epoch` of a tree `leaves` wide: `Less` means `a` wins.
pub fn compare(epoch: u64, leaves: u32, a: Contender<'_>, b: Contender<'_>) -> Ordering {
    rank(epoch, leaves, a.committer)
        .cmp(&rank(epoch, leaves, b.committer))
        .then_with(|| Sha256::digest(a.message).cmp(&Sha256::digest(b.message)))
}

/// The winner of two commits for `epoch`.
pub fn winner<'a>(epoch: u64, leaves: u32, a: Contender<'a>, b: Contender<'a>) -> Contender<'a> {
    match compare(epoch, leaves, a, b) {
        Ordering::Greater => b,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlschat_testkit::Rng;

    fn contender(committer: u32, message: &[u8]) -> Contender<'_> {
        Contender { committer, message }
    }

    #[test]
    fn the_leaf_at_the_epochs_turn_wins_and_the_turn_moves_on() {
        let (a, b) = (contender(2, b"a"), contender(5, b"b"));
        // 8 leaves: at epoch 2 leaf 2 is first; at epoch 3 leaf 2 is last and leaf 5 third.
        assert_eq!(winner(2, 8, a, b), a);
        assert_eq!(winner(3, 8, a, b), b);
        assert_eq!(winner(3, 8, b, a), b);
        // Past the end of the tree the turn wraps: at epoch 13 (13 mod 8 = 5) leaf 5 is first.
        assert_eq!(winner(13, 8, a, b), b);
    }

    #[test]
    fn one_committers_two_commits_are_ordered_by_hash() {
        let (x, y) = (contender(4, b"x"), contender(4, b"y"));
        let lower = if Sha256::digest(b"x") < Sha256::digest(b"y") {
            x
        } else {
            y
        };
        assert_eq!(winner(9, 8, x, y), lower);
        assert_eq!(winner(9, 8, y, x), lower);
    }

    /// Over random races: every member picks the same winner whichever commit it met first,
    /// and of three commits the winner beats both others (a total order, so replicas that
    /// meet them in any order end on one).
    #[test]
    fn every_member_picks_the_same_winner_in_any_order() {
        let mut rng = Rng(21);
        let messages: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 3]).collect();
        for _ in 0..20_000 {
            let leaves = 1 + rng.below(40) as u32;
            let epoch = rng.next_u64() >> 1;
            let mut pick =
                || contender(rng.below(leaves as usize) as u32, &messages[rng.below(64)]);
            let (a, b, c) = (pick(), pick(), pick());
            assert_eq!(winner(epoch, leaves, a, b), winner(epoch, leaves, b, a));
            let first = winner(epoch, leaves, winner(epoch, leaves, a, b), c);
            assert_eq!(first, winner(epoch, leaves, a, winner(epoch, leaves, b, c)));
            for other in [a, b, c] {
                assert_ne!(compare(epoch, leaves, other, first), Ordering::Less);
            }
        }
    }

    /// Grinding: whatever bytes a member's commit carries, against another member's commit
    /// the outcome is the same.
    #[test]
    fn grinding_a_commit_changes_nothing_against_another_member() {
        let mut rng = Rng(22);
        for _ in 0..5_000 {
            let leaves = 2 + rng.below(40) as u32;
            let epoch = rng.next_u64() >> 1;
            let honest = rng.below(leaves as usize) as u32;
            let grinder = (honest + 1 + rng.below(leaves as usize - 1) as u32) % leaves;
            let outcomes: std::collections::BTreeSet<bool> = (0..50u32)
                .map(|attempt| {
                    let ground = attempt.to_be_bytes();
                    let w = winner(
                        epoch,
                        leaves,
                        contender(grinder, &ground),
                        contender(honest, b"honest"),
                    );
                    w.committer == grinder
                })
                .collect();
            assert_eq!(outcomes.len(), 1, "epoch {epoch}, {leaves} leaves");
        }
    }

    /// No starvation: against any rival, every member wins a race within `leaves`
    /// consecutive epochs of a tree that keeps its width.
    #[test]
    fn every_member_wins_within_a_round_of_epochs() {
        let mut rng = Rng(23);
        for _ in 0..5_000 {
            let leaves = 2 + rng.below(60) as u32;
            let start = rng.next_u64() >> 1;
            let member = rng.below(leaves as usize) as u32;
            let rival = (member + 1 + rng.below(leaves as usize - 1) as u32) % leaves;
            let won = (0..u64::from(leaves)).find(|k| {
                let epoch = start + k;
                let w = winner(
                    epoch,
                    leaves,
                    contender(rival, b"rival"),
                    contender(member, b"member"),
                );
                w.committer == member && rank(epoch, leaves, member) == 0
            });
            assert!(
                won.is_some(),
                "leaf {member} of {leaves} from epoch {start}"
            );
        }
    }
}
