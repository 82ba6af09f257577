//! The AWS Lambda Runtime API (2018-06-01) an instance's runtime polls. Each instance gets its own
//! listener on loopback, so the port identifies the instance.
//!
//! Two of every invocation's three HTTP exchanges are here (`/next` and the posted result), so
//! this endpoint is served by hyper directly: four fixed routes matched on the path, no router,
//! no middleware, no boxed services or request extensions per request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nimbus_core::Limits;

use crate::coalesce::{Coalesce, ConnState, NextGuard};
use crate::instance::{Inflight, Instance, JobResult};
use crate::peer::PeerFilter;

const PREFIX: &str = "/2018-06-01/runtime";

type Reply = Response<Full<Bytes>>;

/// Serves one instance's Runtime API on `listener` until the task is aborted (when the
/// instance's process tree is gone). Each accepted connection (the filter has already checked
/// who opened it) is served on a task of its own, HTTP/1.1 as the Runtime API is. The
/// connection tasks belong to this one: aborting it ends them too, so a connection some
/// process still holds open cannot keep the instance (and its sandbox) alive.
pub(crate) async fn serve(listener: PeerFilter, instance: Arc<Instance>) {
    use axum::serve::Listener;
    let mut listener = listener;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await;
        // Connections that have ended are let go here, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let instance = instance.clone();
        connections.spawn(async move {
            let conn = Arc::new(ConnState::default());
            let io = Coalesce::new(stream, conn.clone());
            let service = hyper::service::service_fn(move |req| {
                let route = route(&req);
                if route == Route::Next && req.method() == Method::GET {
                    // Now, as hyper hands the request over and before it reads again: from
                    // here a held 202 waits for this request's event (see `coalesce`).
                    conn.next_asked();
                }
                let instance = instance.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(handle(&instance, &conn, route, req).await) }
            });
            // No timer: a header read timeout would arm one per request, and the only peer is
            // the instance's own runtime.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

/// The resource a request names.
fn route(req: &Request<Incoming>) -> Route {
    req.uri()
        .path()
        .strip_prefix(PREFIX)
        .map(Route::parse)
        .unwrap_or(Route::Unknown)
}

/// Routes one request: `GET /invocation/next`, `POST /invocation/{id}/response`,
/// `POST /invocation/{id}/error` and `POST /init/error` under the 2018-06-01 prefix.
async fn handle(inst: &Instance, conn: &ConnState, route: Route, req: Request<Incoming>) -> Reply {
    match (route, req.method()) {
        (Route::Next, &Method::GET) => next(inst, conn).await,
        (Route::Response(id), &Method::POST) => {
            complete(inst, conn, &id, req.into_body(), JobResult::Response).await
        }
        (Route::Error(id), &Method::POST) => {
            let error_type = error_type(req.headers());
            complete(inst, conn, &id, req.into_body(), |body| JobResult::Error {
                body,
                error_type,
            })
            .await
        }
        (Route::InitError, &Method::POST) => {
            let error_type = error_type(req.headers());
            init_error(inst, error_type, req.into_body()).await
        }
        (Route::Unknown, _) => api_error(
            StatusCode::NOT_FOUND,
            "UnknownResource",
            &format!(
                "{} {} is not a Runtime API resource",
                req.method(),
                req.uri().path()
            ),
        ),
        (route, method) => {
            let allowed = route.method();
            let mut r = api_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{} takes {allowed}, not {method}", req.uri().path()),
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allowed));
            r
        }
    }
}

/// A Runtime API resource, from the path after the prefix.
#[derive(Debug, PartialEq)]
enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    Unknown,
}

