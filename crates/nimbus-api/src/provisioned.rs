//! Provisioned concurrency configurations: PutProvisionedConcurrencyConfig,
//! GetProvisionedConcurrencyConfig, DeleteProvisionedConcurrencyConfig and
//! ListProvisionedConcurrencyConfigs, in Lambda's shapes. The store keeps what was asked for (so
//! a restart provisions again); the runtime keeps the instances and reports what is allocated.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use nimbus_core::{FunctionRef, FunctionVersion, Qualifier, VersionId};
use nimbus_store::{ProvisionedConfig, StoreError};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::wire::lambda_time;
use crate::ApiState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRequest {
    provisioned_concurrent_executions: Option<i64>,
}

fn not_found(function: &str, qualifier: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionedConcurrencyConfigNotFoundException",
        format!(
            "No Provisioned Concurrency Config found for this function: {function}:{qualifier}"
        ),
    )
}

fn qualifier_param(params: &HashMap<String, String>) -> ApiResult<String> {
    match params.get("Qualifier").map(String::as_str) {
        Some(q) if !q.is_empty() => Ok(q.to_string()),
        _ => Err(ApiError::invalid(
            "Qualifier is required: the version number or alias name to provision",
        )),
    }
}

/// The version a provisioned configuration keeps warm: the version itself, or the alias's
/// primary version. `$LATEST` cannot be provisioned, as on Lambda.
async fn target_version(
    state: &ApiState,
    function: &str,
    qualifier: &str,
) -> ApiResult<FunctionVersion> {
    let version = match Qualifier::parse(qualifier)? {
        Qualifier::Latest => {
            return Err(ApiError::invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions ($LATEST); publish a version or use an alias",
            ))
        }
        Qualifier::Version(n) => VersionId::Published(n),
        Qualifier::Alias(a) => state.store.get_alias(function, &a).await?.function_version,
    };
    Ok(state.store.get_version(function, version).await?)
}

/// One configuration in Lambda's shape (the List form also names the function ARN).
fn config_json(state: &ApiState, cfg: &ProvisionedConfig, with_arn: bool) -> serde_json::Value {
    let st = state
        .runtime
        .provisioned_status(&cfg.function, &cfg.qualifier);
    let (allocated, status, reason) = match &st {
        Some(s) => (s.allocated.min(cfg.requested), s.status, s.reason.clone()),
        None => (0, "IN_PROGRESS", None),
    };
    let mut out = serde_json::json!({
        "RequestedProvisionedConcurrentExecutions": cfg.requested,
        "AvailableProvisionedConcurrentExecutions": allocated,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": status,
        "LastModified": lambda_time(cfg.last_modified_ms),
    });
    if let Some(r) = reason {
        out["StatusReason"] = r.into();
    }
    if with_arn {
        out["FunctionArn"] = FunctionRef::qualified_arn(&cfg.function, &cfg.qualifier).into();
    }
    out
}

pub async fn put(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let function = FunctionRef::parse(&name)?.name;
    let qualifier = qualifier_param(&params)?;
    let req: PutRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not valid JSON for this operation: {e}"
        ))
    })?;
    let n = req
        .provisioned_concurrent_executions
        .ok_or_else(|| ApiError::invalid("ProvisionedConcurrentExecutions is required"))?;
    if n < 1 {
        return Err(ApiError::invalid(format!(
            "ProvisionedConcurrentExecutions must be at least 1, got {n}"
        )));
    }
    let limit = state.runtime.max_instances();
    let n = u32::try_from(n)
        .ok()
        .filter(|n| *n as usize <= limit)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "ProvisionedConcurrentExecutions {n} exceeds this node's instance limit ({limit}, set by --max-instances)"
            ))
        })?;
    let record = state.store.get_function(&function).await?;
    if let Some(reserved) = record.reserved_concurrency {
        if n > reserved {
            return Err(ApiError::invalid(format!(
                "ProvisionedConcurrentExecutions {n} exceeds the function's reserved concurrency ({reserved})"
            )));
        }
    }
    let version = target_version(&state, &function, &qualifier).await?;
    let cfg = ProvisionedConfig {
        function: function.clone(),
        qualifier: qualifier.clone(),
        requested: n,
        last_modified_ms: nimbus_store::now_ms(),
    };
    state.store.put_provisioned(cfg.clone()).await?;
    state
        .runtime
        .set_provisioned(&function, &qualifier, version, n);
    Ok((StatusCode::ACCEPTED, Json(config_json(&state, &cfg, false))))
}

/// GET: one configuration with `Qualifier`, or every one of the function with `List=ALL`.
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    state.store.get_function(&function).await?;
    let all = state.store.list_provisioned(Some(&function)).await?;
    if params.contains_key("List") {
        let items: Vec<_> = all.iter().map(|c| config_json(&state, c, true)).collect();
        return Ok(crate::wire::page(
            "ProvisionedConcurrencyConfigs",
            items,
            None,
        ));
    }
    let qualifier = qualifier_param(&params)?;
    let cfg = all
        .iter()
        .find(|c| c.qualifier == qualifier)
        .ok_or_else(|| not_found(&function, &qualifier))?;
    Ok(Json(config_json(&state, cfg, false)))
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let function = FunctionRef::parse(&name)?.name;
    let qualifier = qualifier_param(&params)?;
    state.store.get_function(&function).await?;
    match state.store.delete_provisioned(&function, &qualifier).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(not_found(&function, &qualifier)),
        Err(e) => return Err(e.into()),
    }
    state.runtime.remove_provisioned(&function, &qualifier);
    Ok(StatusCode::NO_CONTENT)
}

/// Brings the runtime in line with the stored configurations of `function` (all functions
/// when `None`): after a restart, an alias update, or a deletion. A configuration whose alias
/// or version is gone is dropped, as Lambda drops it with the alias.
pub async fn sync(state: &ApiState, function: Option<&str>) {
    let configs = match state.store.list_provisioned(function).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not read provisioned concurrency configurations");
            return;
        }
    };
    for cfg in configs {
        match target_version(state, &cfg.function, &cfg.qualifier).await {
            Ok(v) => state
                .runtime
                .set_provisioned(&cfg.function, &cfg.qualifier, v, cfg.requested),
            Err(_) => {
                let _ = state
                    .store
                    .delete_provisioned(&cfg.function, &cfg.qualifier)
                    .await;
                state
                    .runtime
                    .remove_provisioned(&cfg.function, &cfg.qualifier);
            }
        }
    }
}
