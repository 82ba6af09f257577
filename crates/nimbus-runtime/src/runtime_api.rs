//! The AWS Lambda Runtime API (2018-06-01) an instance's runtime polls. Each instance gets its own
//! listener on loopback, so the port identifies the instance.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use http_body_util::BodyExt;
use nimbus_core::Limits;

use crate::instance::{Inflight, Instance, JobResult};

const PREFIX: &str = "/2018-06-01/runtime";

/// The Runtime API's routes, built once per runtime. Each instance's listener serves them through
/// [`service`], which attaches the instance to every request (a router per instance cost every
/// warm instance ~9 KB).
pub(crate) fn routes() -> Router {
    Router::new()
        .route(&format!("{PREFIX}/invocation/next"), get(next))
        .route(
            &format!("{PREFIX}/invocation/{{id}}/response"),
            post(response),
        )
        .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
        .route(&format!("{PREFIX}/init/error"), post(init_error))
        // Bodies are read by `read_capped`, which keeps at most Lambda's limit and measures the
        // rest, so an oversized response becomes Function.ResponseSizeTooLarge rather than a
        // rejected request the caller would wait on until the timeout.
        .layer(DefaultBodyLimit::disable())
}

/// One instance's Runtime API: the shared `routes` with `instance` on each request.
pub(crate) fn service(
    routes: Router,
    instance: Arc<Instance>,
) -> tower::util::MapRequest<Router, impl FnMut(Request) -> Request + Clone> {
    tower::ServiceBuilder::new()
        .map_request(move |mut req: Request| {
            req.extensions_mut().insert(instance.clone());
            req
        })
        .service(routes)
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

async fn next(Extension(inst): Extension<Arc<Instance>>) -> Response {
    // The first call ends init, whether or not an invocation is waiting (a provisioned
    // instance asks long before its first one).
    let _ = inst.init_done.set(Instant::now());
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
    let job = *job;
    let now = Instant::now();
    inst.reset_peak_memory();
    job.log
        .platform(&inst.capture.sink, &inst.capture.names, job.start);
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
        // The client context is any UTF-8 JSON; header values carry non-ASCII bytes as obs-text.
        match HeaderValue::from_bytes(cc.as_bytes()) {
            Ok(v) => {
                headers.insert("lambda-runtime-client-context", v);
            }
            Err(_) => {
                tracing::warn!(request_id = %job.request_id, "client context has bytes a header cannot carry; not passed on")
            }
        }
    }
    (StatusCode::OK, headers, job.payload).into_response()
}

/// A body read from the runtime: whole, too large (with its full size), or broken off.
enum Capped {
    Whole(Bytes),
    TooLarge(usize),
    Broken(String),
}

/// Reads a body keeping at most `limit` bytes. Past the limit the rest is read and counted but
/// not kept, so the runtime gets a proper answer (413) and memory stays bounded; a runtime that
/// never stops sending is ended by the invocation's timeout, which kills the instance.
async fn read_capped(body: Body, limit: usize) -> Capped {
    let mut body = body;
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Capped::Broken(format!("could not read the request body: {e}")),
        };
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                kept.extend_from_slice(&data);
            } else if !kept.is_empty() {
                kept = Vec::new();
            }
        }
    }
    if total > limit {
        Capped::TooLarge(total)
    } else {
        Capped::Whole(Bytes::from(kept))
    }
}

fn too_large(size: usize) -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!(
            "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
            Limits::SYNC_PAYLOAD_BYTES
        ),
    )
}

/// Whether `id` names the in-flight invocation, without taking it.
fn is_serving(inst: &Instance, id: &str) -> bool {
    inst.inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|f| f.request_id == id)
}

fn not_serving(id: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        &format!("request id {id} is not the invocation this runtime is serving"),
    )
}

/// Takes the in-flight invocation if `id` names it.
fn take_inflight(inst: &Instance, id: &str) -> Option<Inflight> {
    let mut guard = inst.inflight.lock().unwrap_or_else(|p| p.into_inner());
    match guard.take() {
        Some(f) if f.request_id == id => Some(f),
        other => {
            *guard = other;
            None
        }
    }
}

async fn response(
    Extension(inst): Extension<Arc<Instance>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    complete(&inst, &id, body, JobResult::Response).await
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn error(
    Extension(inst): Extension<Arc<Instance>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let error_type = error_type(&headers);
    complete(&inst, &id, body, |body| JobResult::Error {
        body,
        error_type,
    })
    .await
}

/// Ends invocation `id` with the posted body, shaped by `result`.
async fn complete(
    inst: &Instance,
    id: &str,
    body: Body,
    result: impl FnOnce(Bytes) -> JobResult,
) -> Response {
    // Check the id first: a stray post must not make the runtime wait for a huge upload.
    if !is_serving(inst, id) {
        return not_serving(id);
    }
    let body = read_capped(body, Limits::SYNC_PAYLOAD_BYTES).await;
    let Some(inflight) = take_inflight(inst, id) else {
        return not_serving(id);
    };
    match body {
        Capped::Whole(body) => {
            let _ = inflight.result.send(result(body));
            accepted()
        }
        Capped::TooLarge(size) => {
            let _ = inflight.result.send(JobResult::TooLarge(size));
            too_large(size)
        }
        Capped::Broken(e) => {
            // The runtime's upload broke off; the invocation ends by its timeout or exit.
            *inst.inflight.lock().unwrap_or_else(|p| p.into_inner()) = Some(inflight);
            api_error(StatusCode::BAD_REQUEST, "InvalidRequest", &e)
        }
    }
}

async fn init_error(
    Extension(inst): Extension<Arc<Instance>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if inst.init_done.get().is_some() {
        return api_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init/error is only accepted before the runtime's first invocation/next",
        );
    }
    let body = match read_capped(body, Limits::SYNC_PAYLOAD_BYTES).await {
        Capped::Whole(b) => b,
        Capped::TooLarge(size) => return too_large(size),
        Capped::Broken(e) => return api_error(StatusCode::BAD_REQUEST, "InvalidRequest", &e),
    };
    if let Ok(mut slot) = inst.init_error.lock() {
        *slot = Some((body, error_type(&headers)));
    }
    accepted()
}
