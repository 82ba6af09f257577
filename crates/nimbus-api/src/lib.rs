//! Nimbus's HTTP API: the AWS Lambda management and Invoke REST API that boto3 and the AWS CLI
//! speak (under `/2015-03-31/...` and friends), SigV4 verification as a layer in front of it,
//! and Nimbus's own endpoints under `/nimbus/v1` (logs, metrics, code download) plus
//! `/healthz`, Prometheus's `/metrics` and the OpenAPI document of it all at `/openapi.json`.
//! The API gateway's management routes (`/v2/...`, API Gateway v2's shape) come from
//! `nimbus-gateway` and sit behind the same SigV4 layer.
//!
//! Handlers are thin: they parse wire shapes, call the store and the runtime, and map errors.

mod auth;
mod error;
mod event_config;
mod functions;
mod invoke;
mod mappings;
mod nimbus;
pub mod provisioned;
mod schedules;
mod service;
mod sqs;
pub use nimbus_sigv4 as sigv4;
mod wire;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use nimbus_runtime::Runtime;
use nimbus_store::{BlobStore, Store};
use nimbus_telemetry::Metrics;

pub use error::ApiError;
pub use service::{service, ApiService};
pub use sigv4::Credentials;

/// Largest request body accepted at all (a 50 MB zip, base64-encoded, inside JSON). Smaller
/// per-operation limits are checked by the handlers so they can answer in Lambda's words.
const MAX_BODY: usize = 72 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState(Arc<ApiInner>);

pub struct ApiInner {
    pub store: Arc<dyn Store>,
    pub blobs: BlobStore,
    pub runtime: Arc<Runtime>,
    /// Durable asynchronous invocation (InvocationType=Event).
    pub events: nimbus_events::AsyncEvents,
    /// Fires schedules; told when the API changes one.
    pub scheduler: nimbus_events::Scheduler,
    /// Execution metrics: exported at `/metrics`, read by the series endpoint; the runtime
    /// records into the same registry.
    pub metrics: Metrics,
    /// When non-empty, every request except `/healthz` must carry a valid SigV4 signature.
    pub credentials: Vec<Credentials>,
    /// The API gateway, whose resources the `/v2/...` routes manage.
    pub gateway: Arc<nimbus_gateway::Gateway>,
    /// Built-in queues, served in SQS's JSON protocol at `POST /`.
    pub queues: nimbus_events::queues::Queues,
    /// Event source mappings (queues polled into functions).
    pub mappings: nimbus_events::mappings::Mappings,
}

impl std::ops::Deref for ApiState {
    type Target = ApiInner;
    fn deref(&self) -> &ApiInner {
        &self.0
    }
}

impl ApiState {
    pub fn new(inner: ApiInner) -> ApiState {
        ApiState(Arc::new(inner))
    }
}

/// The whole API as one router. The server runs it behind [`service`], which answers Invoke
/// itself.
pub fn router(state: ApiState) -> Router {
    use functions as f;
    let lambda = Router::new()
        .route(
            "/2015-03-31/functions",
            get(f::list_functions).post(f::create_function),
        )
        .route(
            "/2015-03-31/functions/",
            get(f::list_functions).post(f::create_function),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(f::get_function).delete(f::delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(f::get_function_configuration).put(f::update_function_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(f::update_function_code),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            get(f::list_versions).post(f::publish_version),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            get(f::list_aliases).post(f::create_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(f::get_alias)
                .put(f::update_alias)
                .delete(f::delete_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(f::put_concurrency).delete(f::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(f::get_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            get(provisioned::get)
                .put(provisioned::put)
                .delete(provisioned::delete),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(event_config::get)
                .put(event_config::put)
                .post(event_config::update)
                .delete(event_config::delete),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(event_config::list),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            get(f::list_tags)
                .post(f::tag_resource)
                .delete(f::untag_resource),
        )
        .route("/nimbus/v1/functions/{name}/logs", get(nimbus::logs))
        .route(
            "/nimbus/v1/functions/{name}/metrics",
            get(nimbus::function_metrics),
        )
        // Behind SigV4 like everything else: Prometheus, which cannot sign, can scrape it only
        // from a server without credentials.
        .route("/metrics", get(nimbus::prometheus))
        .route("/nimbus/v1/status", get(nimbus::status))
        .route(
            "/nimbus/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/nimbus/v1/schedules/{name}",
            get(schedules::get).delete(schedules::delete),
        )
        .route(
            "/nimbus/v1/schedules/{name}/enable",
            post(schedules::enable),
        )
        .route(
            "/nimbus/v1/schedules/{name}/disable",
            post(schedules::disable),
        )
        .route(
            "/2015-03-31/event-source-mappings/",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/2015-03-31/event-source-mappings",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get)
                .put(mappings::update)
                .delete(mappings::delete),
        )
        // Amazon SQS's JSON 1.0 protocol: the operation is in X-Amz-Target.
        .route("/", post(sqs::handle))
        // API Gateway v2's management API (HTTP APIs, routes, integrations, stages, ...).
        .merge(nimbus_gateway::admin::router(state.gateway.clone()))
        .fallback(nimbus::unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::verify_sigv4,
        ));
    Router::new()
        .route("/healthz", get(nimbus::healthz))
        .route("/openapi.json", get(nimbus::openapi))
        // Outside the SigV4 layer: GetFunction hands out this URL presigned, as Lambda does.
        .route("/nimbus/v1/code/{file}", get(nimbus::code))
        .merge(lambda)
        .method_not_allowed_fallback(nimbus::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_oversized_bodies))
        .with_state(state)
}

/// A request that announces a body over [`MAX_BODY`] is refused before any of it is read, so
/// a client cannot make the server wait on (or buffer) an upload it will refuse anyway.
async fn refuse_oversized_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match announced_too_large(req.headers()) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// The refusal for a request whose `Content-Length` is over [`MAX_BODY`].
fn announced_too_large(headers: &axum::http::HeaderMap) -> Option<ApiError> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    (announced > MAX_BODY as u64).then(|| {
        ApiError::too_large(format!(
            "the request body is {announced} bytes; the largest accepted is {MAX_BODY} bytes"
        ))
    })
}
