//! Event source mappings on the Lambda API: CreateEventSourceMapping, ListEventSourceMappings,
//! GetEventSourceMapping, UpdateEventSourceMapping and DeleteEventSourceMapping under
//! `/2015-03-31/event-source-mappings/`, for the built-in queues (`arn:aws:sqs:…`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use nimbus_core::{FunctionRef, Qualifier, VersionId};
use nimbus_events::mappings::Mapping;
use nimbus_store::now_ms;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::functions::json_body_required;
use crate::ApiState;

/// SQS event sources: BatchSize's bounds and default, the batching window's maximum.
const MAX_BATCH_SIZE: i64 = 10_000;
const DEFAULT_BATCH_SIZE: u32 = 10;
const MAX_WINDOW_S: i64 = 300;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct MappingInput {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<i64>,
    maximum_batching_window_in_seconds: Option<i64>,
    function_response_types: Option<Vec<String>>,
    scaling_config: Option<ScalingConfig>,
    starting_position: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ScalingConfig {
    maximum_concurrency: Option<i64>,
}

fn mapping_json(state: &ApiState, m: &Mapping, state_name: &str) -> Value {
    let mut v = json!({
        "UUID": m.uuid,
        "EventSourceMappingArn": format!("arn:aws:lambda:{}:{}:event-source-mapping:{}", nimbus_core::REGION, nimbus_core::ACCOUNT_ID, m.uuid),
        "EventSourceArn": m.source_arn(),
        "FunctionArn": m.function_arn(),
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.max_batching_window_s,
        "FunctionResponseTypes": if m.report_batch_item_failures { json!(["ReportBatchItemFailures"]) } else { json!([]) },
        "LastModified": m.last_modified_ms as f64 / 1000.0,
        "LastProcessingResult": state.mappings.last_result(&m.uuid),
        "State": state_name,
        "StateTransitionReason": "USER_INITIATED",
    });
    if let Some(c) = m.max_concurrency {
        v["ScalingConfig"] = json!({ "MaximumConcurrency": c });
    }
    v
}

fn state_of(m: &Mapping) -> &'static str {
    if m.enabled {
        "Enabled"
    } else {
        "Disabled"
    }
}

/// The function a FunctionName names (name, ARN or partial ARN, with an optional qualifier),
/// checked to exist; returns it with its timeout.
async fn function(state: &ApiState, given: &str) -> ApiResult<(String, Option<String>, u32)> {
    let r = FunctionRef::parse(given)?;
    let version = match &r.qualifier {
        None | Some(Qualifier::Latest) => VersionId::Latest,
        Some(Qualifier::Version(n)) => VersionId::Published(*n),
        Some(Qualifier::Alias(a)) => {
            let alias = state.store.get_alias(&r.name, a).await?;
            alias.function_version
        }
    };
    let v = state.store.get_version(&r.name, version).await?;
    Ok((
        r.name,
        r.qualifier.map(|q| q.to_string()),
        v.config.timeout_s,
    ))
}

/// Applies the input's settings over `m`, checking each as Lambda does for SQS.
async fn apply(state: &ApiState, m: &mut Mapping, input: &MappingInput) -> ApiResult<()> {
    let queue = state.queues.queue(&m.queue).await.map_err(|_| {
        ApiError::invalid(format!(
            "The event source queue {} does not exist",
            m.source_arn()
        ))
    })?;
    let fifo = queue.attributes.fifo_queue;
    if let Some(b) = input.batch_size {
        let max = if fifo { 10 } else { MAX_BATCH_SIZE };
        if !(1..=max).contains(&b) {
            return Err(ApiError::invalid(format!(
                "BatchSize must be between 1 and {max} for this queue, got {b}"
            )));
        }
        m.batch_size = b as u32;
    }
    if let Some(w) = input.maximum_batching_window_in_seconds {
        if !(0..=MAX_WINDOW_S).contains(&w) {
            return Err(ApiError::invalid(format!(
                "MaximumBatchingWindowInSeconds must be between 0 and {MAX_WINDOW_S}, got {w}"
            )));
        }
        if fifo && w > 0 {
            return Err(ApiError::invalid(
                "Batching window is not supported for FIFO queues",
            ));
        }
        m.max_batching_window_s = w as u32;
    }
    if m.batch_size > 10 && m.max_batching_window_s == 0 {
        return Err(ApiError::invalid(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
        ));
    }
    if let Some(types) = &input.function_response_types {
        for t in types {
            if t != "ReportBatchItemFailures" {
                return Err(ApiError::invalid(format!(
                    "FunctionResponseTypes: {t:?} is not supported (only ReportBatchItemFailures)"
                )));
            }
        }
        m.report_batch_item_failures = !types.is_empty();
    }
    if let Some(s) = &input.scaling_config {
        match s.maximum_concurrency {
            Some(c) if !(2..=1000).contains(&c) => {
                return Err(ApiError::invalid(format!(
                    "ScalingConfig.MaximumConcurrency must be between 2 and 1000, got {c}"
                )))
            }
            c => m.max_concurrency = c.map(|c| c as u32),
        }
    }
    if let Some(e) = input.enabled {
        m.enabled = e;
    }
    if let Some(name) = &input.function_name {
        let (f, q, timeout_s) = function(state, name).await?;
        // Lambda refuses a queue that would hand a batch to another poller while the function
        // may still be running it.
        if queue.attributes.visibility_timeout < timeout_s {
            return Err(ApiError::invalid(format!(
                "Queue visibility timeout: {} seconds is less than Function timeout: {timeout_s} seconds",
                queue.attributes.visibility_timeout
            )));
        }
        m.function = f;
        m.qualifier = q;
    }
    m.last_modified_ms = now_ms();
    Ok(())
}

