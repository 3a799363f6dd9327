//! The test suite every [`Store`] must pass. A store's own tests call [`run_all`] with a way to
//! make a fresh, empty store; run it on a multi-threaded Tokio runtime so that the concurrency
//! case really races.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use crate::{ClientId, KeyPackage, Stock, Store};

const NOW: u64 = 1_800_000_000;
const ALICE: ClientId = [0xa1; 32];
const BOB: ClientId = [0xb0; 32];
const CAROL: ClientId = [0xc0; 32];

fn kp(owner: &ClientId, n: u32, not_after: u64) -> KeyPackage {
    let mut reference = owner.to_vec();
    reference.extend_from_slice(&n.to_be_bytes());
    KeyPackage {
        message: [b"kp:".as_slice(), &reference].concat(),
        reference,
        not_after,
    }
}

fn batch(owner: &ClientId, range: std::ops::Range<u32>) -> Vec<KeyPackage> {
    range.map(|n| kp(owner, n, NOW + 3600)).collect()
}

/// Runs every case, each on a fresh store from `fresh`.
pub async fn run_all<S, F, Fut>(fresh: F)
where
    S: Store + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    one_time_packages_go_out_once_then_the_last_resort(&fresh().await).await;
    nothing_is_handed_out_when_nothing_is_left(&fresh().await).await;
    expired_packages_are_never_handed_out(&fresh().await).await;
    a_republished_package_is_not_claimable_twice(&fresh().await).await;
    publishing_replaces_the_last_resort_package(&fresh().await).await;
    the_claim_log_records_claimers_in_order(&fresh().await).await;
    a_claim_sparing_the_one_time_stock_takes_the_last_resort(&fresh().await).await;
    owners_are_kept_apart(&fresh().await).await;
    purging_removes_only_expired_packages(&fresh().await).await;
    concurrent_claimers_never_get_the_same_package(Arc::new(fresh().await)).await;
}

pub async fn one_time_packages_go_out_once_then_the_last_resort<S: Store>(store: &S) {
    let last_resort = kp(&ALICE, 999, NOW + 3600);
    store
        .publish(&ALICE, batch(&ALICE, 0..3), Some(last_resort.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.stock(&ALICE, NOW).await.unwrap(),
        Stock {
            one_time: 3,
            last_resort: true
        }
    );
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let c = store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
        assert!(
            !c.last_resort,
            "last resort handed out before the one-time ones ran out"
        );
        assert!(
            seen.insert(c.key_package.reference),
            "a one-time package went out twice"
        );
    }
    for _ in 0..2 {
        let c = store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
        assert!(c.last_resort);
        assert_eq!(c.key_package, last_resort);
    }
    assert_eq!(
        store.stock(&ALICE, NOW).await.unwrap(),
        Stock {
            one_time: 0,
            last_resort: true
        }
    );
}

pub async fn nothing_is_handed_out_when_nothing_is_left<S: Store>(store: &S) {
    assert_eq!(store.claim(&ALICE, &BOB, NOW, true).await.unwrap(), None);
    store
        .publish(&ALICE, batch(&ALICE, 0..1), None)
        .await
        .unwrap();
    assert!(
        store
            .claim(&ALICE, &BOB, NOW, true)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.claim(&ALICE, &BOB, NOW, true).await.unwrap(), None);
    assert_eq!(store.stock(&ALICE, NOW).await.unwrap(), Stock::default());
}

