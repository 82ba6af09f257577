//! The store's API gateway documents: revision-checked replacement, immutable deployments that
//! go with their API, domain names, and persistence across a reopen.

use nimbus_store::{GatewayDeploymentDoc, SqliteStore, Store, StoreError};

fn deployment(id: &str, created_ms: i64) -> GatewayDeploymentDoc {
    GatewayDeploymentDoc {
        deployment_id: id.into(),
        created_ms,
        doc: format!("{{\"id\":\"{id}\"}}"),
    }
}

#[tokio::test]
async fn api_documents_are_replaced_only_at_the_revision_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    assert_eq!(
        store
            .put_gateway_api("a1", "{}".into(), None)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.put_gateway_api("a1", "{}".into(), None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .put_gateway_api("a1", "{\"v\":2}".into(), Some(1))
            .await
            .unwrap(),
        2
    );
    // A writer that read revision 1 lost the race: refused, the newer document kept.
    assert!(matches!(
        store
            .put_gateway_api("a1", "{\"v\":\"stale\"}".into(), Some(1))
            .await,
        Err(StoreError::PreconditionFailed(_))
    ));
    let got = store.get_gateway_api("a1").await.unwrap();
    assert_eq!((got.revision, got.doc.as_str()), (2, "{\"v\":2}"));
    assert!(matches!(
        store.put_gateway_api("nope", "{}".into(), Some(1)).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .put_gateway_api("a0", "{}".into(), None)
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list_gateway_apis()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.api_id)
        .collect();
    assert_eq!(ids, ["a0", "a1"]);
}

#[tokio::test]
async fn deployments_are_immutable_and_go_with_their_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    assert!(matches!(
        store
            .put_gateway_deployment("a1", deployment("d1", 1))
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .put_gateway_api("a1", "{}".into(), None)
        .await
        .unwrap();
    store
        .put_gateway_deployment("a1", deployment("d2", 5))
        .await
        .unwrap();
    store
        .put_gateway_deployment("a1", deployment("d1", 9))
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_gateway_deployment("a1", deployment("d1", 10))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let listed: Vec<String> = store
        .list_gateway_deployments("a1")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.deployment_id)
        .collect();
    assert_eq!(listed, ["d2", "d1"], "oldest first");
    assert_eq!(
        store.get_gateway_deployment("a1", "d1").await.unwrap(),
        deployment("d1", 9)
    );
    store.delete_gateway_deployment("a1", "d2").await.unwrap();
    assert!(matches!(
        store.get_gateway_deployment("a1", "d2").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_gateway_api("a1").await.unwrap();
    assert!(matches!(
        store.get_gateway_deployment("a1", "d1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_gateway_api("a1").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn gateway_documents_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
        store
            .put_gateway_api("a1", "{\"n\":1}".into(), None)
            .await
            .unwrap();
        store
            .put_gateway_deployment("a1", deployment("d1", 1))
            .await
            .unwrap();
        store
            .put_gateway_domain("api.example.test", "{}".into())
            .await
            .unwrap();
        store
            .put_gateway_domain("api.example.test", "{\"x\":1}".into())
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    assert_eq!(store.get_gateway_api("a1").await.unwrap().doc, "{\"n\":1}");
    assert_eq!(store.list_gateway_deployments("a1").await.unwrap().len(), 1);
    assert_eq!(
        store.list_gateway_domains().await.unwrap(),
        [("api.example.test".to_string(), "{\"x\":1}".to_string())]
    );
    store
        .delete_gateway_domain("api.example.test")
        .await
        .unwrap();
    assert!(matches!(
        store.delete_gateway_domain("api.example.test").await,
        Err(StoreError::NotFound(_))
    ));
}