impl Route {
    fn parse(rest: &str) -> Route {
        match rest {
            "/invocation/next" => return Route::Next,
            "/init/error" => return Route::InitError,
            _ => {}
        }
        let Some(tail) = rest.strip_prefix("/invocation/") else {
            return Route::Unknown;
        };
        let Some((id, action)) = tail.split_once('/') else {
            return Route::Unknown;
        };
        if id.is_empty() {
            return Route::Unknown;
        }
        // Clients percent-encode the id (the Node.js client uses encodeURIComponent).
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned();
        match action {
            "response" => Route::Response(id),
            "error" => Route::Error(id),
            _ => Route::Unknown,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Route::Next => "GET",
            _ => "POST",
        }
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string();
    json(status, body)
}

fn accepted() -> Reply {
    json(
        StatusCode::ACCEPTED,
        Bytes::from_static(br#"{"status":"OK"}"#),
    )
}

// The event's headers, as constants: a name given as a string is copied into a new buffer on
// every insert (`http` keeps only its standard names static).
const REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
const CLIENT_CONTEXT: HeaderName = HeaderName::from_static("lambda-runtime-client-context");

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn next(inst: &Instance, conn: &ConnState) -> Reply {
    // Whatever happens below, this request's answer goes out (with a 202 held for it).
    let _answered = NextGuard(conn);
    // The first call ends init, whether or not an invocation is waiting (a provisioned
    // instance asks long before its first one).
    let _ = inst.init_done.set(Instant::now());
    // One caller at a time; a runtime that polls twice waits its turn.
    let mut rx = inst.jobs_rx.lock().await;
    // The memory peak restarts for each invocation. It is done before waiting, so handing out
    // the event does not pay for it (the runtime only waits in between, so the peak is the
    // same; with an event already queued the wait is none).
    inst.reset_peak_memory();
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
    // From the moment the runtime has its event to the moment its answer is read: how much of
    // that it computes is what the CPU slots go by.
    let sched = inst.sched_start();
    if let Ok(mut inflight) = inst.inflight.lock() {
        *inflight = Some(Inflight {
            request_id: job.request_id.clone(),
            result: job.result,
            sched,
        });
    }
    let _ = job.picked.send(now);
    let mut r = json(StatusCode::OK, job.payload);
    let headers = r.headers_mut();
    headers.insert(REQUEST_ID, header(&job.request_id));
    headers.insert(DEADLINE_MS, HeaderValue::from(deadline_ms));
    headers.insert(FUNCTION_ARN, header(&job.invoked_arn));
    headers.insert(TRACE_ID, header(&job.trace_id));
    if let Some(cc) = &job.client_context {
        // The client context is any UTF-8 JSON; header values carry non-ASCII bytes as obs-text.
        match HeaderValue::from_bytes(cc.as_bytes()) {
            Ok(v) => {
                headers.insert(CLIENT_CONTEXT, v);
            }
            Err(_) => {
                tracing::warn!(request_id = %job.request_id, "client context has bytes a header cannot carry; not passed on")
            }
        }
    }
    r
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
async fn read_capped(body: Incoming, limit: usize) -> Capped {
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

fn too_large(size: usize) -> Reply {
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

fn not_serving(id: &str) -> Reply {
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

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Ends invocation `id` with the posted body, shaped by `result`.
async fn complete(
    inst: &Instance,
    conn: &ConnState,
    id: &str,
    body: Incoming,
    result: impl FnOnce(Bytes) -> JobResult,
) -> Reply {
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
            // Recorded before the invoker hears of the result, so whoever sees the answer sees
            // the measurement too.
            inst.sched_end(inflight.sched);
            let _ = inflight.result.send(result(body));
            // Let the invoker (woken just now, on this worker) answer its caller before this
            // task writes the 202: the caller is waiting, while the 202 only lets the runtime
            // ask for its next event. Measured: 20-40 µs off the warm c=1 p50.
            tokio::task::yield_now().await;
            inst.sched_prepare();
            // Its 202 may go out with the next event (see `coalesce`).
            conn.result_accepted();
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

async fn init_error(inst: &Instance, error_type: Option<String>, body: Incoming) -> Reply {
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
        *slot = Some((body, error_type));
    }
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_path() {
        assert_eq!(Route::parse("/invocation/next"), Route::Next);
        assert_eq!(Route::parse("/init/error"), Route::InitError);
        assert_eq!(
            Route::parse("/invocation/8476a536-e9f4-11e8-9739-2dfe598c3fcd/response"),
            Route::Response("8476a536-e9f4-11e8-9739-2dfe598c3fcd".into())
        );
        assert_eq!(
            Route::parse("/invocation/abc/error"),
            Route::Error("abc".into())
        );
        // Percent-encoded ids are decoded, as a path parameter is.
        assert_eq!(
            Route::parse("/invocation/a%2Fb%20c/response"),
            Route::Response("a/b c".into())
        );
        for unknown in [
            "",
            "/",
            "/invocation",
            "/invocation/",
            "/invocation//response",
            "/invocation/abc",
            "/invocation/abc/",
            "/invocation/abc/respond",
            "/invocation/abc/response/more",
            "/invocation/next/",
            "/init",
            "/init/error/",
        ] {
            assert_eq!(Route::parse(unknown), Route::Unknown, "{unknown:?}");
        }
    }

    #[test]
    fn each_route_names_its_method() {
        assert_eq!(Route::Next.method(), "GET");
        assert_eq!(Route::InitError.method(), "POST");
        assert_eq!(Route::Response("x".into()).method(), "POST");
        assert_eq!(Route::Error("x".into()).method(), "POST");
    }
}
