//! The in-memory store passes the store conformance suite, and the directory applies its rules.

use std::time::Duration;

use mlschat_keypackages::{ClaimError, Directory, KeyPackage, MemoryStore, RateLimit, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemoryStore::new() }).await;
}

#[tokio::test]
async fn directory_rate_limits_each_claimer_and_reports_an_empty_stock() {
    let directory = Directory::new(
        MemoryStore::new(),
        RateLimit {
            burst: 2,
            refill: Duration::from_secs(60),
        },
        RateLimit::default(),
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
    let unlimited = RateLimit {
        burst: 1000,
        refill: Duration::from_millis(1),
    };
    let per_owner = RateLimit {
        burst: 3,
        refill: Duration::from_secs(3600),
    };
    let directory = Directory::new(MemoryStore::new(), unlimited, per_owner);
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
