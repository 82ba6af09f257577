//! The data plane: the gateway listener's request handling. A request is mapped to an API (by
//! host name), a stage (by path prefix, else `$default`) and the deployment the stage serves,
//! then to a route, then sent to the route's integration; the answer is decorated (request id,
//! CORS) and measured (access log line, route metrics).
//!
//! What is served is an immutable [`Snapshot`] of every API's stages and their compiled
//! deployments, swapped whole by [`Gateway::reload`] after each management change, so requests
//! never wait on the store or on each other.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use nimbus_core::Limits;
use nimbus_runtime::{resolve_target, InvokeError, InvokeRequest, Runtime};
use nimbus_store::{Store, StoreError};

use crate::accesslog::{self, AccessLogs};
use crate::cors::CorsConfiguration;
use crate::event::{event_v1, event_v2, RequestInfo};
use crate::metrics::{Observation, RouteMetrics};
use crate::model::{
    ApiDoc, ApiMapping, DeploymentDoc, DomainDoc, FunctionTarget, IntegrationKind, ACCOUNT_ID,
    DEFAULT_STAGE,
};
use crate::proxy::{ForwardRequest, HttpBackend, Proxy};
use crate::response::{map_v1, map_v2};
use crate::routing::{RouteKey, RouteTable};

/// API Gateway's payload limit for HTTP APIs.
pub const MAX_REQUEST_BODY: usize = 10 * 1024 * 1024;
/// API Gateway's limit on the request line and header values of an HTTP API request together.
pub const MAX_REQUEST_HEAD: usize = 10 * 1024;
/// The host name suffix that addresses an API by id: `{apiId}.execute-api.localhost`.
pub const EXECUTE_API_DOMAIN: &str = "execute-api.localhost";

/// A deployment, compiled for serving.
pub struct Deployment {
    table: RouteTable<RouteTarget>,
    cors: Option<CorsConfiguration>,
}

enum RouteTarget {
    /// The route had no integration when deployed.
    Missing,
    Function {
        target: FunctionTarget,
        v1: bool,
        timeout: Duration,
    },
    Http(HttpBackend),
    Mock {
        status: StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
    },
}

impl Deployment {
    /// Compiles a stored deployment; an error names what is wrong with it.
    pub fn compile(doc: &DeploymentDoc) -> Result<Deployment, String> {
        let mut routes = Vec::with_capacity(doc.routes.len());
        for r in &doc.routes {
            let target = match &r.integration {
                None => RouteTarget::Missing,
                Some(i) => compile_integration(&i.kind, &i.payload_format_version, i.timeout_ms)
                    .map_err(|e| format!("route {}: {e}", r.route_key))?,
            };
            routes.push((r.route_key.clone(), target));
        }
        Ok(Deployment {
            table: RouteTable::build(routes).map_err(|e| e.to_string())?,
            cors: doc.cors.clone(),
        })
    }
}

fn compile_integration(
    kind: &IntegrationKind,
    payload_format_version: &str,
    timeout_ms: u64,
) -> Result<RouteTarget, String> {
    Ok(match kind {
        IntegrationKind::Function { uri } => RouteTarget::Function {
            target: uri
                .parse()
                .map_err(|e: crate::model::ModelError| e.to_string())?,
            v1: payload_format_version == "1.0",
            timeout: Duration::from_millis(timeout_ms),
        },
        IntegrationKind::Http {
            uri,
            method,
            request_parameters,
        } => RouteTarget::Http(
            HttpBackend::new(uri, method.as_deref(), Some(timeout_ms), request_parameters)
                .map_err(|e| e.to_string())?,
        ),
        IntegrationKind::Mock {
            status,
            headers,
            body,
        } => {
            let status = StatusCode::from_u16(*status)
                .map_err(|_| format!("mock status {status} is not an HTTP status"))?;
            let mut map = http::HeaderMap::new();
            for (k, v) in headers {
                let name = HeaderName::try_from(k.as_str())
                    .map_err(|_| format!("mock header name {k:?} is not valid"))?;
                let value = HeaderValue::try_from(v.as_str())
                    .map_err(|_| format!("mock header {k} has a value that is not valid"))?;
                map.append(name, value);
            }
            RouteTarget::Mock {
                status,
                headers: map,
                body: Bytes::from(body.clone()),
            }
        }
    })
}

