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
