//! Nimbus's own endpoints: health, log queries for `nimbus logs`, code download for
//! GetFunction's `Code.Location`, and a status summary.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_core::FunctionRef;
use nimbus_store::LogQuery;

use crate::error::{ApiError, ApiResult};
use crate::ApiState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

fn num<T: std::str::FromStr>(p: &HashMap<String, String>, key: &str) -> ApiResult<Option<T>> {
    p.get(key)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ApiError::invalid(format!("{key} must be a number, got {v:?}")))
        })
        .transpose()
}

/// `GET /nimbus/v1/functions/{name}/logs?since_ms=&after_id=&filter=&request_id=&limit=`
pub async fn logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    state.store.get_function(&function).await?;
    let limit: usize = num(&p, "limit")?.unwrap_or(1000).clamp(1, 10_000);
    let events = state
        .store
        .query_logs(LogQuery {
            function,
            since_ms: num(&p, "since_ms")?,
            after_id: num(&p, "after_id")?,
            filter: p.get("filter").filter(|f| !f.is_empty()).cloned(),
            request_id: p.get("request_id").cloned(),
            limit,
        })
        .await?;
    let last = events.last().map(|e| e.id);
    let events: Vec<_> = events
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id, "timestamp": e.ts_ms, "logStream": e.stream,
                "requestId": e.request_id, "message": e.message,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "events": events, "lastId": last }),
    ))
}

/// `GET /nimbus/v1/code/{sha256}.zip`
pub async fn code(State(state): State<ApiState>, Path(file): Path<String>) -> ApiResult<Response> {
    let sha = file.strip_suffix(".zip").unwrap_or(&file).to_string();
    let blobs = state.blobs.clone();
    let data = tokio::task::spawn_blocking(move || blobs.get_zip(&sha))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match data {
        Some(bytes) => Ok(([("content-type", "application/zip")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("no code archive named {file}"))),
    }
}

/// `GET /nimbus/v1/status`: instance counts and isolation in force.
pub async fn status(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let (instances, idle) = state.runtime.instance_counts();
    let isolation: Vec<_> = state
        .runtime
        .isolation()
        .features()
        .into_iter()
        .map(|f| serde_json::json!({ "name": f.name, "enabled": f.enabled, "detail": f.detail }))
        .collect();
    Json(
        serde_json::json!({ "instances": instances, "idleInstances": idle, "isolation": isolation }),
    )
}

pub async fn unknown_operation(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("no operation at {method} {}", uri.path()),
    )
}

/// A known path with a method it does not serve: an error body like every other, not axum's
/// empty 405.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnknownOperationException",
        format!("{} does not support {method}", uri.path()),
    )
}
