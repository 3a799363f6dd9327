//! The one order rule of a group's lane: what goes next, a change of the group or a text, from
//! the heads of the group's queues alone (no I/O, no profile).
//!
//! Changes and texts go in the order our user asked for them: a change is asked at a
//! [`TextsMark`] (the outbox row last queued when it was asked), so texts queued up to the mark
//! go before it and texts queued after it wait for it. Two exceptions:
//! - an add still claiming KeyPackages holds everything asked after it (its commit cannot be
//!   made yet, and what follows must not overtake it);
//! - proposals we hold (a member asked to leave) forbid any text before the commit that takes
//!   them, so the next change goes first, whatever was asked before it.

use crate::profile::TextsMark;

/// The heads of a group's queues, as far as order goes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Heads {
    /// Where the first waiting change was asked.
    pub change: Option<TextsMark>,
    /// Where the earliest add still claiming KeyPackages was asked.
    pub claiming: Option<TextsMark>,
    /// The first queued text: its outbox row.
    pub text: Option<i64>,
    /// Whether we hold proposals that only a commit can take.
    pub holds_proposals: bool,
}

/// What the lane sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// The first waiting change, made into a commit.
    Change,
    /// The first queued text.
    Text,
    /// Neither, until something changes (a claim ends, a commit is read).
    Nothing,
}

/// The one order rule (see the module's comment).
pub(super) fn next(heads: Heads) -> Next {
    let held_by_claims = |asked: TextsMark| heads.claiming.is_some_and(|claiming| claiming < asked);
    if let Some(change) = heads.change
        && !held_by_claims(change)
    {
        let text_asked_before = heads.text.is_some_and(|text| !change.is_before(text));
        if !text_asked_before || heads.holds_proposals {
            return Next::Change;
        }
    }
    if let Some(text) = heads.text
        && !heads.holds_proposals
    {
        let first_change = heads.claiming.into_iter().chain(heads.change).min();
        if !first_change.is_some_and(|change| change.is_before(text)) {
            return Next::Text;
        }
    }
    Next::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlschat_testkit::Rng;

    fn heads(change: Option<i64>, claiming: Option<i64>, text: Option<i64>) -> Heads {
        Heads {
            change: change.map(TextsMark),
            claiming: claiming.map(TextsMark),
            text,
            holds_proposals: false,
        }
    }

    #[test]
    fn changes_and_texts_go_in_the_order_asked() {
        // A text queued (row 3) before the change was asked (mark 5) goes first.
        assert_eq!(next(heads(Some(5), None, Some(3))), Next::Text);
        // One queued after it (row 7) waits for it.
        assert_eq!(next(heads(Some(5), None, Some(7))), Next::Change);
        assert_eq!(next(heads(Some(5), None, None)), Next::Change);
        assert_eq!(next(heads(None, None, Some(7))), Next::Text);
        assert_eq!(next(heads(None, None, None)), Next::Nothing);
    }

    #[test]
    fn an_add_claiming_key_packages_holds_what_was_asked_after_it() {
        assert_eq!(next(heads(Some(5), Some(4), None)), Next::Nothing);
        assert_eq!(next(heads(None, Some(4), Some(7))), Next::Nothing);
        // What was asked before it goes on.
        assert_eq!(next(heads(Some(3), Some(4), None)), Next::Change);
        assert_eq!(next(heads(None, Some(4), Some(2))), Next::Text);
    }

    #[test]
    fn held_proposals_put_the_next_change_before_any_text() {
        let held = Heads {
            holds_proposals: true,
            ..heads(Some(5), None, Some(3))
        };
        assert_eq!(next(held), Next::Change);
        let no_change = Heads {
            holds_proposals: true,
            ..heads(None, None, Some(3))
        };
        assert_eq!(next(no_change), Next::Nothing);
    }

    /// Over random heads: nothing goes before what was asked before it, except a change taking
    /// held proposals; something goes whenever the rule allows it.
    #[test]
    fn nothing_overtakes_what_was_asked_before_it() {
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let mut pick = || rng.chance(70).then(|| rng.below(10) as i64);
            let (change, claiming, text) = (pick(), pick(), pick());
            let holds_proposals = rng.chance(20);
            let h = Heads {
                holds_proposals,
                ..heads(change, claiming, text)
            };
            let asked_before = |mark: Option<i64>, at: i64| mark.is_some_and(|m| m < at);
            match next(h) {
                Next::Change => {
                    let change = change.unwrap();
                    assert!(!asked_before(claiming, change), "{h:?}");
                    assert!(holds_proposals || text.is_none_or(|t| t > change), "{h:?}");
                }
                Next::Text => {
                    let text = text.unwrap();
                    assert!(!holds_proposals, "{h:?}");
                    assert!(!asked_before(change, text), "{h:?}");
                    assert!(!asked_before(claiming, text), "{h:?}");
                }
                Next::Nothing => {
                    // Each head that could go is held by something asked before it.
                    let change_may = change.is_some_and(|c| {
                        !asked_before(claiming, c)
                            && (holds_proposals || text.is_none_or(|t| t > c))
                    });
                    let text_may = text.is_some_and(|t| {
                        !holds_proposals && !asked_before(change, t) && !asked_before(claiming, t)
                    });
                    assert!(!change_may && !text_may, "{h:?}");
                }
            }
        }
    }
}
