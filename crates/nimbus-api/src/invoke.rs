//! The Invoke API: `POST /2015-03-31/functions/{name}/invocations`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use nimbus_core::Limits;
use nimbus_runtime::{resolve_target, InvokeError, InvokeOutcome, InvokeRequest};

use crate::error::{ApiError, ApiResult};
use crate::functions::function_ref;
use crate::ApiState;

/// Lambda passes any JSON document; anything else is refused as Lambda refuses it.
fn check_payload(body: &Bytes) -> ApiResult<Bytes> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {e}"),
        ));
    }
    Ok(body.clone())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The route's handler when the API is served as a plain router ([`crate::router`]); the
/// server answers this route in [`crate::service`] without the router, with the same function.
pub async fn invoke(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    invoke_function(&state, &name, &params, &headers, body).await
}

/// Invoke: `path_name` is the `{name}` of the path (decoded), `params` its query.
pub(crate) async fn invoke_function(
    state: &ApiState,
    path_name: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let invocation_type = header_str(headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    let limit = match invocation_type {
        "RequestResponse" | "DryRun" => Limits::SYNC_PAYLOAD_BYTES,
        "Event" => Limits::ASYNC_PAYLOAD_BYTES,
        other => {
            return Err(ApiError::invalid(format!(
                "X-Amz-Invocation-Type {other:?} is not one of RequestResponse, Event, DryRun"
            )))
        }
    };
    if body.len() > limit {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {limit} bytes for the InvokeFunction operation (got {} bytes)",
            body.len()
        )));
    }
    let log_type = header_str(headers, "x-amz-log-type").unwrap_or("None");
    if log_type != "None" && log_type != "Tail" {
        return Err(ApiError::invalid(format!(
            "X-Amz-Log-Type {log_type:?} is not one of None, Tail"
        )));
    }
    let client_context = match header_str(headers, "x-amz-client-context") {
        None => None,
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| {
                    ApiError::invalid(format!("X-Amz-Client-Context is not valid base64: {e}"))
                })?;
            Some(
                String::from_utf8(raw)
                    .map_err(|_| ApiError::invalid("X-Amz-Client-Context is not UTF-8 text"))?,
            )
        }
    };
    let payload = check_payload(&body)?;
    let (name, q) = function_ref(path_name, params)?;
    let target = resolve_target(state.store.as_ref(), &name, q.as_ref()).await?;
    let request_id = nimbus_runtime::new_request_id();
    let req = InvokeRequest {
        version: target.version,
        reserved_concurrency: target.reserved,
        payload,
        invoked_arn: target.invoked_arn,
        client_context,
        request_id: request_id.clone(),
        log_tail: log_type == "Tail",
    };
    match invocation_type {
        "DryRun" => Ok(with_request_id(
            StatusCode::NO_CONTENT.into_response(),
            &request_id,
        )),
        "Event" => {
            // 202 only once the event is on disk: from here it runs at least once.
            state
                .events
                .accept(
                    &name,
                    q.as_ref().map(|q| q.to_string()).as_deref(),
                    req.payload,
                    request_id.clone(),
                    req.reserved_concurrency == Some(0),
                )
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceException",
                        e.to_string(),
                    )
                })?;
            Ok(with_request_id(
                StatusCode::ACCEPTED.into_response(),
                &request_id,
            ))
        }
        _ => {
            let outcome = state.runtime.invoke(req).await.map_err(invoke_error)?;
            Ok(sync_response(outcome, log_type == "Tail"))
        }
    }
}

pub(crate) fn invoke_error(e: InvokeError) -> ApiError {
    match e {
        InvokeError::Throttled { reason } => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Rate Exceeded.",
            );
            err.reason = Some(reason);
            err
        }
        InvokeError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            "the server is shutting down",
        ),
    }
}

// Lambda's response headers, as constants: a name given as a string is copied into a new
// buffer on every insert (`http` keeps only its standard names static).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
const EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
const FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
const LOG_RESULT: HeaderName = HeaderName::from_static("x-amz-log-result");

fn with_request_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn sync_response(o: InvokeOutcome, tail: bool) -> Response {
    let mut resp = Response::new(Body::from(o.payload));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&o.executed_version) {
        h.insert(EXECUTED_VERSION, v);
    }
    if o.function_error {
        h.insert(FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
    }
    if tail {
        let encoded = base64::engine::general_purpose::STANDARD.encode(o.log_tail.as_bytes());
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            h.insert(LOG_RESULT, v);
        }
    }
    with_request_id(resp, &o.request_id)
}
