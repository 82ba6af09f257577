//! The store's durable asynchronous events: claiming under a lease, retries, finishing,
//! leases released at start-up, and event invoke configurations.

use std::collections::BTreeMap;

use nimbus_core::{FunctionConfig, FunctionVersion, VersionId};
use nimbus_store::{
    EventInvokeConfig, FunctionRecord, NewAsyncEvent, SqliteStore, Store, StoreError,
};

fn event(id: &str, received_ms: i64) -> NewAsyncEvent {
    NewAsyncEvent {
        request_id: id.into(),
        function: "f".into(),
        qualifier: None,
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        received_ms,
        not_before_ms: None,
        held: false,
        leased_until_ms: None,
    }
}

#[tokio::test]
async fn events_are_claimed_once_under_a_lease_and_retried_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    store
        .enqueue_async_events(vec![event("a", 100), event("b", 200), event("c", 300)])
        .await
        .unwrap();
    assert_eq!(store.count_async_events().await.unwrap(), 3);
    // Only what is due by `now` is claimed, oldest first, up to the limit.
    let first = store.claim_async_events(250, 10_000, 10).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(first[0].payload, br#"{"id":"a"}"#);
    // Leased events are not claimed again before the lease ends...
    let again = store.claim_async_events(400, 10_000, 10).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
    assert!(store
        .claim_async_events(9_999, 20_000, 10)
        .await
        .unwrap()
        .is_empty());
    // ...but are after it (their holder died).
    let expired = store.claim_async_events(10_001, 30_000, 1).await.unwrap();
    assert_eq!(expired.len(), 1);
    // A retry records the attempt and makes the event due later, unleased.
    store
        .retry_async_event(first[1].id, 1, 50_000)
        .await
        .unwrap();
    assert!(store
        .claim_async_events(40_000, 60_000, 10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.request_id != "b"));
    let b = store.claim_async_events(50_000, 60_000, 10).await.unwrap();
    let b = b
        .iter()
        .find(|e| e.request_id == "b")
        .expect("b is due again");
    assert_eq!(b.attempts, 1);
    store.finish_async_events(vec![b.id]).await.unwrap();
    assert_eq!(store.count_async_events().await.unwrap(), 2);
}

#[tokio::test]
async fn a_starting_server_releases_every_lease_and_events_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .enqueue_async_events(vec![event("a", 1), event("b", 2)])
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_async_events(10, 1_000_000, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.next_async_due_ms().await.unwrap(), Some(1_000_000));
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.release_async_leases().await.unwrap(), 2);
    let claimed = store.claim_async_events(10, 1_000_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 2, "both run again after a restart");
}

#[tokio::test]
async fn event_invoke_configs_belong_to_existing_functions() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    let cfg = EventInvokeConfig {
        function: "f".into(),
        qualifier: "$LATEST".into(),
        max_retry_attempts: Some(1),
        max_event_age_s: None,
        on_success: None,
        on_failure: Some("arn:aws:lambda:us-east-1:000000000000:function:sink".into()),
        last_modified_ms: 5,
    };
    assert!(matches!(
        store.put_event_invoke_config(cfg.clone()).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_function(
            FunctionRecord {
                name: "f".into(),
                created_ms: 1,
                tags: BTreeMap::new(),
                reserved_concurrency: None,
            },
            FunctionVersion {
                function: "f".into(),
                version: VersionId::Latest,
                config: FunctionConfig {
                    runtime_name: "python3".into(),
                    handler: "app.handler".into(),
                    memory_mb: 128,
                    timeout_s: 3,
                    ephemeral_mb: 512,
                    environment: BTreeMap::new(),
                    description: String::new(),
                    role: String::new(),
                },
                code_sha256: "x".into(),
                code_size: 1,
                last_modified_ms: 1,
                revision_id: "r".into(),
            },
        )
        .await
        .unwrap();
    store.put_event_invoke_config(cfg.clone()).await.unwrap();
    assert_eq!(
        store.get_event_invoke_config("f", "$LATEST").await.unwrap(),
        cfg
    );
    assert_eq!(store.list_event_invoke_configs("f").await.unwrap(), [cfg]);
    // Deleting the function deletes its configurations.
    store.delete_function("f").await.unwrap();
    assert!(matches!(
        store.get_event_invoke_config("f", "$LATEST").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_schedule_period_fires_once() {
    use nimbus_store::ScheduleRecord;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    let s = ScheduleRecord {
        name: "every-minute".into(),
        expression: "rate(1 minute)".into(),
        timezone: "UTC".into(),
        function: "f".into(),
        input: None,
        enabled: true,
        created_ms: 0,
        next_fire_ms: Some(60_000),
        last_fire_ms: None,
    };
    store.create_schedule(s.clone()).await.unwrap();
    assert!(matches!(
        store.create_schedule(s.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .fire_schedule("every-minute", 60_000, Some(120_000), event("p1", 61_000))
        .await
        .unwrap());
    // The same period again (a second scheduler, a restart that read the old row): refused,
    // and no second event stored.
    assert!(!store
        .fire_schedule(
            "every-minute",
            60_000,
            Some(120_000),
            event("p1-again", 61_500)
        )
        .await
        .unwrap());
    assert_eq!(store.count_async_events().await.unwrap(), 1);
    let got = store.get_schedule("every-minute").await.unwrap();
    assert_eq!(
        (got.last_fire_ms, got.next_fire_ms),
        (Some(60_000), Some(120_000))
    );
    // A disabled schedule does not fire.
    store
        .set_schedule_enabled("every-minute", false, None)
        .await
        .unwrap();
    assert!(!store
        .fire_schedule("every-minute", 120_000, Some(180_000), event("p2", 121_000))
        .await
        .unwrap());
    store.delete_schedule("every-minute").await.unwrap();
    assert!(matches!(
        store.delete_schedule("every-minute").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn held_events_wait_until_released_or_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    let held = NewAsyncEvent {
        not_before_ms: Some(90_000),
        held: true,
        leased_until_ms: None,
        ..event("held", 100)
    };
    store
        .enqueue_async_events(vec![held, event("free", 100)])
        .await
        .unwrap();
    // Only the free one is due; the held one waits for its time...
    let due = store.claim_async_events(1000, 2000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request_id, "free");
    assert_eq!(store.next_async_due_ms().await.unwrap(), Some(2000));
    // ...an event claimed while its function was paused is held too...
    store
        .hold_async_events(vec![(due[0].id, 80_000)])
        .await
        .unwrap();
    assert!(store
        .claim_async_events(5000, 6000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_async_due_ms().await.unwrap(), Some(80_000));
    // ...and releasing the function makes both due at once, other functions' events untouched.
    assert_eq!(
        store
            .release_held_async_events("other", 5000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.release_held_async_events("f", 5000).await.unwrap(), 2);
    assert_eq!(
        store
            .claim_async_events(5000, 6000, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn events_stored_leased_are_not_claimed_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    let running = NewAsyncEvent {
        leased_until_ms: Some(50_000),
        ..event("running", 100)
    };
    let ids = store
        .enqueue_async_events(vec![running, event("waiting", 100)])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    // The one its accepter runs at once is leased: only the other is claimable.
    let claimed = store.claim_async_events(1000, 2000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[1]);
    // A server that died with it running: the next one releases the lease at start.
    assert_eq!(store.release_async_leases().await.unwrap(), 2);
    let again = store.claim_async_events(1000, 2000, 10).await.unwrap();
    assert_eq!(again.len(), 2);
}