pub async fn create(
    State(state): State<ApiState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input: MappingInput = json_body_required(&body)?;
    let source = input
        .event_source_arn
        .as_deref()
        .ok_or_else(|| ApiError::invalid("EventSourceArn is required"))?;
    let queue = nimbus_core::sqs::queue_name_from_arn(source).ok_or_else(|| {
        ApiError::invalid(format!(
            "EventSourceArn {source:?} is not an SQS queue ARN (arn:aws:sqs:{}:{}:<queue>); Nimbus's event source mappings read its built-in queues",
            nimbus_core::REGION,
            nimbus_core::ACCOUNT_ID
        ))
    })?;
    let Some(function_name) = input.function_name.as_deref() else {
        return Err(ApiError::invalid("FunctionName is required"));
    };
    if input.starting_position.is_some() {
        return Err(ApiError::invalid(
            "StartingPosition is not valid for SQS event sources",
        ));
    }
    let (fname, _, _) = function(&state, function_name).await?;
    for existing in state.mappings.list().await? {
        if existing.queue == queue && existing.function == fname {
            return Err(ApiError::conflict(format!(
                "An event source mapping with SQS arn (\" {source} \") and function (\" {fname} \") already exists. Please update or delete the existing mapping with UUID {}",
                existing.uuid
            )));
        }
    }
    let mut m = Mapping {
        uuid: uuid::Uuid::new_v4().to_string(),
        function: fname,
        qualifier: None,
        queue: queue.to_string(),
        batch_size: DEFAULT_BATCH_SIZE,
        max_batching_window_s: 0,
        max_concurrency: None,
        report_batch_item_failures: false,
        enabled: true,
        last_modified_ms: 0,
    };
    apply(&state, &mut m, &input).await?;
    state.mappings.put(&m).await?;
    let state_name = if m.enabled { "Creating" } else { "Disabled" };
    Ok((
        StatusCode::ACCEPTED,
        Json(mapping_json(&state, &m, state_name)),
    ))
}

pub async fn list(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let source = params.get("EventSourceArn");
    let function = params
        .get("FunctionName")
        .map(|f| FunctionRef::parse(f).map(|r| r.name))
        .transpose()?;
    let max_items = match params.get("MaxItems") {
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(format!(
                    "MaxItems must be 1 to 10000, got {s:?}"
                )))
            }
        },
        None => 100,
    };
    let all: Vec<Mapping> = state
        .mappings
        .list()
        .await?
        .into_iter()
        .filter(|m| source.is_none_or(|s| *s == m.source_arn()))
        .filter(|m| function.as_ref().is_none_or(|f| *f == m.function))
        .collect();
    let start = match params.get("Marker") {
        Some(marker) => all.partition_point(|m| m.uuid.as_str() <= marker.as_str()),
        None => 0,
    };
    let page: Vec<&Mapping> = all[start..].iter().take(max_items).collect();
    let mut out = json!({
        "EventSourceMappings": page.iter().map(|m| mapping_json(&state, m, state_of(m))).collect::<Vec<_>>(),
    });
    if start + page.len() < all.len() {
        if let Some(last) = page.last() {
            out["NextMarker"] = json!(last.uuid);
        }
    }
    Ok(Json(out))
}

fn no_mapping(uuid: &str) -> impl FnOnce(nimbus_store::StoreError) -> ApiError + '_ {
    move |e| match e {
        nimbus_store::StoreError::NotFound(_) => ApiError::not_found(format!(
            "The resource you requested does not exist. (event source mapping {uuid})"
        )),
        other => other.into(),
    }
}

pub async fn get(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
) -> ApiResult<Json<Value>> {
    let m = state.mappings.get(&uuid).await.map_err(no_mapping(&uuid))?;
    Ok(Json(mapping_json(&state, &m, state_of(&m))))
}

pub async fn update(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let input: MappingInput = json_body_required(&body)?;
    if input.event_source_arn.is_some() {
        return Err(ApiError::invalid(
            "EventSourceArn cannot be changed; create a new mapping",
        ));
    }
    let mut m = state.mappings.get(&uuid).await.map_err(no_mapping(&uuid))?;
    apply(&state, &mut m, &input).await?;
    state.mappings.put(&m).await?;
    let state_name = match input.enabled {
        Some(true) => "Enabling",
        Some(false) => "Disabling",
        None => "Updating",
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(mapping_json(&state, &m, state_name)),
    ))
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let m = state
        .mappings
        .delete(&uuid)
        .await
        .map_err(no_mapping(&uuid))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(mapping_json(&state, &m, "Deleting")),
    ))
}