struct StageView {
    name: String,
    deployment: Option<Arc<Deployment>>,
    variables: BTreeMap<String, String>,
    access_log_format: Option<String>,
}

struct ApiView {
    stages: HashMap<String, Arc<StageView>>,
    execute_api_disabled: bool,
}

/// Everything the data plane serves, as of the last reload.
#[derive(Default)]
pub struct Snapshot {
    apis: HashMap<String, ApiView>,
    /// Custom domain name → its mappings, longest mapping key first.
    domains: HashMap<String, Vec<ApiMapping>>,
}

/// Where the gateway listener is, for the invoke URLs the management API reports.
#[derive(Debug, Clone)]
pub struct PublicEndpoint {
    pub scheme: &'static str,
    pub port: u16,
}

pub struct Gateway {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    proxy: Proxy,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Compiled deployments by id (ids are unique across APIs); deployments never change.
    compiled: Mutex<HashMap<String, Arc<Deployment>>>,
    reload_lock: tokio::sync::Mutex<()>,
    pub access_logs: AccessLogs,
    pub metrics: Arc<RouteMetrics>,
    endpoint: RwLock<Option<PublicEndpoint>>,
}

impl Gateway {
    /// `log_dir` is where access logs go (`<log_dir>/<apiId>/<stage>.log`).
    pub fn new(store: Arc<dyn Store>, runtime: Arc<Runtime>, log_dir: PathBuf) -> Arc<Gateway> {
        Arc::new(Gateway {
            store,
            runtime,
            proxy: Proxy::new(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            compiled: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            access_logs: AccessLogs::start(log_dir),
            metrics: Arc::new(RouteMetrics::default()),
            endpoint: RwLock::new(None),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Records where the listener is (once bound).
    pub fn set_endpoint(&self, endpoint: PublicEndpoint) {
        *self.endpoint.write().unwrap_or_else(|p| p.into_inner()) = Some(endpoint);
    }

    /// `{scheme}://{apiId}.execute-api.localhost:{port}`, when the listener runs.
    pub fn api_endpoint(&self, api_id: &str) -> Option<String> {
        let e = self.endpoint.read().unwrap_or_else(|p| p.into_inner());
        e.as_ref()
            .map(|e| format!("{}://{api_id}.{EXECUTE_API_DOMAIN}:{}", e.scheme, e.port))
    }

    /// The URL a stage is invoked at: the API endpoint, plus `/{stage}` unless `$default`.
    pub fn invoke_url(&self, api_id: &str, stage: &str) -> Option<String> {
        let base = self.api_endpoint(api_id)?;
        Some(if stage == DEFAULT_STAGE {
            format!("{base}/")
        } else {
            format!("{base}/{stage}")
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds what is served from the store. A deployment that cannot be compiled (which
    /// the management API's checks should make impossible) leaves its stage unserved, logged.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _serial = self.reload_lock.lock().await;
        let mut apis = HashMap::new();
        let mut used = HashMap::new();
        for stored in self.store.list_gateway_apis().await? {
            let doc: ApiDoc = match serde_json::from_str(&stored.doc) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(api = %stored.api_id, error = %e, "a stored API cannot be read; not serving it");
                    continue;
                }
            };
            let mut stages = HashMap::new();
            for stage in doc.stages.values() {
                let deployment = match &stage.deployment_id {
                    None => None,
                    Some(id) => self.deployment(&doc.api_id, id).await,
                };
                if let (Some(d), Some(id)) = (&deployment, &stage.deployment_id) {
                    used.insert(id.clone(), d.clone());
                }
                stages.insert(
                    stage.stage_name.clone(),
                    Arc::new(StageView {
                        name: stage.stage_name.clone(),
                        deployment,
                        variables: stage.stage_variables.clone(),
                        access_log_format: stage.access_log_format.clone(),
                    }),
                );
            }
            apis.insert(
                doc.api_id.clone(),
                ApiView {
                    stages,
                    execute_api_disabled: doc.disable_execute_api_endpoint,
                },
            );
        }
        let mut domains = HashMap::new();
        for (name, doc) in self.store.list_gateway_domains().await? {
            match serde_json::from_str::<DomainDoc>(&doc) {
                Ok(d) => {
                    let mut mappings = d.mappings;
                    mappings.sort_by_key(|m| std::cmp::Reverse(m.api_mapping_key.len()));
                    domains.insert(name.to_ascii_lowercase(), mappings);
                }
                Err(e) => {
                    tracing::error!(domain = %name, error = %e, "a stored domain name cannot be read; not serving it")
                }
            }
        }
        *self.compiled.lock().unwrap_or_else(|p| p.into_inner()) = used;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Snapshot { apis, domains });
        Ok(())
    }

    async fn deployment(&self, api_id: &str, id: &str) -> Option<Arc<Deployment>> {
        if let Some(d) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Some(d.clone());
        }
        let stored = match self.store.get_gateway_deployment(api_id, id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(api = %api_id, deployment = %id, error = %e, "a stage's deployment cannot be read; not serving the stage");
                return None;
            }
        };
        let compiled = serde_json::from_str::<DeploymentDoc>(&stored.doc)
            .map_err(|e| e.to_string())
            .and_then(|d| Deployment::compile(&d));
        match compiled {
            Ok(d) => {
                let d = Arc::new(d);
                self.compiled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_string(), d.clone());
                Some(d)
            }
            Err(e) => {
                tracing::error!(api = %api_id, deployment = %id, error = %e, "a deployment cannot be compiled; not serving it");
                None
            }
        }
    }

    /// Serves connections from `listener` until `shutdown` resolves, HTTP/1.1 and HTTP/2
    /// (over TLS when `tls` is given, chosen by ALPN).
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut stop = stop_rx.clone();
        loop {
            let (stream, remote) = tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let tls = tls.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let https = tls.is_some();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let gw = gw.clone();
                        async move {
                            Ok::<_, Infallible>(gw.handle(req.map(Body::new), remote, https).await)
                        }
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match tls {
                    None => {
                        let conn =
                            builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                            }
                        }
                    }
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(
                            Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let conn =
                            builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                            }
                        }
                    }
                }
            });
        }
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        req: Request<Body>,
        remote: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut ctx = Ctx {
            request_id: new_request_id(),
            time: time::OffsetDateTime::now_utc(),
            source_ip: remote.ip(),
            method: req.method().as_str().to_string(),
            protocol: protocol(req.version()),
            api_id: String::new(),
            stage: String::new(),
            route_key: "-".into(),
            domain_name: String::new(),
            path: req.uri().path().to_string(),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            integration: None,
        };
        let (mut resp, stage, cors) = self.route(req, &mut ctx, https).await;
        if let Some((cors, request_headers)) = &cors {
            cors.apply(request_headers, resp.headers_mut());
        }
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            resp.headers_mut().insert("apigw-requestid", v);
        }
        let latency = started.elapsed();
        if !ctx.api_id.is_empty() {
            self.metrics.record(&Observation {
                api_id: &ctx.api_id,
                stage: &ctx.stage,
                route: &ctx.route_key,
                status: resp.status().as_u16(),
                latency,
                integration_latency: ctx.integration.as_ref().map(|i| i.latency),
            });
        }
        if let Some(format) = stage.as_ref().and_then(|s| s.access_log_format.as_deref()) {
            let length = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| {
                    http_body::Body::size_hint(resp.body())
                        .exact()
                        .map(|n| n.to_string())
                });
            let status = resp.status().as_u16();
            let line = accesslog::render(format, |v| {
                ctx.variable(v, status, latency, length.as_deref())
            });
            self.access_logs.write(&ctx.api_id, &ctx.stage, line);
        }
        resp
    }

    /// Finds the API, stage, deployment and route, and calls the integration.
    async fn route(
        &self,
        req: Request<Body>,
        ctx: &mut Ctx,
        https: bool,
    ) -> (
        Response<Body>,
        Option<Arc<StageView>>,
        Option<(CorsConfiguration, http::HeaderMap)>,
    ) {
        let head = req.uri().to_string().len()
            + req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum::<usize>();
        if head > MAX_REQUEST_HEAD {
            return (
                message(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "Request Header Fields Too Large",
                ),
                None,
                None,
            );
        }
        let snap = self.snapshot();
        let host = request_host(&req);
        ctx.domain_name = host.clone();
        let path = req.uri().path().to_string();
        let Some((api_id, stage, rest)) = select_stage(&snap, &host, &path) else {
            return (message(StatusCode::NOT_FOUND, "Not Found"), None, None);
        };
        ctx.api_id = api_id.to_string();
        ctx.stage = stage.name.clone();
        let Some(deployment) = stage.deployment.clone() else {
            return (
                message(StatusCode::NOT_FOUND, "Not Found"),
                Some(stage),
                None,
            );
        };
        // With CORS configured, the request's headers are kept for decorating the response.
        let cors = deployment.cors.clone().map(|c| (c, req.headers().clone()));
        // API Gateway answers CORS preflights itself, whatever the routes.
        if let Some((cors, _)) = &cors {
            if let Some(headers) = cors.preflight(req.method(), req.headers()) {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                *resp.headers_mut() = headers;
                return (resp, Some(stage), None);
            }
        }
        let rest = rest.to_string();
        let found = match deployment.table.find(req.method().as_str(), &rest) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return (
                    message(StatusCode::NOT_FOUND, "Not Found"),
                    Some(stage),
                    cors,
                )
            }
            Err(e) => {
                return (
                    message(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}")),
                    Some(stage),
                    cors,
                )
            }
        };
        ctx.route_key = found.route_key.to_string();
        let announced = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
            return (
                message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
                Some(stage),
                cors,
            );
        }
        let is_default_route = matches!(found.route_key, RouteKey::Default);
        let params = found.path_parameters;
        let resp = match found.value {
            RouteTarget::Missing => {
                ctx.fail(Duration::ZERO, "the route has no integration");
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            RouteTarget::Mock {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::new(Body::from(body.clone()));
                *resp.status_mut() = *status;
                *resp.headers_mut() = headers.clone();
                resp
            }
            RouteTarget::Http(backend) => {
                let context = ctx.mapping_context();
                let (parts, body) = req.into_parts();
                let body = Body::new(http_body_util::Limited::new(body, MAX_REQUEST_BODY));
                let began = Instant::now();
                let forwarded = self
                    .proxy
                    .forward(
                        backend,
                        ForwardRequest {
                            method: parts.method,
                            path: &rest,
                            raw_query: parts.uri.query().unwrap_or(""),
                            headers: parts.headers,
                            body,
                            path_parameters: &params,
                            is_default_route,
                            stage_variables: &stage.variables,
                            context: &context,
                            client_ip: ctx.source_ip,
                            host: &host,
                            https,
                        },
                    )
                    .await;
                match forwarded {
                    Ok(resp) => {
                        ctx.succeed(began.elapsed(), resp.status().as_u16());
                        resp
                    }
                    Err(e) => {
                        ctx.fail(began.elapsed(), &e.to_string());
                        e.response()
                    }
                }
            }
            RouteTarget::Function {
                target,
                v1,
                timeout,
            } => {
                let (parts, body) = req.into_parts();
                let body = match http_body_util::Limited::new(body, MAX_REQUEST_BODY)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        let too_large = e
                            .downcast_ref::<http_body_util::LengthLimitError>()
                            .is_some();
                        let resp = if too_large {
                            message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
                        } else {
                            message(
                                StatusCode::BAD_REQUEST,
                                "Bad Request: the request body could not be read",
                            )
                        };
                        return (resp, Some(stage), cors);
                    }
                };
                let info = RequestInfo {
                    method: parts.method.as_str(),
                    raw_path: &path,
                    raw_query: parts.uri.query().unwrap_or(""),
                    headers: &parts.headers,
                    body: &body,
                    route_key: &ctx.route_key,
                    path_parameters: &params,
                    stage: &stage.name,
                    stage_variables: &stage.variables,
                    api_id,
                    domain_name: &host,
                    account_id: ACCOUNT_ID,
                    request_id: &ctx.request_id,
                    source_ip: &ctx.source_ip.to_string(),
                    protocol: ctx.protocol,
                    time: ctx.time,
                    authorizer: None,
                };
                let event = if *v1 {
                    event_v1(&info)
                } else {
                    event_v2(&info)
                };
                let began = Instant::now();
                let resp = self.invoke(target, *v1, *timeout, event, ctx).await;
                if let Some(i) = &mut ctx.integration {
                    i.latency = began.elapsed();
                }
                resp
            }
        };
        (resp, Some(stage), cors)
    }

    async fn invoke(
        &self,
        target: &FunctionTarget,
        v1: bool,
        timeout: Duration,
        event: Vec<u8>,
        ctx: &mut Ctx,
    ) -> Response<Body> {
        if event.len() > Limits::SYNC_PAYLOAD_BYTES {
            ctx.fail(
                Duration::ZERO,
                "the event is larger than Lambda's 6 MB payload limit",
            );
            return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
        let resolved = match resolve_target(
            self.store.as_ref(),
            &target.name,
            target.qualifier.as_ref(),
        )
        .await
        {
            Ok(t) => t,
            Err(e) => {
                ctx.fail(Duration::ZERO, &format!("the integration's function: {e}"));
                return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            }
        };
        let req = InvokeRequest {
            version: resolved.version,
            reserved_concurrency: resolved.reserved,
            payload: Bytes::from(event),
            invoked_arn: resolved.invoked_arn,
            client_context: None,
            request_id: nimbus_runtime::new_request_id(),
            log_tail: false,
        };
        match tokio::time::timeout(timeout, self.runtime.invoke(req)).await {
            Err(_) => {
                ctx.fail(timeout, "the integration timed out");
                message(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out")
            }
            Ok(Err(InvokeError::Throttled { reason })) => {
                ctx.fail(
                    Duration::ZERO,
                    &format!("the function was throttled: {reason}"),
                );
                message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            }
            Ok(Err(InvokeError::ShuttingDown)) => {
                ctx.fail(Duration::ZERO, "the server is shutting down");
                message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            }
            Ok(Ok(outcome)) if outcome.function_error => {
                ctx.fail(Duration::ZERO, &function_error_message(&outcome.payload));
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            Ok(Ok(outcome)) => {
                let mapped = if v1 {
                    map_v1(&outcome.payload)
                } else {
                    map_v2(&outcome.payload)
                };
                match mapped {
                    Ok(m) => {
                        ctx.succeed(Duration::ZERO, 200);
                        let mut resp = Response::new(Body::from(m.body));
                        *resp.status_mut() = m.status;
                        *resp.headers_mut() = m.headers;
                        resp
                    }
                    Err(e) => {
                        ctx.fail(
                            Duration::ZERO,
                            &format!("the function's result is not a valid response: {e}"),
                        );
                        message(StatusCode::BAD_GATEWAY, "Internal Server Error")
                    }
                }
            }
        }
    }
}

/// `errorType: errorMessage` of a function error payload, for the access log.
fn function_error_message(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let kind = v
        .get("errorType")
        .and_then(|t| t.as_str())
        .unwrap_or("Error");
    let msg = v.get("errorMessage").and_then(|t| t.as_str()).unwrap_or("");
    format!("the function failed: {kind}: {msg}")
}

/// The API, stage and the rest of the path a request addresses. `{apiId}.execute-api.*`
/// hosts pick the stage by the first path segment, else `$default`; a custom domain name by
/// its API mappings.
fn select_stage<'s>(
    snap: &'s Snapshot,
    host: &str,
    path: &'s str,
) -> Option<(&'s str, Arc<StageView>, &'s str)> {
    if let Some(mappings) = snap.domains.get(host) {
        for m in mappings {
            let rest = if m.api_mapping_key.is_empty() {
                path
            } else {
                let key = m.api_mapping_key.trim_matches('/');
                let Some(after) = path.strip_prefix('/').and_then(|p| p.strip_prefix(key)) else {
                    continue;
                };
                if !(after.is_empty() || after.starts_with('/')) {
                    continue;
                }
                if after.is_empty() {
                    "/"
                } else {
                    after
                }
            };
            let (api_id, api) = snap.apis.get_key_value(m.api_id.as_str())?;
            let stage = api.stages.get(&m.stage)?.clone();
            return Some((api_id.as_str(), stage, rest));
        }
        return None;
    }
    let (id, domain) = host.split_once('.')?;
    if !(domain == "execute-api" || domain.starts_with("execute-api.")) {
        return None;
    }
    let (api_id, api) = snap.apis.get_key_value(id)?;
    if api.execute_api_disabled {
        return None;
    }
    let first = path.strip_prefix('/')?;
    let (segment, after) = match first.find('/') {
        Some(i) => (&first[..i], &first[i..]),
        None => (first, "/"),
    };
    if segment != DEFAULT_STAGE {
        if let Some(stage) = api.stages.get(segment) {
            return Some((api_id.as_str(), stage.clone(), after));
        }
    }
    let stage = api.stages.get(DEFAULT_STAGE)?.clone();
    Some((api_id.as_str(), stage, path))
}

/// The host the client addressed, without port, lower-cased (HTTP/2's authority or Host).
fn request_host(req: &Request<Body>) -> String {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| match h.rsplit_once(':') {
                    Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                        host.to_string()
                    }
                    _ => h.to_string(),
                })
        })
        .unwrap_or_default();
    raw.trim_end_matches('.').to_ascii_lowercase()
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A request id in the shape API Gateway's have (`Ym2FfhJyoAMEPeg=`).
fn new_request_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// API Gateway's `{"message": ...}` answers.
pub fn message(status: StatusCode, text: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": text }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// What one request's access log line and metrics need.
struct Ctx {
    request_id: String,
    time: time::OffsetDateTime,
    source_ip: IpAddr,
    method: String,
    protocol: &'static str,
    api_id: String,
    stage: String,
    route_key: String,
    domain_name: String,
    path: String,
    user_agent: Option<String>,
    integration: Option<IntegrationResult>,
}

struct IntegrationResult {
    latency: Duration,
    status: Option<u16>,
    error: Option<String>,
}

impl Ctx {
    fn succeed(&mut self, latency: Duration, status: u16) {
        self.integration = Some(IntegrationResult {
            latency,
            status: Some(status),
            error: None,
        });
    }

    fn fail(&mut self, latency: Duration, error: &str) {
        self.integration = Some(IntegrationResult {
            latency,
            status: None,
            error: Some(error.to_string()),
        });
    }

    /// The `$context` variables HTTP integrations' parameter mapping may read.
    fn mapping_context(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert("requestId", self.request_id.clone());
        m.insert("apiId", self.api_id.clone());
        m.insert("stage", self.stage.clone());
        m.insert("routeKey", self.route_key.clone());
        m.insert("httpMethod", self.method.clone());
        m.insert("path", self.path.clone());
        m.insert("protocol", self.protocol.to_string());
        m.insert("domainName", self.domain_name.clone());
        m.insert("identity.sourceIp", self.source_ip.to_string());
        m.insert("requestTimeEpoch", self.epoch_ms().to_string());
        m.insert("accountId", ACCOUNT_ID.to_string());
        if let Some(ua) = &self.user_agent {
            m.insert("identity.userAgent", ua.clone());
        }
        m
    }

    fn epoch_ms(&self) -> i128 {
        self.time.unix_timestamp_nanos() / 1_000_000
    }

    fn variable(
        &self,
        name: &str,
        status: u16,
        latency: Duration,
        length: Option<&str>,
    ) -> Option<String> {
        let integration = self.integration.as_ref();
        Some(match name {
            "requestId" => self.request_id.clone(),
            "identity.sourceIp" => self.source_ip.to_string(),
            "identity.userAgent" => self.user_agent.clone()?,
            "requestTime" => self.time.format(&REQUEST_TIME).ok()?,
            "requestTimeEpoch" => self.epoch_ms().to_string(),
            "httpMethod" => self.method.clone(),
            "routeKey" => self.route_key.clone(),
            "status" => status.to_string(),
            "protocol" => self.protocol.to_string(),
            "responseLength" => length?.to_string(),
            "responseLatency" => latency.as_millis().to_string(),
            "integrationLatency" | "integration.latency" => {
                integration?.latency.as_millis().to_string()
            }
            "integrationStatus" | "integration.integrationStatus" | "integration.status" => {
                integration?.status?.to_string()
            }
            "integrationErrorMessage" | "integration.error" | "error.message" => {
                integration?.error.clone()?
            }
            "apiId" => self.api_id.clone(),
            "stage" => self.stage.clone(),
            "path" => self.path.clone(),
            "domainName" => self.domain_name.clone(),
            "domainPrefix" => self.domain_name.split('.').next()?.to_string(),
            "accountId" => ACCOUNT_ID.to_string(),
            _ => return None,
        })
    }
}

/// `12/Mar/2020:19:03:58 +0000`, as API Gateway writes `$context.requestTime`.
const REQUEST_TIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str) -> Arc<StageView> {
        Arc::new(StageView {
            name: name.into(),
            deployment: None,
            variables: BTreeMap::new(),
            access_log_format: None,
        })
    }

    fn snapshot() -> Snapshot {
        let mut apis = HashMap::new();
        apis.insert(
            "abc123".to_string(),
            ApiView {
                stages: [("$default", stage("$default")), ("prod", stage("prod"))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                execute_api_disabled: false,
            },
        );
        apis.insert(
            "nodefault".to_string(),
            ApiView {
                stages: [("dev".to_string(), stage("dev"))].into_iter().collect(),
                execute_api_disabled: false,
            },
        );
        apis.insert(
            "hidden".to_string(),
            ApiView {
                stages: [("$default".to_string(), stage("$default"))]
                    .into_iter()
                    .collect(),
                execute_api_disabled: true,
            },
        );
        let mapping = |id: &str, api: &str, stage: &str, key: &str| ApiMapping {
            api_mapping_id: id.into(),
            api_id: api.into(),
            stage: stage.into(),
            api_mapping_key: key.into(),
        };
        let mut domains = HashMap::new();
        // Longest key first, as reload sorts them.
        domains.insert(
            "api.example.test".to_string(),
            vec![
                mapping("m2", "nodefault", "dev", "v2/beta"),
                mapping("m1", "abc123", "prod", "v1"),
                mapping("m0", "abc123", "$default", ""),
            ],
        );
        Snapshot { apis, domains }
    }

    #[test]
    fn hosts_and_stage_prefixes_select_the_stage() {
        let snap = snapshot();
        // host, path → (api, stage, rest of the path)
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "abc123.execute-api.localhost",
                "/items/1",
                Some(("abc123", "$default", "/items/1")),
            ),
            (
                "abc123.execute-api.localhost",
                "/prod/items/1",
                Some(("abc123", "prod", "/items/1")),
            ),
            (
                "abc123.execute-api.localhost",
                "/prod",
                Some(("abc123", "prod", "/")),
            ),
            (
                "abc123.execute-api.localhost",
                "/production/x",
                Some(("abc123", "$default", "/production/x")),
            ),
            // `$default` is not a path prefix.
            (
                "abc123.execute-api.localhost",
                "/$default/x",
                Some(("abc123", "$default", "/$default/x")),
            ),
            (
                "abc123.execute-api.us-east-1.amazonaws.com",
                "/",
                Some(("abc123", "$default", "/")),
            ),
            (
                "nodefault.execute-api.localhost",
                "/dev/a",
                Some(("nodefault", "dev", "/a")),
            ),
            ("nodefault.execute-api.localhost", "/a", None),
            ("hidden.execute-api.localhost", "/", None),
            ("nope.execute-api.localhost", "/", None),
            ("abc123.example.com", "/", None),
            ("localhost", "/", None),
            ("", "/", None),
            (
                "api.example.test",
                "/v1/items",
                Some(("abc123", "prod", "/items")),
            ),
            ("api.example.test", "/v1", Some(("abc123", "prod", "/"))),
            (
                "api.example.test",
                "/v1x/items",
                Some(("abc123", "$default", "/v1x/items")),
            ),
            (
                "api.example.test",
                "/v2/beta/z",
                Some(("nodefault", "dev", "/z")),
            ),
            (
                "api.example.test",
                "/other",
                Some(("abc123", "$default", "/other")),
            ),
        ];
        for (host, path, want) in cases {
            let got = select_stage(&snap, host, path).map(|(a, s, rest)| (a, s.name.clone(), rest));
            let want = want.map(|(a, s, r)| (a, s.to_string(), r));
            assert_eq!(got, want, "{host} {path}");
        }
    }

    #[test]
    fn hosts_are_read_without_port_and_case() {
        let req = |host: &str| {
            Request::builder()
                .uri("/x")
                .header(HOST, host)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(
            request_host(&req("ABC.Execute-API.localhost:8080")),
            "abc.execute-api.localhost"
        );
        assert_eq!(request_host(&req("api.example.test.")), "api.example.test");
        assert_eq!(request_host(&req("[::1]:8080")), "[::1]");
        let h2 = Request::builder()
            .uri("http://abc.execute-api.localhost:9/x")
            .body(Body::empty())
            .unwrap();
        assert_eq!(request_host(&h2), "abc.execute-api.localhost");
    }

    #[test]
    fn request_ids_look_like_api_gateways() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 16);
        assert!(a.ends_with('='));
        assert_ne!(a, b);
    }
}
