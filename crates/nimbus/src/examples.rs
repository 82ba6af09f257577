//! The bundled examples `nimbus up --with-examples` deploys, embedded so the binary works
//! from any directory. Deploying is idempotent: an example whose code is unchanged is left alone.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use nimbus_core::{FunctionConfig, FunctionVersion, Limits, VersionId};
use nimbus_store::{new_revision_id, now_ms, BlobStore, FunctionRecord, Store, StoreError};

struct Example {
    name: &'static str,
    runtime: &'static str,
    handler: &'static str,
    files: &'static [(&'static str, &'static str, u32)],
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "hello-python",
        runtime: "python3",
        handler: "app.handler",
        files: &[(
            "app.py",
            include_str!("../../../examples/hello-python/app.py"),
            0o644,
        )],
    },
    Example {
        name: "hello-node",
        runtime: "nodejs",
        handler: "index.handler",
        files: &[(
            "index.js",
            include_str!("../../../examples/hello-node/index.js"),
            0o644,
        )],
    },
    Example {
        name: "hello-provided",
        runtime: "provided",
        handler: "bootstrap",
        files: &[(
            "bootstrap",
            include_str!("../../../examples/hello-provided/bootstrap"),
            0o755,
        )],
    },
];

fn zip(files: &[(&str, &str, u32)]) -> anyhow::Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text, mode) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .unix_permissions(*mode)
            .last_modified_time(zip::DateTime::default());
        w.start_file(*name, opts)?;
        w.write_all(text.as_bytes())?;
    }
    Ok(w.finish()?.into_inner())
}

pub async fn deploy(store: &Arc<dyn Store>, blobs: &BlobStore) -> anyhow::Result<()> {
    for ex in EXAMPLES {
        let bytes = zip(ex.files)?;
        let b = blobs.clone();
        let stored = tokio::task::spawn_blocking(move || b.put_zip(&bytes))
            .await?
            .with_context(|| format!("packing example {}", ex.name))?;
        let config = FunctionConfig {
            runtime_name: ex.runtime.into(),
            handler: ex.handler.into(),
            memory_mb: Limits::MEMORY_DEFAULT_MB,
            timeout_s: Limits::TIMEOUT_DEFAULT_S,
            ephemeral_mb: Limits::EPHEMERAL_DEFAULT_MB,
            environment: Default::default(),
            description: format!("Nimbus example ({})", ex.runtime),
            role: String::new(),
        };
        let latest = FunctionVersion {
            function: ex.name.into(),
            version: VersionId::Latest,
            config,
            code_sha256: stored.sha256.clone(),
            code_size: stored.size,
            last_modified_ms: now_ms(),
            revision_id: new_revision_id(),
        };
        match store.get_version(ex.name, VersionId::Latest).await {
            Ok(existing) if existing.code_sha256 == stored.sha256 => continue,
            Ok(_) => store.update_latest(latest, None).await?,
            Err(StoreError::NotFound(_)) => {
                let record = FunctionRecord {
                    name: ex.name.into(),
                    created_ms: now_ms(),
                    tags: Default::default(),
                    reserved_concurrency: None,
                };
                store.create_function(record, latest).await?
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(function = ex.name, "example deployed");
    }
    Ok(())
}

/// The example HTTP API's id: `http://nimbusdemo.execute-api.localhost:8080/hello`.
pub const EXAMPLE_API_ID: &str = "nimbusdemo";

/// Creates the example HTTP API in front of the example functions, unless it exists (then it
/// is left as the user may have changed it): `GET /hello` (python), `GET /node`, `GET
/// /provided`, and `GET /health` answered by a mock, on a `$default` stage.
pub async fn deploy_api(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    use nimbus_gateway::model::{ApiDoc, Integration, IntegrationKind, Route, Stage};
    match store.get_gateway_api(EXAMPLE_API_ID).await {
        Ok(_) => return Ok(()),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let now = now_ms();
    let mut doc = ApiDoc {
        api_id: EXAMPLE_API_ID.into(),
        name: "nimbus-examples".into(),
        description: "The example functions behind an HTTP API".into(),
        created_ms: now,
        cors: None,
        disable_execute_api_endpoint: false,
        tags: Default::default(),
        routes: Default::default(),
        integrations: Default::default(),
        stages: Default::default(),
    };
    let targets: [(&str, IntegrationKind); 4] = [
        (
            "GET /hello",
            IntegrationKind::Function {
                uri: "hello-python".into(),
            },
        ),
        (
            "GET /node",
            IntegrationKind::Function {
                uri: "hello-node".into(),
            },
        ),
        (
            "GET /provided",
            IntegrationKind::Function {
                uri: "hello-provided".into(),
            },
        ),
        (
            "GET /health",
            IntegrationKind::Mock {
                status: 200,
                headers: [("content-type".to_string(), "application/json".to_string())].into(),
                body: "{\"status\":\"ok\"}".into(),
            },
        ),
    ];
    for (i, (key, kind)) in targets.into_iter().enumerate() {
        let integration_id = format!("exint{i}0");
        let route_id = format!("exrte{i}0");
        let payload_format_version = if matches!(kind, IntegrationKind::Function { .. }) {
            "2.0"
        } else {
            "1.0"
        };
        doc.integrations.insert(
            integration_id.clone(),
            Integration {
                integration_id: integration_id.clone(),
                kind,
                payload_format_version: payload_format_version.into(),
                timeout_ms: nimbus_gateway::model::MAX_TIMEOUT_MS,
                description: String::new(),
            },
        );
        doc.routes.insert(
            route_id.clone(),
            Route {
                route_id,
                route_key: key.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                target: Some(format!("integrations/{integration_id}")),
            },
        );
    }
    let deployment = doc.snapshot("exdeploy01".into(), "Example deployment".into(), now, true);
    doc.stages.insert(
        "$default".into(),
        Stage {
            stage_name: "$default".into(),
            deployment_id: Some(deployment.deployment_id.clone()),
            auto_deploy: true,
            stage_variables: Default::default(),
            description: String::new(),
            access_log_destination: None,
            access_log_format: None,
            created_ms: now,
            last_updated_ms: now,
        },
    );
    store
        .put_gateway_api(EXAMPLE_API_ID, serde_json::to_string(&doc)?, None)
        .await?;
    store
        .put_gateway_deployment(
            EXAMPLE_API_ID,
            nimbus_store::GatewayDeploymentDoc {
                deployment_id: deployment.deployment_id.clone(),
                created_ms: now,
                doc: serde_json::to_string(&deployment)?,
            },
        )
        .await?;
    tracing::info!(api = EXAMPLE_API_ID, "example HTTP API created");
    Ok(())
}
