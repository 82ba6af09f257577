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
