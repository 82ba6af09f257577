//! The AWS Lambda Runtime API (2018-06-01) an instance's runtime polls. Each instance gets its own
//! listener on loopback, so the port identifies the instance.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use nimbus_core::Limits;

use crate::instance::{Inflight, Instance, JobResult};

const PREFIX: &str = "/2018-06-01/runtime";

pub(crate) fn router(instance: Arc<Instance>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/invocation/next"), get(next))
        .route(
            &format!("{PREFIX}/invocation/{{id}}/response"),
            post(response),
        )
        .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
        .route(&format!("{PREFIX}/init/error"), post(init_error))
        // Responses up to Lambda's limit, plus room to notice and report larger ones.
        .layer(DefaultBodyLimit::max(
            Limits::SYNC_PAYLOAD_BYTES + 1024 * 1024,
        ))
        .with_state(instance)
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn next(State(inst): State<Arc<Instance>>) -> Response {
    // One caller at a time; a runtime that polls twice waits its turn.
    let mut rx = inst.jobs_rx.lock().await;
    let Some(job) = rx.recv().await else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Shutdown",
            "the instance is shutting down",
        );
    };
    drop(rx);
    let now = Instant::now();
    let _ = inst.init_done.set(now);
    inst.reset_peak_memory();
    if let Ok(mut current) = inst.capture.current.lock() {
        *current = Some(job.log.clone());
    }
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        + job.timeout.as_millis() as u64;
    if let Ok(mut inflight) = inst.inflight.lock() {
        *inflight = Some(Inflight {
            request_id: job.request_id.clone(),
            result: job.result,
        });
    }
    let _ = job.picked.send(now);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("lambda-runtime-aws-request-id", header(&job.request_id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header(&job.invoked_arn),
    );
    headers.insert("lambda-runtime-trace-id", header(&job.trace_id));
    if let Some(cc) = &job.client_context {
        headers.insert("lambda-runtime-client-context", header(cc));
    }
    (StatusCode::OK, headers, job.payload).into_response()
}

/// Takes the in-flight invocation if `id` names it.
fn take_inflight(inst: &Instance, id: &str) -> Result<Inflight, Response> {
    let mut guard = inst.inflight.lock().map_err(|_| {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Unknown",
            "instance state poisoned",
        )
    })?;
    match guard.take() {
        Some(f) if f.request_id == id => Ok(f),
        other => {
            *guard = other;
            Err(api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                &format!("request id {id} is not the invocation this runtime is serving"),
            ))
        }
    }
}

async fn response(
    State(inst): State<Arc<Instance>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let inflight = match take_inflight(&inst, &id) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if body.len() > Limits::SYNC_PAYLOAD_BYTES {
        let _ = inflight.result.send(JobResult::TooLarge(body.len()));
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!(
                "Response payload size ({} bytes) exceeded maximum allowed payload size ({} bytes).",
                body.len(),
                Limits::SYNC_PAYLOAD_BYTES
            ),
        );
    }
    let _ = inflight.result.send(JobResult::Response(body));
    accepted()
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn error(
    State(inst): State<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inflight = match take_inflight(&inst, &id) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let _ = inflight.result.send(JobResult::Error {
        body,
        error_type: error_type(&headers),
    });
    accepted()
}

async fn init_error(
    State(inst): State<Arc<Instance>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if inst.init_done.get().is_some() {
        return api_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init/error is only accepted before the runtime's first invocation/next",
        );
    }
    if let Ok(mut slot) = inst.init_error.lock() {
        *slot = Some((body, error_type(&headers)));
    }
    accepted()
}
