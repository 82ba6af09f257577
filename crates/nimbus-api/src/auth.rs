//! SigV4 as a layer: when credentials are configured, a request must be signed by one of them.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::sigv4::{verify, SignedRequest};
use crate::{ApiState, MAX_BODY};

pub async fn verify_sigv4(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if state.credentials.is_empty() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large(format!("the request body exceeds {MAX_BODY} bytes"))
                .into_response()
        }
    };
    if let Some(refused) = check(&state, &parts, &bytes) {
        return refused;
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Checks that a request (its head and whole body) is signed by one of the configured
/// credentials: None if it is, the refusal (in the words of the protocol it was sent in) if
/// not. Callers skip it when no credentials are configured.
pub(crate) fn check(state: &ApiState, parts: &Parts, body: &[u8]) -> Option<Response> {
    let signed = SignedRequest {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    let lookup = |key: &str| {
        state
            .credentials
            .iter()
            .find(|c| c.access_key_id == key)
            .map(|c| c.secret_access_key.clone())
    };
    let e = verify(&signed, lookup, std::time::SystemTime::now()).err()?;
    Some(if crate::sqs::is_sqs_request(&parts.headers) {
        crate::sqs::auth_error(&e)
    } else {
        ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string()).into_response()
    })
}
