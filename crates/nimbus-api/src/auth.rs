//! SigV4 as a layer: when credentials are configured, a request must be signed by one of them.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
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
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or("");
    let signed = SignedRequest {
        method: parts.method.as_str(),
        raw_path,
        raw_query,
        headers: &parts.headers,
        body: &bytes,
    };
    let lookup = |key: &str| {
        state
            .credentials
            .iter()
            .find(|c| c.access_key_id == key)
            .map(|c| c.secret_access_key.clone())
    };
    if let Err(e) = verify(&signed, lookup, std::time::SystemTime::now()) {
        if crate::sqs::is_sqs_request(&parts.headers) {
            return crate::sqs::auth_error(&e);
        }
        return ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