pub async fn expired_packages_are_never_handed_out<S: Store>(store: &S) {
    let expired = kp(&ALICE, 1, NOW - 1);
    let fresh = kp(&ALICE, 2, NOW + 10);
    store
        .publish(
            &ALICE,
            vec![expired, fresh.clone()],
            Some(kp(&ALICE, 3, NOW - 1)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.stock(&ALICE, NOW).await.unwrap(),
        Stock {
            one_time: 1,
            last_resort: false
        }
    );
    let c = store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
    assert_eq!(c.key_package, fresh);
    // The last resort is expired too: nothing.
    assert_eq!(store.claim(&ALICE, &BOB, NOW, true).await.unwrap(), None);
    // A package valid now is not valid after its lifetime.
    store
        .publish(&ALICE, vec![kp(&ALICE, 4, NOW + 10)], None)
        .await
        .unwrap();
    assert_eq!(
        store.claim(&ALICE, &BOB, NOW + 11, true).await.unwrap(),
        None
    );
}

pub async fn a_republished_package_is_not_claimable_twice<S: Store>(store: &S) {
    store
        .publish(&ALICE, batch(&ALICE, 0..2), None)
        .await
        .unwrap();
    store
        .publish(&ALICE, batch(&ALICE, 0..2), None)
        .await
        .unwrap();
    assert_eq!(store.stock(&ALICE, NOW).await.unwrap().one_time, 2);
    store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
    // Publishing a claimed package again does not bring it back.
    store
        .publish(&ALICE, batch(&ALICE, 0..2), None)
        .await
        .unwrap();
    assert_eq!(store.stock(&ALICE, NOW).await.unwrap().one_time, 1);
}

pub async fn publishing_replaces_the_last_resort_package<S: Store>(store: &S) {
    store
        .publish(&ALICE, vec![], Some(kp(&ALICE, 1, NOW + 10)))
        .await
        .unwrap();
    let newer = kp(&ALICE, 2, NOW + 20);
    store
        .publish(&ALICE, vec![], Some(newer.clone()))
        .await
        .unwrap();
    let c = store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
    assert_eq!(c.key_package, newer);
    // Publishing without one keeps it.
    store
        .publish(&ALICE, batch(&ALICE, 5..6), None)
        .await
        .unwrap();
    assert!(store.stock(&ALICE, NOW).await.unwrap().last_resort);
}

pub async fn a_claim_sparing_the_one_time_stock_takes_the_last_resort<S: Store>(store: &S) {
    let last_resort = kp(&ALICE, 9, NOW + 10);
    store
        .publish(&ALICE, batch(&ALICE, 0..2), Some(last_resort.clone()))
        .await
        .unwrap();
    let c = store
        .claim(&ALICE, &BOB, NOW, false)
        .await
        .unwrap()
        .unwrap();
    assert!(c.last_resort);
    assert_eq!(c.key_package, last_resort);
    assert_eq!(store.stock(&ALICE, NOW).await.unwrap().one_time, 2);
    let c = store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
    assert!(!c.last_resort);
    let log = store.claim_log(&ALICE, 0, 10).await.unwrap();
    let references: Vec<&[u8]> = log.iter().map(|r| r.reference.as_slice()).collect();
    assert_eq!(
        references,
        [last_resort.reference.as_slice(), &c.key_package.reference]
    );
}

pub async fn the_claim_log_records_claimers_in_order<S: Store>(store: &S) {
    store
        .publish(&ALICE, batch(&ALICE, 0..2), Some(kp(&ALICE, 9, NOW + 10)))
        .await
        .unwrap();
    store.claim(&ALICE, &BOB, NOW, true).await.unwrap().unwrap();
    store
        .claim(&ALICE, &CAROL, NOW + 1, true)
        .await
        .unwrap()
        .unwrap();
    store
        .claim(&ALICE, &BOB, NOW + 2, true)
        .await
        .unwrap()
        .unwrap();
    // A failed claim (nobody's packages) is not logged anywhere.
    assert_eq!(store.claim(&CAROL, &BOB, NOW, true).await.unwrap(), None);
    let log = store.claim_log(&ALICE, 0, 100).await.unwrap();
    let summary: Vec<(ClientId, u64, bool)> = log
        .iter()
        .map(|r| (r.claimer, r.at, r.last_resort))
        .collect();
    assert_eq!(
        summary,
        [
            (BOB, NOW, false),
            (CAROL, NOW + 1, false),
            (BOB, NOW + 2, true)
        ]
    );
    assert!(
        log.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq must increase"
    );
    // Paging: after the first entry, one entry: the second.
    let page = store.claim_log(&ALICE, log[0].seq, 1).await.unwrap();
    assert_eq!(page, log[1..2]);
    assert!(store.claim_log(&CAROL, 0, 100).await.unwrap().is_empty());
}

pub async fn owners_are_kept_apart<S: Store>(store: &S) {
    store
        .publish(&ALICE, batch(&ALICE, 0..2), None)
        .await
        .unwrap();
    store.publish(&BOB, batch(&BOB, 0..1), None).await.unwrap();
    let c = store.claim(&BOB, &CAROL, NOW, true).await.unwrap().unwrap();
    assert_eq!(c.key_package, kp(&BOB, 0, NOW + 3600));
    assert_eq!(store.claim(&BOB, &CAROL, NOW, true).await.unwrap(), None);
    assert_eq!(store.stock(&ALICE, NOW).await.unwrap().one_time, 2);
}

pub async fn purging_removes_only_expired_packages<S: Store>(store: &S) {
    store
        .publish(
            &ALICE,
            vec![kp(&ALICE, 1, NOW - 5), kp(&ALICE, 2, NOW + 5)],
            Some(kp(&ALICE, 3, NOW - 5)),
        )
        .await
        .unwrap();
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 2);
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 0);
    assert_eq!(
        store.stock(&ALICE, NOW).await.unwrap(),
        Stock {
            one_time: 1,
            last_resort: false
        }
    );
}

/// 64 claimers race for 50 one-time packages and a last-resort one: the 50 go to 50 different
/// claimers, the other 14 get the last resort.
pub async fn concurrent_claimers_never_get_the_same_package<S: Store + 'static>(store: Arc<S>) {
    let last_resort = kp(&ALICE, 999, NOW + 3600);
    store
        .publish(&ALICE, batch(&ALICE, 0..50), Some(last_resort.clone()))
        .await
        .unwrap();
    let claims: Vec<_> = (0..64u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.claim(&ALICE, &[i; 32], NOW, true).await })
        })
        .collect();
    let mut one_time = HashSet::new();
    let mut last_resorts = 0;
    for claim in claims {
        let c = claim
            .await
            .unwrap()
            .unwrap()
            .expect("every claimer gets a package");
        if c.last_resort {
            assert_eq!(c.key_package, last_resort);
            last_resorts += 1;
        } else {
            assert!(
                one_time.insert(c.key_package.reference),
                "a one-time package went to two claimers"
            );
        }
    }
    assert_eq!((one_time.len(), last_resorts), (50, 14));
    assert_eq!(store.claim_log(&ALICE, 0, 1000).await.unwrap().len(), 64);
}
