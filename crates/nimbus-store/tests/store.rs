//! The SQLite store's behaviour: transactions, publishing rules, aliases, paging, persistence.

use std::collections::BTreeMap;

use nimbus_core::{Alias, AliasRouting, FunctionConfig, FunctionVersion, VersionId};
use nimbus_store::{
    FunctionRecord, MetricMinute, ProvisionedConfig, SqliteStore, Store, StoreError,
};

fn version(name: &str, sha: &str) -> FunctionVersion {
    FunctionVersion {
        function: name.into(),
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
        code_sha256: sha.into(),
        code_size: 10,
        last_modified_ms: 1,
        revision_id: "r1".into(),
    }
}

fn record(name: &str) -> FunctionRecord {
    FunctionRecord {
        name: name.into(),
        created_ms: 1,
        tags: BTreeMap::new(),
        reserved_concurrency: None,
    }
}

async fn with_function(store: &SqliteStore, name: &str) {
    store
        .create_function(record(name), version(name, "aa"))
        .await
        .unwrap();
}

#[tokio::test]
async fn create_twice_conflicts() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    let err = s
        .create_function(record("f"), version("f", "bb"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        s.get_version("f", VersionId::Latest)
            .await
            .unwrap()
            .code_sha256,
        "aa"
    );
}

#[tokio::test]
async fn publishing_numbers_versions_and_skips_unchanged_latest() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    let v1 = s
        .publish_version("f", Some("first".into()), None, None)
        .await
        .unwrap();
    assert_eq!(v1.version, VersionId::Published(1));
    assert_eq!(v1.config.description, "first");
    let again = s.publish_version("f", None, None, None).await.unwrap();
    assert_eq!(
        again.version,
        VersionId::Published(1),
        "unchanged $LATEST republishes nothing"
    );
    let mut latest = s.get_version("f", VersionId::Latest).await.unwrap();
    latest.code_sha256 = "bb".into();
    latest.revision_id = "r2".into();
    s.update_latest(latest, Some("r1")).await.unwrap();
    let v2 = s
        .publish_version("f", None, Some("bb"), None)
        .await
        .unwrap();
    assert_eq!(v2.version, VersionId::Published(2));
    assert!(matches!(
        s.publish_version("f", None, Some("cc"), None).await,
        Err(StoreError::Invalid(_))
    ));
    // Version numbers are never reused, even after deletion.
    s.delete_version("f", 2).await.unwrap();
    let mut latest = s.get_version("f", VersionId::Latest).await.unwrap();
    latest.code_sha256 = "dd".into();
    s.update_latest(latest, None).await.unwrap();
    assert_eq!(
        s.publish_version("f", None, None, None)
            .await
            .unwrap()
            .version,
        VersionId::Published(3)
    );
}

#[tokio::test]
async fn stale_revision_is_refused() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    let latest = s.get_version("f", VersionId::Latest).await.unwrap();
    let err = s.update_latest(latest, Some("stale")).await.unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed(_)));
}

