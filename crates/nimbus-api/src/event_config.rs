//! Asynchronous invocation configuration: PutFunctionEventInvokeConfig (replace),
//! UpdateFunctionEventInvokeConfig (merge), Get, Delete and List, under
//! `/2019-09-25/functions/{name}/event-invoke-config`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use nimbus_core::{FunctionRef, Qualifier, VersionId};
use nimbus_events::destination::Destination;
use nimbus_events::{MAX_EVENT_AGE_S, MAX_RETRY_ATTEMPTS, MIN_EVENT_AGE_S};
use nimbus_store::{now_ms, EventInvokeConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::functions::{function_ref, json_body_required};
use crate::ApiState;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ConfigInput {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DestinationConfig {
    on_success: Option<OnDestination>,
    on_failure: Option<OnDestination>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OnDestination {
    destination: Option<String>,
}

/// The function and qualifier named by the path and `Qualifier`, checked to exist.
async fn target(
    state: &ApiState,
    name: &str,
    params: &HashMap<String, String>,
) -> ApiResult<(String, String)> {
    let (function, q) = function_ref(name, params)?;
    state.store.get_function(&function).await?;
    let qualifier = match &q {
        None | Some(Qualifier::Latest) => "$LATEST".to_string(),
        Some(Qualifier::Version(n)) => {
            state
                .store
                .get_version(&function, VersionId::Published(*n))
                .await?;
            n.to_string()
        }
        Some(Qualifier::Alias(a)) => {
            state.store.get_alias(&function, a).await?;
            a.clone()
        }
    };
    Ok((function, qualifier))
}

/// A configuration with nothing set (Lambda's defaults).
fn empty(function: String, qualifier: String) -> EventInvokeConfig {
    EventInvokeConfig {
        function,
        qualifier,
        max_retry_attempts: None,
        max_event_age_s: None,
        on_success: None,
        on_failure: None,
        last_modified_ms: 0,
    }
}

/// Stores a configuration and tells the dispatcher, which caches them.
async fn save(state: &ApiState, cfg: &EventInvokeConfig) -> ApiResult<Json<Value>> {
    state.store.put_event_invoke_config(cfg.clone()).await?;
    state.events.config_changed(&cfg.function);
    Ok(Json(config_json(cfg)))
}

/// Lambda's answer for a function without a configuration.
fn no_config(function: &str, qualifier: &str) -> ApiError {
    ApiError::not_found(format!(
        "The function {} doesn't have an EventInvokeConfig",
        FunctionRef::qualified_arn(function, qualifier)
    ))
}

fn config_json(c: &EventInvokeConfig) -> Value {
    let dest = |d: &Option<String>| match d {
        Some(arn) => json!({ "Destination": arn }),
        None => json!({}),
    };
    json!({
        "LastModified": c.last_modified_ms as f64 / 1000.0,
        "FunctionArn": FunctionRef::qualified_arn(&c.function, &c.qualifier),
        "MaximumRetryAttempts": c.max_retry_attempts.unwrap_or(nimbus_events::DEFAULT_MAX_RETRY_ATTEMPTS),
        "MaximumEventAgeInSeconds": c.max_event_age_s.unwrap_or(nimbus_events::DEFAULT_MAX_EVENT_AGE_S),
        "DestinationConfig": { "OnSuccess": dest(&c.on_success), "OnFailure": dest(&c.on_failure) },
    })
}

/// Applies the input over `cfg` (Put starts from an empty configuration, Update from the stored
/// one), checking every value.
async fn apply(state: &ApiState, cfg: &mut EventInvokeConfig, input: ConfigInput) -> ApiResult<()> {
    if let Some(n) = input.maximum_retry_attempts {
        if !(0..=MAX_RETRY_ATTEMPTS as i64).contains(&n) {
            return Err(ApiError::invalid(format!(
                "MaximumRetryAttempts must be between 0 and {MAX_RETRY_ATTEMPTS}, got {n}"
            )));
        }
        cfg.max_retry_attempts = Some(n as u32);
    }
    if let Some(n) = input.maximum_event_age_in_seconds {
        if !(MIN_EVENT_AGE_S as i64..=MAX_EVENT_AGE_S as i64).contains(&n) {
            return Err(ApiError::invalid(format!(
                "MaximumEventAgeInSeconds must be between {MIN_EVENT_AGE_S} and {MAX_EVENT_AGE_S}, got {n}"
            )));
        }
        cfg.max_event_age_s = Some(n as u32);
    }
    if let Some(d) = input.destination_config {
        for (field, given, slot) in [
            ("OnSuccess", d.on_success, &mut cfg.on_success),
            ("OnFailure", d.on_failure, &mut cfg.on_failure),
        ] {
            let Some(given) = given else { continue };
            match given.destination.filter(|s| !s.is_empty()) {
                None => *slot = None,
                Some(arn) => {
                    let dest = Destination::parse(&arn).map_err(|e| {
                        ApiError::invalid(format!("DestinationConfig.{field}: {e}"))
                    })?;
                    match dest {
                        Destination::Function { name, .. } => {
                            state.store.get_function(&name).await.map_err(|_| {
                                ApiError::invalid(format!(
                                    "DestinationConfig.{field}: the destination function {name} does not exist"
                                ))
                            })?;
                        }
                        Destination::Queue { name } => {
                            state.queues.queue(&name).await.map_err(|_| {
                                ApiError::invalid(format!(
                                    "DestinationConfig.{field}: the destination queue {name} does not exist"
                                ))
                            })?;
                        }
                    }
                    *slot = Some(arn);
                }
            }
        }
    }
    cfg.last_modified_ms = now_ms();
    Ok(())
}

pub async fn put(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (function, qualifier) = target(&state, &name, &params).await?;
    let input: ConfigInput = json_body_required(&body)?;
    let mut cfg = empty(function, qualifier);
    apply(&state, &mut cfg, input).await?;
    save(&state, &cfg).await
}

pub async fn update(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (function, qualifier) = target(&state, &name, &params).await?;
    let input: ConfigInput = json_body_required(&body)?;
    let mut cfg = match state
        .store
        .get_event_invoke_config(&function, &qualifier)
        .await
    {
        Ok(c) => c,
        Err(nimbus_store::StoreError::NotFound(_)) => empty(function, qualifier),
        Err(e) => return Err(e.into()),
    };
    apply(&state, &mut cfg, input).await?;
    save(&state, &cfg).await
}

pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let (function, qualifier) = target(&state, &name, &params).await?;
    let cfg = state
        .store
        .get_event_invoke_config(&function, &qualifier)
        .await
        .map_err(|_| no_config(&function, &qualifier))?;
    Ok(Json(config_json(&cfg)))
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let (function, qualifier) = target(&state, &name, &params).await?;
    state
        .store
        .delete_event_invoke_config(&function, &qualifier)
        .await
        .map_err(|_| no_config(&function, &qualifier))?;
    state.events.config_changed(&function);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let function = FunctionRef::parse(&name)?.name;
    state.store.get_function(&function).await?;
    let items: Vec<Value> = state
        .store
        .list_event_invoke_configs(&function)
        .await?
        .iter()
        .map(config_json)
        .collect();
    Ok(Json(json!({ "FunctionEventInvokeConfigs": items })))
}
