//! The API as the server runs it: `POST /2015-03-31/functions/{name}/invocations` (Invoke) is
//! answered here directly, every other request by the axum router ([`crate::router`]).
//!
//! Invoke is the one route on every synchronous invocation's path. Through the router it paid,
//! per request, for the route lookup, two middleware layers (each a boxed future), the
//! extractors' copies (the header map is cloned) and a boxed route service. Here it takes the
//! same steps in the same order, written out:
//! 1. a body announced over [`MAX_BODY`] is refused before any of it is read;
//! 2. the body is read, up to [`MAX_BODY`];
//! 3. with credentials configured, the SigV4 signature is checked ([`crate::auth::check`]);
//! 4. the path's `{name}` is percent-decoded and the query parsed;
//! 5. [`crate::invoke::invoke_function`] does the rest, as it does behind the router.
//!
//! Any other method on the Invoke path goes to the router, which answers it as before.
//!
//! Where the two differ, it is in how a refusal is worded: a name that is not UTF-8 once
//! decoded, a body sent without a length that runs past [`MAX_BODY`] and a body the client
//! stops sending get Lambda's JSON error (with `x-amzn-ErrorType`) here, where axum's
//! extractors answered in plain text. The body is read before the name is checked, as the
//! SigV4 layer already did when credentials are configured.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{Query, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::Service;

use crate::error::ApiError;
use crate::{ApiState, MAX_BODY};

/// The whole API as one tower service (see the module's comment). Cloning it is cheap.
#[derive(Clone)]
pub struct ApiService {
    state: ApiState,
    router: Router,
}

/// The API the server runs: [`crate::router`] with Invoke answered in front of it.
pub fn service(state: ApiState) -> ApiService {
    ApiService {
        router: crate::router(state.clone()),
        state,
    }
}

impl Service<Request> for ApiService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Neither side ever waits: the router is always ready (axum's `Router` says so).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::POST {
            if let Some(name) = invoke_path_name(req.uri().path()) {
                let name = name.to_owned();
                let state = self.state.clone();
                return Box::pin(async move { Ok(invoke(state, name, req).await) });
            }
        }
        let call = self.router.call(req);
        Box::pin(call)
    }
}

/// `{name}` (still percent-encoded) when `path` is exactly Invoke's path: one non-empty
/// segment between `/2015-03-31/functions/` and `/invocations`.
fn invoke_path_name(path: &str) -> Option<&str> {
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

async fn invoke(state: ApiState, encoded_name: String, req: Request) -> Response {
    match invoke_steps(&state, &encoded_name, req).await {
        Ok(resp) => resp,
        Err(refused) => refused,
    }
}

async fn invoke_steps(
    state: &ApiState,
    encoded_name: &str,
    req: Request,
) -> Result<Response, Response> {
    if let Some(e) = crate::announced_too_large(req.headers()) {
        return Err(e.into_response());
    }
    let (parts, body) = req.into_parts();
    let body = read_body(body).await.map_err(IntoResponse::into_response)?;
    if !state.credentials.is_empty() {
        if let Some(refused) = crate::auth::check(state, &parts, &body) {
            return Err(refused);
        }
    }
    let name = percent_encoding::percent_decode_str(encoded_name)
        .decode_utf8()
        .map_err(|_| {
            ApiError::invalid(format!(
                "the function name in the path ({encoded_name}) is not UTF-8 once percent-decoded"
            ))
            .into_response()
        })?;
    let params = match parts.uri.query() {
        None => HashMap::new(),
        Some(_) => {
            let Query(params) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
                .map_err(|e| {
                    ApiError::invalid(format!("the query string is malformed: {e}")).into_response()
                })?;
            params
        }
    };
    crate::invoke::invoke_function(state, &name, &params, &parts.headers, body)
        .await
        .map_err(IntoResponse::into_response)
}

/// The whole body, refused past [`MAX_BODY`] (a body sent without a length can still be too
/// long) and reported when the client stops sending it.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(
            format!("the request body exceeds {MAX_BODY} bytes"),
        )),
        Err(e) => Err(ApiError::invalid(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::invoke_path_name;

    #[test]
    fn only_invokes_exact_path_is_taken() {
        assert_eq!(
            invoke_path_name("/2015-03-31/functions/hello/invocations"),
            Some("hello")
        );
        assert_eq!(
            invoke_path_name("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello/invocations"),
            Some("arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ahello")
        );
        for other in [
            "/2015-03-31/functions//invocations",
            "/2015-03-31/functions/a/b/invocations",
            "/2015-03-31/functions/hello/invocations/",
            "/2015-03-31/functions/hello",
            "/2015-03-31/functions/hello/configuration",
            "/2015-03-31/functions/invocations",
            "/2016-03-31/functions/hello/invocations",
        ] {
            assert_eq!(invoke_path_name(other), None, "{other}");
        }
    }
}
