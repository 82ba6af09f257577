//! Which stored version an invocation of `name[:qualifier]` runs: shared by every caller that
//! invokes by name (the Invoke API, the gateway's function integrations, async dispatch).

use std::sync::Arc;

use nimbus_core::{FunctionRef, FunctionVersion, Qualifier, VersionId};
use nimbus_store::{Store, StoreError};

/// A resolved invocation target.
#[derive(Debug, Clone)]
pub struct InvokeTarget {
    /// Shared with the store's cache: an invocation does not copy the version's record.
    pub version: Arc<FunctionVersion>,
    /// The function's reserved concurrency, which the pool enforces.
    pub reserved: Option<u32>,
    /// The ARN the caller used (qualified when a qualifier was given), as the runtime reports
    /// it in the context.
    pub invoked_arn: String,
}

/// Resolves name + qualifier to the version to run; an alias picks between its versions by
/// its routing weights.
pub async fn resolve_target(
    store: &dyn Store,
    name: &str,
    qualifier: Option<&Qualifier>,
) -> Result<InvokeTarget, StoreError> {
    let record = store.function_shared(name).await?;
    let (version, invoked_arn) = match qualifier {
        None => (VersionId::Latest, FunctionRef::arn(name)),
        Some(Qualifier::Latest) => (
            VersionId::Latest,
            FunctionRef::qualified_arn(name, "$LATEST"),
        ),
        Some(Qualifier::Version(n)) => (
            VersionId::Published(*n),
            FunctionRef::qualified_arn(name, &n.to_string()),
        ),
        Some(Qualifier::Alias(a)) => {
            let alias = store.get_alias(name, a).await?;
            (
                alias.pick(rand::random::<f64>()),
                FunctionRef::qualified_arn(name, a),
            )
        }
    };
    let version = store.version_shared(name, version).await?;
    Ok(InvokeTarget {
        version,
        reserved: record.reserved_concurrency,
        invoked_arn,
    })
}
