//! Nimbus's own endpoints: health, log queries for `nimbus logs`, metrics (Prometheus text and
//! per-minute series for `nimbus metrics`), code download for GetFunction's `Code.Location`,
//! and a status summary.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use nimbus_core::FunctionRef;
use nimbus_store::LogQuery;
use nimbus_telemetry::metrics::{parse_time, PERIOD};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult};
use crate::wire::FunctionMetrics;
use crate::ApiState;

/// The OpenAPI 3 document of the management API (Lambda's operations, API Gateway v2's, and
/// Nimbus's own), served as written in `openapi.json`.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

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

/// `GET /metrics`: every metric family in Prometheus's text format.
pub async fn prometheus(State(state): State<ApiState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render_prometheus(),
    )
        .into_response()
}

/// The window a series covers when `since` is not given.
const DEFAULT_WINDOW_MS: i64 = 3_600_000;

/// `GET /nimbus/v1/functions/{name}/metrics?since=&until=&version=`: per-minute series, one
/// per version, with the minute in progress included. `since` and `until` take an ISO-8601
/// time, epoch milliseconds or a duration before now (`1h`); `{name}:{qualifier}` is the same
/// as `version={qualifier}`.
pub async fn function_metrics(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Json<FunctionMetrics>> {
    let f = FunctionRef::parse(&name)?;
    state.store.get_function(&f.name).await?;
    let now = nimbus_store::now_ms();
    let time = |key: &str, default: i64| match p.get(key) {
        None => Ok(default),
        Some(v) => parse_time(v, now).map_err(|e| ApiError::invalid(format!("{key}: {e}"))),
    };
    let until = time("until", now)?;
    let since = time("since", until - DEFAULT_WINDOW_MS)?;
    if since >= until {
        return Err(ApiError::invalid(format!(
            "since ({}) must be before until ({})",
            nimbus_telemetry::utc_timestamp(since, "Z"),
            nimbus_telemetry::utc_timestamp(until, "Z")
        )));
    }
    let version = match p.get("version").filter(|v| !v.is_empty()) {
        Some(v) => Some(v.clone()),
        None => f.qualifier.map(|q| q.to_string()),
    };
    let series = state
        .metrics
        .series(&*state.store, &f.name, version.as_deref(), since, until)
        .await?;
    Ok(Json(FunctionMetrics::new(
        f.name,
        PERIOD.as_secs(),
        since,
        until,
        series,
    )))
}

/// How long a `Code.Location` URL stays valid (Lambda's presigned URLs last 10 minutes).
const CODE_URL_TTL_S: u64 = 600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn code_url_mac(secret: &str, sha: &str, expires: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("nimbus-code-location\n{sha}\n{expires}").as_bytes());
    mac
}

/// GetFunction's `Code.Location`: a plain URL, presigned (`Expires` + `Signature`) when the
/// server requires SigV4, so that whoever got it from GetFunction can fetch it with a plain GET.
pub fn code_location(state: &ApiState, host: &str, sha: &str) -> String {
    let url = format!("http://{host}/nimbus/v1/code/{sha}.zip");
    match state.credentials.first() {
        None => url,
        Some(c) => {
            let expires = unix_now() + CODE_URL_TTL_S;
            let sig = hex::encode(
                code_url_mac(&c.secret_access_key, sha, expires)
                    .finalize()
                    .into_bytes(),
            );
            format!("{url}?Expires={expires}&Signature={sig}")
        }
    }
}

fn check_code_signature(state: &ApiState, sha: &str, p: &HashMap<String, String>) -> ApiResult<()> {
    if state.credentials.is_empty() {
        return Ok(());
    }
    let denied = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("{why}; get a fresh Code.Location from GetFunction"),
        )
    };
    let (Some(expires), Some(sig)) = (p.get("Expires"), p.get("Signature")) else {
        return Err(denied("this code URL is not signed"));
    };
    let expires: u64 = expires
        .parse()
        .map_err(|_| denied("this code URL's Expires is not a time"))?;
    if expires < unix_now() {
        return Err(denied("this code URL has expired"));
    }
    let sig = hex::decode(sig).map_err(|_| denied("this code URL's signature is malformed"))?;
    let valid = state.credentials.iter().any(|c| {
        code_url_mac(&c.secret_access_key, sha, expires)
            .verify_slice(&sig)
            .is_ok()
    });
    if valid {
        Ok(())
    } else {
        Err(denied("this code URL's signature does not match"))
    }
}

/// `GET /nimbus/v1/code/{sha256}.zip[?Expires=&Signature=]`
pub async fn code(
    State(state): State<ApiState>,
    Path(file): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let sha = file.strip_suffix(".zip").unwrap_or(&file).to_string();
    check_code_signature(&state, &sha, &p)?;
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
    Json(serde_json::json!({
        "instances": instances,
        "idleInstances": idle,
        "instanceList": state.runtime.instances(),
        "spares": state.runtime.spare_counts().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "cpuSlots": state.runtime.cpu_gate_status(),
        "isolation": isolation,
        // Stored asynchronous events not yet done with (waiting, running or awaiting a retry).
        "asyncEventsPending": state.store.count_async_events().await.ok(),
    }))
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

#[cfg(test)]
mod tests {
    /// Every path the router serves (`crate::router` in lib.rs and `nimbus_gateway::admin::router`),
    /// in OpenAPI's `{param}` form. A route added to either without a matching entry here and in
    /// `openapi.json` fails this test.
    /// Every path the routers register, read from their source: a route added without being
    /// documented fails the test below.
    fn routed_paths() -> Vec<String> {
        let mut out = Vec::new();
        for src in [
            include_str!("lib.rs"),
            include_str!("../../nimbus-gateway/src/admin.rs"),
        ] {
            for piece in src.split(".route(").skip(1) {
                let piece = piece.trim_start();
                if let Some(rest) = piece.strip_prefix('"') {
                    if let Some(end) = rest.find('"') {
                        out.push(rest[..end].to_string());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).expect("openapi.json is valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["info"]["version"], "0.1.0");
        let paths = doc["paths"].as_object().expect("openapi.json has paths");
        let routed = routed_paths();
        assert!(routed.len() > 30, "the route scan found only {routed:?}");
        let missing: Vec<_> = routed
            .iter()
            .filter(|p| !paths.contains_key(p.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "routes missing from openapi.json: {missing:?}"
        );
        let unknown: Vec<_> = paths.keys().filter(|p| !routed.contains(p)).collect();
        assert!(
            unknown.is_empty(),
            "openapi.json documents paths no route serves: {unknown:?}"
        );
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                assert!(
                    op["operationId"].is_string() && op["responses"].is_object(),
                    "{method} {path} lacks an operationId or responses"
                );
            }
        }
    }
}