#[tokio::test]
async fn aliases_guard_their_versions() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    s.publish_version("f", None, None, None).await.unwrap();
    let mut latest = s.get_version("f", VersionId::Latest).await.unwrap();
    latest.code_sha256 = "bb".into();
    s.update_latest(latest, None).await.unwrap();
    s.publish_version("f", None, None, None).await.unwrap();
    let alias = Alias {
        function: "f".into(),
        name: "live".into(),
        function_version: VersionId::Published(1),
        description: String::new(),
        routing: Some(AliasRouting {
            additional_version: 2,
            weight: 0.5,
        }),
        revision_id: "a1".into(),
    };
    s.create_alias(alias.clone()).await.unwrap();
    assert!(matches!(
        s.create_alias(alias.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(s.delete_version("f", 2).await, Err(StoreError::Conflict(_))),
        "routing target is in use"
    );
    assert!(
        matches!(s.delete_version("f", 1).await, Err(StoreError::Conflict(_))),
        "primary target is in use"
    );
    let bad = Alias {
        name: "bad".into(),
        function_version: VersionId::Published(9),
        routing: None,
        ..alias.clone()
    };
    assert!(matches!(
        s.create_alias(bad).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.list_aliases("f", Some(VersionId::Published(2)), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    s.delete_alias("f", "live").await.unwrap();
    s.delete_version("f", 2).await.unwrap();
}

#[tokio::test]
async fn listing_pages_through_everything_once() {
    let s = SqliteStore::in_memory().unwrap();
    for i in 0..7 {
        with_function(&s, &format!("f{i}")).await;
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = s.list_functions(marker.as_deref(), 3).await.unwrap();
        seen.extend(page.items.iter().map(|v| v.function.clone()));
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("f{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn deleting_a_function_removes_versions_and_aliases() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    s.publish_version("f", None, None, None).await.unwrap();
    s.delete_function("f").await.unwrap();
    assert!(matches!(
        s.get_version("f", VersionId::Published(1)).await,
        Err(StoreError::NotFound(_))
    ));
    with_function(&s, "f").await;
    assert_eq!(s.list_versions("f", None, 10).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn metric_minutes_outlive_their_function() {
    let s = SqliteStore::in_memory().unwrap();
    with_function(&s, "f").await;
    let m = MetricMinute {
        function: "f".into(),
        version: "$LATEST".into(),
        minute_ms: 60_000,
        invocations: 1,
        ..Default::default()
    };
    s.put_metric_minutes(vec![m.clone()]).await.unwrap();
    s.delete_function("f").await.unwrap();
    assert_eq!(
        s.metric_minutes("f", None, 0, i64::MAX).await.unwrap(),
        vec![m],
        "retention, not deletion, removes minutes"
    );
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        with_function(&s, "f").await;
        s.publish_version("f", None, None, None).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.get_version("f", VersionId::Published(1))
            .await
            .unwrap()
            .code_sha256,
        "aa"
    );
}

#[tokio::test]
async fn provisioned_configs_round_trip_and_go_with_their_function() {
    let store = SqliteStore::in_memory().unwrap();
    let cfg = |q: &str, n: u32| ProvisionedConfig {
        function: "f".into(),
        qualifier: q.into(),
        requested: n,
        last_modified_ms: 1,
    };
    assert!(matches!(
        store.put_provisioned(cfg("live", 2)).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_function(record("f"), version("f", "abc"))
        .await
        .unwrap();
    store.put_provisioned(cfg("live", 2)).await.unwrap();
    store.put_provisioned(cfg("live", 3)).await.unwrap();
    store.put_provisioned(cfg("1", 1)).await.unwrap();
    let all = store.list_provisioned(Some("f")).await.unwrap();
    assert_eq!(all, vec![cfg("1", 1), cfg("live", 3)]);
    assert!(store.list_provisioned(Some("g")).await.unwrap().is_empty());
    store.delete_provisioned("f", "1").await.unwrap();
    assert!(matches!(
        store.delete_provisioned("f", "1").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_function("f").await.unwrap();
    assert!(store.list_provisioned(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn cached_lookups_follow_every_metadata_write() {
    let s = SqliteStore::in_memory().unwrap();
    s.create_function(record("c"), version("c", "one"))
        .await
        .unwrap();
    // Read twice (the second from the cache), then change it: the next read sees the change.
    for _ in 0..2 {
        let v = s.get_version("c", VersionId::Latest).await.unwrap();
        assert_eq!(v.code_sha256, "one");
        assert_eq!(
            s.get_function("c").await.unwrap().reserved_concurrency,
            None
        );
    }
    let mut latest = version("c", "two");
    latest.revision_id = "r2".into();
    s.update_latest(latest, None).await.unwrap();
    assert_eq!(
        s.get_version("c", VersionId::Latest)
            .await
            .unwrap()
            .code_sha256,
        "two"
    );
    s.set_reserved_concurrency("c", Some(4)).await.unwrap();
    assert_eq!(
        s.get_function("c").await.unwrap().reserved_concurrency,
        Some(4)
    );
    // A write that replaces $LATEST caches the rows as they now are, the earlier write included.
    let mut latest = version("c", "three");
    latest.revision_id = "r3".into();
    s.update_latest(latest, None).await.unwrap();
    let (f, v) = (
        s.get_function("c").await.unwrap(),
        s.get_version("c", VersionId::Latest).await.unwrap(),
    );
    assert_eq!(
        (f.reserved_concurrency, v.code_sha256.as_str()),
        (Some(4), "three")
    );
    s.delete_function("c").await.unwrap();
    assert!(matches!(
        s.get_function("c").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.get_version("c", VersionId::Latest).await,
        Err(StoreError::NotFound(_))
    ));
}
