//! The in-memory store passes the store conformance suite, and the directory applies its rules.

use std::time::Duration;

use mlschat_keypackages::{
    ClaimError, ClaimLimits, Directory, KeyPackage, MemoryStore, RateLimit, conformance,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}

const NO_LIMIT: RateLimit = RateLimit {
    burst: 1000,
    refill: Duration::from_millis(1),
};
const UNLIMITED: ClaimLimits = ClaimLimits {
    claimer: NO_LIMIT,
    owner: NO_LIMIT,
    pair: NO_LIMIT,
};

fn packages(range: std::ops::Range<u8>) -> Vec<KeyPackage> {
    range
        .map(|i| KeyPackage {
            reference: vec![i],
            message: vec![i],
            not_after: u64::MAX,
        })
        .collect()
}

/// Issue 18, finding 4: 100 claims in one request took all 27 one-time packages a contact had
/// left. With the shipped limits one claimer gets a few of one owner's packages, and all
/// claimers together give out well under the stock a client keeps.
#[tokio::test]
async fn nobody_drains_a_contacts_one_time_stock_with_the_shipped_limits() {
    let directory = Directory::new(MemoryStore::new(), ClaimLimits::default());
    let alice = [1; 32];
    let stock = ClaimLimits::STOCK as u8;
    directory
        .publish(
            &alice,
            packages(0..stock),
            Some(packages(200..201).remove(0)),
        )
        .await
        .unwrap();
    let t = Duration::from_secs(1);
    // One claimer, as a batch of 100 claims would make them.
    let mallory = [9; 32];
    let mut granted = 0;
    for _ in 0..100 {
        match directory.claim(&alice, &mallory, 0, t).await {
            Ok(_) => granted += 1,
            Err(ClaimError::RateLimited(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        granted <= 5,
        "one claimer got {granted} of one owner's packages"
    );
    // Many claimers at once: past the owner's limit they get the last-resort package.
    for claimer in 10..110u8 {
        let _ = directory.claim(&alice, &[claimer; 32], 0, t).await;
    }
    let left = directory.stock(&alice, 0).await.unwrap().one_time;
    assert!(
        left >= ClaimLimits::STOCK / 2,
        "only {left} of {stock} one-time packages left"
    );
}

#[tokio::test]
async fn directory_rate_limits_each_claimer_and_reports_an_empty_stock() {
    let directory = Directory::new(
        MemoryStore::new(),
        ClaimLimits {
            claimer: RateLimit {
                burst: 2,
                refill: Duration::from_secs(60),
            },
            ..UNLIMITED
        },
    );
    let (alice, bob, carol) = ([1; 32], [2; 32], [3; 32]);
    let kps = (0..5u8)
        .map(|i| KeyPackage {
            reference: vec![i],
            message: vec![i],
            not_after: u64::MAX,
        })
        .collect();
    directory.publish(&alice, kps, None).await.unwrap();
    let t = Duration::from_secs(1);
    directory.claim(&alice, &bob, 0, t).await.unwrap();
    directory.claim(&alice, &bob, 0, t).await.unwrap();
    assert!(matches!(
        directory.claim(&alice, &bob, 0, t).await,
        Err(ClaimError::RateLimited(_))
    ));
    // The limit is per claimer, and a refused claim took nothing.
    assert_eq!(directory.stock(&alice, 0).await.unwrap().one_time, 3);
    directory.claim(&alice, &carol, 0, t).await.unwrap();
    directory
        .claim(&alice, &bob, 0, t + Duration::from_secs(60))
        .await
        .unwrap();
    directory.claim(&alice, &carol, 0, t).await.unwrap();
    assert!(matches!(
        directory
            .claim(&bob, &carol, 0, t + Duration::from_secs(600))
            .await,
        Err(ClaimError::NoKeyPackage)
    ));
}

/// Issue 10, finding 6: one client took a user's 30 one-time packages in under 100 ms. Claims
/// are limited per owner too: past the owner's limit, whoever claims gets the last-resort
/// package, and the one-time stock stays for later.
#[tokio::test]
async fn past_an_owners_limit_claims_get_the_last_resort_package() {
    let per_owner = RateLimit {
        burst: 3,
        refill: Duration::from_secs(3600),
    };
    let directory = Directory::new(
        MemoryStore::new(),
        ClaimLimits {
            owner: per_owner,
            ..UNLIMITED
        },
    );
    let alice = [1; 32];
    let kp = |i: u8| KeyPackage {
        reference: vec![i],
        message: vec![i],
        not_after: u64::MAX,
    };
    let one_time = (0..30).map(kp).collect();
    directory
        .publish(&alice, one_time, Some(kp(99)))
        .await
        .unwrap();
    let t = Duration::from_secs(1);
    let mut last_resort = 0;
    for claimer in 0..20u8 {
        let claimed = directory
            .claim(&alice, &[claimer + 10; 32], 0, t)
            .await
            .unwrap();
        last_resort += usize::from(claimed.last_resort);
    }
    assert_eq!(last_resort, 17);
    assert_eq!(directory.stock(&alice, 0).await.unwrap().one_time, 27);
    // The owner's log says which package each claim took.
    let log = directory.claim_log(&alice, 0, 100).await.unwrap();
    assert_eq!(log[0].reference, vec![0]);
    assert_eq!(log[19].reference, vec![99]);
}
