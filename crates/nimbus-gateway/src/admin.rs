//! The gateway's management API in Amazon API Gateway v2's REST shape (`/v2/apis`, routes,
//! integrations, stages, deployments, domain names and API mappings), so boto3's
//! `apigatewayv2` client and the AWS CLI manage Nimbus's HTTP APIs as they manage AWS's.
//!
//! Every change is a read-modify-write of the API's stored document under its revision (retried
//! when another writer got there first), followed by the auto-deployment of stages that ask
//! for it and a reload of what the data plane serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nimbus_store::{now_ms, GatewayDeploymentDoc, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accesslog;
use crate::cors::CorsConfiguration;
use crate::model::{
    check_stage_name, check_stage_variables, ApiDoc, ApiMapping, DeploymentDoc, DomainDoc,
    FunctionTarget, Integration, IntegrationKind, Route, Stage, DEFAULT_STAGE, MAX_TIMEOUT_MS,
    MIN_TIMEOUT_MS,
};
use crate::routing::{RouteKey, RouteTable};
use crate::server::{Deployment, Gateway};

/// An error in API Gateway's REST shape: the status, `x-amzn-ErrorType` and `{"message"}`.
#[derive(Debug)]
pub struct AdminError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl AdminError {
    fn bad(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            kind: "BadRequestException",
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::NOT_FOUND,
            kind: "NotFoundException",
            message: message.into(),
        }
    }
    fn conflict(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::CONFLICT,
            kind: "ConflictException",
            message: message.into(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        match e {
            StoreError::NotFound(what) => {
                AdminError::not_found(format!("Invalid {what}: not found"))
            }
            StoreError::Conflict(m) => AdminError::conflict(m),
            StoreError::PreconditionFailed(m) => AdminError::conflict(m),
            StoreError::Invalid(m) => AdminError::bad(m),
            StoreError::Backend(m) => AdminError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "InternalServerError",
                message: m,
            },
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({ "message": self.message, "__type": self.kind })),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        resp
    }
}

type AdminResult<T> = Result<T, AdminError>;

/// The management routes, for the management API's router (which puts SigV4 in front).
pub fn router<S: Clone + Send + Sync + 'static>(gw: Arc<Gateway>) -> Router<S> {
    Router::new()
        .route("/v2/apis", get(list_apis).post(create_api))
        .route(
            "/v2/apis/{api_id}",
            get(get_api).patch(update_api).delete(delete_api),
        )
        .route("/v2/apis/{api_id}/cors", axum::routing::delete(delete_cors))
        .route(
            "/v2/apis/{api_id}/routes",
            get(list_routes).post(create_route),
        )
        .route(
            "/v2/apis/{api_id}/routes/{route_id}",
            get(get_route).patch(update_route).delete(delete_route),
        )
        .route(
            "/v2/apis/{api_id}/integrations",
            get(list_integrations).post(create_integration),
        )
        .route(
            "/v2/apis/{api_id}/integrations/{integration_id}",
            get(get_integration)
                .patch(update_integration)
                .delete(delete_integration),
        )
        .route(
            "/v2/apis/{api_id}/stages",
            get(list_stages).post(create_stage),
        )
        .route(
            "/v2/apis/{api_id}/stages/{stage}",
            get(get_stage).patch(update_stage).delete(delete_stage),
        )
        .route(
            "/v2/apis/{api_id}/deployments",
            get(list_deployments).post(create_deployment),
        )
        .route(
            "/v2/apis/{api_id}/deployments/{deployment_id}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/v2/domainnames", get(list_domains).post(create_domain))
        .route(
            "/v2/domainnames/{domain}",
            get(get_domain).delete(delete_domain),
        )
        .route(
            "/v2/domainnames/{domain}/apimappings",
            get(list_mappings).post(create_mapping),
        )
        .route(
            "/v2/domainnames/{domain}/apimappings/{mapping_id}",
            get(get_mapping).delete(delete_mapping),
        )
        .with_state(gw)
}

type Gw = State<Arc<Gateway>>;

/// A request body: JSON object, with the field at fault named when it does not parse.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = AdminError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AdminError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| AdminError::bad(format!("the request body could not be read: {e}")))?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Body).map_err(|e| {
            let path = e.path().to_string();
            if path == "." || path.is_empty() {
                AdminError::bad(format!("the request body is not valid: {}", e.inner()))
            } else {
                AdminError::bad(format!("{path} is not valid: {}", e.inner()))
            }
        })
    }
}

// ---- ids, times, documents ----

fn new_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn iso(ms: i64) -> String {
    nimbus_telemetry::utc_timestamp(ms, "Z")
}

async fn load(gw: &Gateway, api_id: &str) -> AdminResult<(ApiDoc, u64)> {
    let stored = gw
        .store()
        .get_gateway_api(api_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => {
                AdminError::not_found(format!("Invalid API identifier specified {api_id}"))
            }
            e => e.into(),
        })?;
    let doc: ApiDoc = serde_json::from_str(&stored.doc).map_err(|e| AdminError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "InternalServerError",
        message: format!("the stored API {api_id} cannot be read: {e}"),
    })?;
    Ok((doc, stored.revision))
}

/// Applies `change` to the API's document and stores it, retrying on a concurrent write;
/// then auto-deploys (when `redeploy`) and reloads the data plane. Returns what `change`
/// returned.
async fn modify<T>(
    gw: &Gateway,
    api_id: &str,
    redeploy: bool,
    change: impl Fn(&mut ApiDoc) -> AdminResult<T>,
) -> AdminResult<T> {
    for _ in 0..8 {
        let (mut doc, revision) = load(gw, api_id).await?;
        let out = change(&mut doc)?;
        if redeploy {
            auto_deploy(gw, &mut doc).await?;
        }
        let text = serde_json::to_string(&doc).map_err(|e| AdminError::bad(e.to_string()))?;
        match gw
            .store()
            .put_gateway_api(api_id, text, Some(revision))
            .await
        {
            Ok(_) => {
                reload(gw).await;
                return Ok(out);
            }
            Err(StoreError::PreconditionFailed(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError {
        status: StatusCode::TOO_MANY_REQUESTS,
        kind: "TooManyRequestsException",
        message: format!("API {api_id} is being changed by other requests; retry"),
    })
}

async fn reload(gw: &Gateway) {
    if let Err(e) = gw.reload().await {
        tracing::error!(error = %e, "reloading the gateway's routes failed");
    }
}

/// Stores a new deployment of `doc` as it is now, after checking it compiles.
async fn deploy(
    gw: &Gateway,
    doc: &ApiDoc,
    description: String,
    auto: bool,
) -> AdminResult<DeploymentDoc> {
    let deployment = doc.snapshot(new_id(10), description, now_ms(), auto);
    Deployment::compile(&deployment)
        .map_err(|e| AdminError::bad(format!("the API cannot be deployed: {e}")))?;
    let text = serde_json::to_string(&deployment).map_err(|e| AdminError::bad(e.to_string()))?;
    gw.store()
        .put_gateway_deployment(
            &doc.api_id,
            GatewayDeploymentDoc {
                deployment_id: deployment.deployment_id.clone(),
                created_ms: deployment.created_ms,
                doc: text,
            },
        )
        .await?;
    Ok(deployment)
}

/// Stages with `autoDeploy` get a new deployment of the changed API.
async fn auto_deploy(gw: &Gateway, doc: &mut ApiDoc) -> AdminResult<()> {
    if !doc.stages.values().any(|s| s.auto_deploy) {
        return Ok(());
    }
    let d = deploy(gw, doc, "Automatic deployment".into(), true).await?;
    let now = now_ms();
    for stage in doc.stages.values_mut().filter(|s| s.auto_deploy) {
        stage.deployment_id = Some(d.deployment_id.clone());
        stage.last_updated_ms = now;
    }
    Ok(())
}

// ---- APIs ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiInput {
    name: Option<String>,
    protocol_type: Option<String>,
    description: Option<String>,
    cors_configuration: Option<CorsConfiguration>,
    disable_execute_api_endpoint: Option<bool>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// Quick create: a function or URL integrated with a `$default` route (or `routeKey`)
    /// and a `$default` auto-deploy stage.
    target: Option<String>,
    route_key: Option<String>,
    api_key_selection_expression: Option<String>,
    route_selection_expression: Option<String>,
    version: Option<String>,
}

fn check_name(name: &str) -> AdminResult<()> {
    if name.trim().is_empty() || name.len() > 128 {
        return Err(AdminError::bad(format!(
            "name {name:?} must be 1 to 128 characters long"
        )));
    }
    Ok(())
}

fn check_cors(cors: &Option<CorsConfiguration>) -> AdminResult<()> {
    if let Some(c) = cors {
        c.validate()
            .map_err(|e| AdminError::bad(format!("corsConfiguration: {e}")))?;
    }
    Ok(())
}

fn api_json(gw: &Gateway, doc: &ApiDoc) -> Value {
    let mut v = json!({
        "apiId": doc.api_id,
        "name": doc.name,
        "protocolType": "HTTP",
        "routeSelectionExpression": "${request.method} ${request.path}",
        "apiKeySelectionExpression": "$request.header.x-api-key",
        "createdDate": iso(doc.created_ms),
        "disableExecuteApiEndpoint": doc.disable_execute_api_endpoint,
        "tags": doc.tags,
    });
    if let Some(e) = gw.api_endpoint(&doc.api_id) {
        v["apiEndpoint"] = json!(e);
    }
    if !doc.description.is_empty() {
        v["description"] = json!(doc.description);
    }
    if let Some(c) = &doc.cors {
        v["corsConfiguration"] = json!(c);
    }
    // Nimbus's addition: each stage and where it is served, so a listing is enough to call it.
    v["stages"] = doc
        .stages
        .values()
        .map(|s| {
            json!({
                "name": s.stage_name,
                "invokeUrl": gw.invoke_url(&doc.api_id, &s.stage_name),
            })
        })
        .collect();
    v
}

async fn create_api(State(gw): Gw, Body(input): Body<ApiInput>) -> AdminResult<Response> {
    let name = input
        .name
        .ok_or_else(|| AdminError::bad("name is required"))?;
    check_name(&name)?;
    match input.protocol_type.as_deref() {
        Some("HTTP") => {}
        Some("WEBSOCKET") => {
            return Err(AdminError::bad(
                "protocolType WEBSOCKET is not supported yet; only HTTP APIs",
            ))
        }
        Some(other) => {
            return Err(AdminError::bad(format!(
                "protocolType {other:?} is not one of HTTP, WEBSOCKET"
            )))
        }
        None => return Err(AdminError::bad("protocolType is required (HTTP)")),
    }
    let _ = (
        input.api_key_selection_expression,
        input.route_selection_expression,
        input.version,
    );
    check_cors(&input.cors_configuration)?;
    let now = now_ms();
    let mut doc = ApiDoc {
        api_id: new_id(10),
        name,
        description: input.description.unwrap_or_default(),
        created_ms: now,
        cors: input.cors_configuration,
        disable_execute_api_endpoint: input.disable_execute_api_endpoint.unwrap_or(false),
        tags: input.tags,
        routes: BTreeMap::new(),
        integrations: BTreeMap::new(),
        stages: BTreeMap::new(),
    };
    if let Some(target) = input.target {
        let kind = if target.starts_with("http://") || target.starts_with("https://") {
            IntegrationKind::Http {
                uri: target,
                method: None,
                request_parameters: BTreeMap::new(),
            }
        } else {
            IntegrationKind::Function { uri: target }
        };
        let http = matches!(kind, IntegrationKind::Http { .. });
        let integration = Integration {
            integration_id: new_id(7),
            kind,
            payload_format_version: if http { "1.0" } else { "2.0" }.into(),
            timeout_ms: MAX_TIMEOUT_MS,
            description: String::new(),
        };
        check_integration(&gw, &integration).await?;
        let route_key = parse_route_key(input.route_key.as_deref().unwrap_or("$default"))?;
        let route = Route {
            route_id: new_id(7),
            route_key,
            target: Some(format!("integrations/{}", integration.integration_id)),
        };
        doc.integrations
            .insert(integration.integration_id.clone(), integration);
        doc.routes.insert(route.route_id.clone(), route);
        doc.stages.insert(
            DEFAULT_STAGE.into(),
            Stage {
                stage_name: DEFAULT_STAGE.into(),
                deployment_id: None,
                auto_deploy: true,
                stage_variables: BTreeMap::new(),
                description: String::new(),
                access_log_destination: None,
                access_log_format: None,
                created_ms: now,
                last_updated_ms: now,
            },
        );
    } else if input.route_key.is_some() {
        return Err(AdminError::bad(
            "routeKey is only accepted with target (quick create)",
        ));
    }
    let text = serde_json::to_string(&doc).map_err(|e| AdminError::bad(e.to_string()))?;
    gw.store().put_gateway_api(&doc.api_id, text, None).await?;
    if !doc.stages.is_empty() {
        let api_id = doc.api_id.clone();
        doc = modify(&gw, &api_id, true, |d| Ok(d.clone())).await?;
    }
    reload(&gw).await;
    Ok((StatusCode::CREATED, Json(api_json(&gw, &doc))).into_response())
}

async fn list_apis(State(gw): Gw) -> AdminResult<Json<Value>> {
    let mut items = Vec::new();
    for stored in gw.store().list_gateway_apis().await? {
        if let Ok(doc) = serde_json::from_str::<ApiDoc>(&stored.doc) {
            items.push(api_json(&gw, &doc));
        }
    }
    Ok(Json(json!({ "items": items })))
}

async fn get_api(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    Ok(Json(api_json(&gw, &doc)))
}

async fn update_api(
    State(gw): Gw,
    Path(api_id): Path<String>,
    Body(input): Body<ApiInput>,
) -> AdminResult<Json<Value>> {
    if let Some(n) = &input.name {
        check_name(n)?;
    }
    if input.target.is_some() || input.route_key.is_some() {
        return Err(AdminError::bad(
            "target and routeKey can only be given when creating an API",
        ));
    }
    check_cors(&input.cors_configuration)?;
    let cors_changed = input.cors_configuration.is_some();
    let doc = modify(&gw, &api_id, cors_changed, |d| {
        if let Some(n) = &input.name {
            d.name = n.clone();
        }
        if let Some(desc) = &input.description {
            d.description = desc.clone();
        }
        if let Some(c) = &input.cors_configuration {
            d.cors = Some(c.clone());
        }
        if let Some(x) = input.disable_execute_api_endpoint {
            d.disable_execute_api_endpoint = x;
        }
        Ok(d.clone())
    })
    .await?;
    Ok(Json(api_json(&gw, &doc)))
}

async fn delete_cors(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<StatusCode> {
    modify(&gw, &api_id, true, |d| {
        d.cors = None;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_api(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<StatusCode> {
    load(&gw, &api_id).await?;
    gw.store().delete_gateway_api(&api_id).await?;
    // Custom domain mappings to the API go with it.
    for (name, text) in gw.store().list_gateway_domains().await? {
        if let Ok(mut d) = serde_json::from_str::<DomainDoc>(&text) {
            let before = d.mappings.len();
            d.mappings.retain(|m| m.api_id != api_id);
            if d.mappings.len() != before {
                if let Ok(text) = serde_json::to_string(&d) {
                    gw.store().put_gateway_domain(&name, text).await?;
                }
            }
        }
    }
    gw.metrics.forget_api(&api_id);
    reload(&gw).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- routes ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RouteInput {
    route_key: Option<String>,
    target: Option<String>,
    authorization_type: Option<String>,
    api_key_required: Option<bool>,
    operation_name: Option<String>,
}

fn parse_route_key(text: &str) -> AdminResult<RouteKey> {
    text.parse::<RouteKey>()
        .map_err(|e| AdminError::bad(format!("routeKey {text:?} is not valid: {e}")))
}

fn route_json(r: &Route) -> Value {
    let mut v = json!({
        "routeId": r.route_id,
        "routeKey": r.route_key.to_string(),
        "apiKeyRequired": false,
        "authorizationType": "NONE",
    });
    if let Some(t) = &r.target {
        v["target"] = json!(t);
    }
    v
}

/// Checks a route against the API: its target names an integration, its key is not taken,
/// and the routing table it would make can be built.
fn check_route(doc: &ApiDoc, route: &Route) -> AdminResult<()> {
    if let Some(t) = &route.target {
        let id = route.integration_id().ok_or_else(|| {
            AdminError::bad(format!("target {t:?} must be integrations/INTEGRATION_ID"))
        })?;
        if !doc.integrations.contains_key(id) {
            return Err(AdminError::bad(format!(
                "target {t:?} names integration {id}, which this API does not have"
            )));
        }
    }
    if let Some(other) = doc
        .routes
        .values()
        .find(|r| r.route_id != route.route_id && r.route_key == route.route_key)
    {
        return Err(AdminError::conflict(format!(
            "Route with key {} already exists for this API (route {})",
            route.route_key, other.route_id
        )));
    }
    let keys = doc
        .routes
        .values()
        .filter(|r| r.route_id != route.route_id)
        .chain(std::iter::once(route))
        .map(|r| (r.route_key.clone(), ()));
    RouteTable::build(keys).map_err(|e| AdminError::bad(e.to_string()))?;
    Ok(())
}

fn check_authorization(input: &RouteInput) -> AdminResult<()> {
    match input.authorization_type.as_deref() {
        None | Some("NONE") => {}
        Some(other) => {
            return Err(AdminError::bad(format!(
                "authorizationType {other} is not supported yet; only NONE"
            )))
        }
    }
    if input.api_key_required == Some(true) {
        return Err(AdminError::bad("apiKeyRequired is not supported yet"));
    }
    let _ = &input.operation_name;
    Ok(())
}

async fn create_route(
    State(gw): Gw,
    Path(api_id): Path<String>,
    Body(input): Body<RouteInput>,
) -> AdminResult<Response> {
    check_authorization(&input)?;
    let key = input
        .route_key
        .as_deref()
        .ok_or_else(|| AdminError::bad("routeKey is required"))?;
    let route = Route {
        route_id: new_id(7),
        route_key: parse_route_key(key)?,
        target: input.target.clone(),
    };
    let r = modify(&gw, &api_id, true, |d| {
        check_route(d, &route)?;
        d.routes.insert(route.route_id.clone(), route.clone());
        Ok(route_json(&route))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn list_routes(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    let items: Vec<Value> = doc.routes.values().map(route_json).collect();
    Ok(Json(json!({ "items": items })))
}

fn route_of<'d>(doc: &'d ApiDoc, route_id: &str) -> AdminResult<&'d Route> {
    doc.routes.get(route_id).ok_or_else(|| {
        AdminError::not_found(format!("Invalid Route identifier specified {route_id}"))
    })
}

async fn get_route(
    State(gw): Gw,
    Path((api_id, route_id)): Path<(String, String)>,
) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    Ok(Json(route_json(route_of(&doc, &route_id)?)))
}

async fn update_route(
    State(gw): Gw,
    Path((api_id, route_id)): Path<(String, String)>,
    Body(input): Body<RouteInput>,
) -> AdminResult<Json<Value>> {
    check_authorization(&input)?;
    let key = input
        .route_key
        .as_deref()
        .map(parse_route_key)
        .transpose()?;
    let r = modify(&gw, &api_id, true, |d| {
        let mut route = route_of(d, &route_id)?.clone();
        if let Some(k) = &key {
            route.route_key = k.clone();
        }
        if let Some(t) = &input.target {
            route.target = if t.is_empty() { None } else { Some(t.clone()) };
        }
        check_route(d, &route)?;
        d.routes.insert(route_id.clone(), route.clone());
        Ok(route_json(&route))
    })
    .await?;
    Ok(Json(r))
}

async fn delete_route(
    State(gw): Gw,
    Path((api_id, route_id)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    modify(&gw, &api_id, true, |d| {
        route_of(d, &route_id)?;
        d.routes.remove(&route_id);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- integrations ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IntegrationInput {
    integration_type: Option<String>,
    integration_uri: Option<String>,
    integration_method: Option<String>,
    payload_format_version: Option<String>,
    timeout_in_millis: Option<u64>,
    request_parameters: Option<BTreeMap<String, String>>,
    description: Option<String>,
    connection_type: Option<String>,
    /// MOCK (Nimbus's extension for HTTP APIs): the fixed response.
    mock_status_code: Option<u16>,
    mock_headers: Option<BTreeMap<String, String>>,
    mock_body: Option<String>,
}

fn integration_json(i: &Integration) -> Value {
    let mut v = json!({
        "integrationId": i.integration_id,
        "payloadFormatVersion": i.payload_format_version,
        "timeoutInMillis": i.timeout_ms,
        "connectionType": "INTERNET",
    });
    if !i.description.is_empty() {
        v["description"] = json!(i.description);
    }
    match &i.kind {
        IntegrationKind::Function { uri } => {
            v["integrationType"] = json!("AWS_PROXY");
            v["integrationUri"] = json!(uri);
            v["integrationMethod"] = json!("POST");
        }
        IntegrationKind::Http {
            uri,
            method,
            request_parameters,
        } => {
            v["integrationType"] = json!("HTTP_PROXY");
            v["integrationUri"] = json!(uri);
            v["integrationMethod"] = json!(method.as_deref().unwrap_or("ANY"));
            if !request_parameters.is_empty() {
                v["requestParameters"] = json!(request_parameters);
            }
        }
        IntegrationKind::Mock {
            status,
            headers,
            body,
        } => {
            v["integrationType"] = json!("MOCK");
            v["mockStatusCode"] = json!(status);
            v["mockHeaders"] = json!(headers);
            v["mockBody"] = json!(body);
        }
    }
    v
}

/// Builds an integration from the input, over `base` when updating.
fn integration_from(
    input: &IntegrationInput,
    base: Option<&Integration>,
) -> AdminResult<Integration> {
    if let Some(c) = &input.connection_type {
        if c != "INTERNET" {
            return Err(AdminError::bad(format!(
                "connectionType {c} is not supported; only INTERNET"
            )));
        }
    }
    let kind_name = match (&input.integration_type, base) {
        (Some(t), _) => t.as_str(),
        (None, Some(b)) => match b.kind {
            IntegrationKind::Function { .. } => "AWS_PROXY",
            IntegrationKind::Http { .. } => "HTTP_PROXY",
            IntegrationKind::Mock { .. } => "MOCK",
        },
        (None, None) => return Err(AdminError::bad("integrationType is required")),
    };
    let base_uri = base.and_then(|b| match &b.kind {
        IntegrationKind::Function { uri } | IntegrationKind::Http { uri, .. } => Some(uri.clone()),
        IntegrationKind::Mock { .. } => None,
    });
    let uri = input.integration_uri.clone().or(base_uri);
    let kind = match kind_name {
        "AWS_PROXY" => IntegrationKind::Function {
            uri: uri.ok_or_else(|| AdminError::bad("integrationUri is required for AWS_PROXY"))?,
        },
        "HTTP_PROXY" => {
            let (base_method, base_params) = match base.map(|b| &b.kind) {
                Some(IntegrationKind::Http {
                    method,
                    request_parameters,
                    ..
                }) => (method.clone(), request_parameters.clone()),
                _ => (None, BTreeMap::new()),
            };
            IntegrationKind::Http {
                uri: uri
                    .ok_or_else(|| AdminError::bad("integrationUri is required for HTTP_PROXY"))?,
                method: input
                    .integration_method
                    .clone()
                    .or(base_method)
                    .filter(|m| m != "ANY"),
                request_parameters: input.request_parameters.clone().unwrap_or(base_params),
            }
        }
        "MOCK" => {
            let (s, h, b) = match base.map(|b| &b.kind) {
                Some(IntegrationKind::Mock {
                    status,
                    headers,
                    body,
                }) => (*status, headers.clone(), body.clone()),
                _ => (200, BTreeMap::new(), String::new()),
            };
            IntegrationKind::Mock {
                status: input.mock_status_code.unwrap_or(s),
                headers: input.mock_headers.clone().unwrap_or(h),
                body: input.mock_body.clone().unwrap_or(b),
            }
        }
        "AWS" | "HTTP" => {
            return Err(AdminError::bad(format!(
                "integrationType {kind_name} is for WebSocket APIs; HTTP APIs use AWS_PROXY or HTTP_PROXY"
            )))
        }
        other => {
            return Err(AdminError::bad(format!(
                "integrationType {other:?} is not one of AWS_PROXY, HTTP_PROXY, MOCK"
            )))
        }
    };
    let is_function = matches!(kind, IntegrationKind::Function { .. });
    let version = input
        .payload_format_version
        .clone()
        .or_else(|| base.map(|b| b.payload_format_version.clone()))
        .unwrap_or_else(|| if is_function { "2.0" } else { "1.0" }.into());
    if version != "1.0" && version != "2.0" {
        return Err(AdminError::bad(format!(
            "payloadFormatVersion {version:?} is not one of 1.0, 2.0"
        )));
    }
    if !is_function && version != "1.0" {
        return Err(AdminError::bad(
            "payloadFormatVersion 2.0 applies to AWS_PROXY integrations only; HTTP_PROXY uses 1.0",
        ));
    }
    let timeout_ms = input
        .timeout_in_millis
        .or_else(|| base.map(|b| b.timeout_ms))
        .unwrap_or(MAX_TIMEOUT_MS);
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(AdminError::bad(format!(
            "timeoutInMillis {timeout_ms} must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"
        )));
    }
    Ok(Integration {
        integration_id: base.map_or_else(|| new_id(7), |b| b.integration_id.clone()),
        kind,
        payload_format_version: version,
        timeout_ms,
        description: input
            .description
            .clone()
            .or_else(|| base.map(|b| b.description.clone()))
            .unwrap_or_default(),
    })
}

/// Checks an integration's target: the function exists, the URL and mapping parse, the mock
/// response is a valid HTTP response.
async fn check_integration(gw: &Gateway, i: &Integration) -> AdminResult<()> {
    match &i.kind {
        IntegrationKind::Function { uri } => {
            let target: FunctionTarget = uri
                .parse()
                .map_err(|e: crate::model::ModelError| AdminError::bad(e.to_string()))?;
            nimbus_runtime::resolve_target(
                gw.store().as_ref(),
                &target.name,
                target.qualifier.as_ref(),
            )
            .await
            .map_err(|e| match e {
                StoreError::NotFound(what) => {
                    AdminError::bad(format!("integrationUri {uri:?}: {what} does not exist"))
                }
                e => e.into(),
            })?;
        }
        IntegrationKind::Http {
            uri,
            method,
            request_parameters,
        } => {
            crate::proxy::validate_backend(
                uri,
                method.as_deref(),
                Some(i.timeout_ms),
                request_parameters,
            )
            .map_err(|e| AdminError::bad(e.to_string()))?;
        }
        IntegrationKind::Mock {
            status, headers, ..
        } => {
            if !(100..=599).contains(status) {
                return Err(AdminError::bad(format!(
                    "mockStatusCode {status} is not an HTTP status (100-599)"
                )));
            }
            for (k, v) in headers {
                if http::HeaderName::try_from(k.as_str()).is_err()
                    || http::HeaderValue::try_from(v.as_str()).is_err()
                {
                    return Err(AdminError::bad(format!(
                        "mockHeaders: {k:?} is not a valid header"
                    )));
                }
            }
        }
    }
    Ok(())
}

async fn create_integration(
    State(gw): Gw,
    Path(api_id): Path<String>,
    Body(input): Body<IntegrationInput>,
) -> AdminResult<Response> {
    let integration = integration_from(&input, None)?;
    check_integration(&gw, &integration).await?;
    let v = modify(&gw, &api_id, false, |d| {
        d.integrations
            .insert(integration.integration_id.clone(), integration.clone());
        Ok(integration_json(&integration))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_integrations(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    let items: Vec<Value> = doc.integrations.values().map(integration_json).collect();
    Ok(Json(json!({ "items": items })))
}

fn integration_of<'d>(doc: &'d ApiDoc, id: &str) -> AdminResult<&'d Integration> {
    doc.integrations.get(id).ok_or_else(|| {
        AdminError::not_found(format!("Invalid Integration identifier specified {id}"))
    })
}

async fn get_integration(
    State(gw): Gw,
    Path((api_id, id)): Path<(String, String)>,
) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    Ok(Json(integration_json(integration_of(&doc, &id)?)))
}

async fn update_integration(
    State(gw): Gw,
    Path((api_id, id)): Path<(String, String)>,
    Body(input): Body<IntegrationInput>,
) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    let updated = integration_from(&input, Some(integration_of(&doc, &id)?))?;
    check_integration(&gw, &updated).await?;
    let v = modify(&gw, &api_id, true, |d| {
        integration_of(d, &id)?;
        d.integrations.insert(id.clone(), updated.clone());
        Ok(integration_json(&updated))
    })
    .await?;
    Ok(Json(v))
}

async fn delete_integration(
    State(gw): Gw,
    Path((api_id, id)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    modify(&gw, &api_id, false, |d| {
        integration_of(d, &id)?;
        if let Some(r) = d
            .routes
            .values()
            .find(|r| r.integration_id() == Some(id.as_str()))
        {
            return Err(AdminError::conflict(format!(
                "integration {id} is the target of route {} ({}); change or delete the route first",
                r.route_id, r.route_key
            )));
        }
        d.integrations.remove(&id);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- stages ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StageInput {
    stage_name: Option<String>,
    deployment_id: Option<String>,
    auto_deploy: Option<bool>,
    stage_variables: Option<BTreeMap<String, String>>,
    description: Option<String>,
    access_log_settings: Option<AccessLogSettings>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    default_route_settings: Option<Value>,
    route_settings: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccessLogSettings {
    destination_arn: Option<String>,
    format: Option<String>,
}

fn stage_json(gw: &Gateway, api_id: &str, s: &Stage) -> Value {
    let mut v = json!({
        "stageName": s.stage_name,
        "autoDeploy": s.auto_deploy,
        "stageVariables": s.stage_variables,
        "createdDate": iso(s.created_ms),
        "lastUpdatedDate": iso(s.last_updated_ms),
        "defaultRouteSettings": { "detailedMetricsEnabled": true },
        "routeSettings": {},
        "tags": {},
        "apiGatewayManaged": false,
    });
    if let Some(d) = &s.deployment_id {
        v["deploymentId"] = json!(d);
    }
    if !s.description.is_empty() {
        v["description"] = json!(s.description);
    }
    if s.access_log_format.is_some() || s.access_log_destination.is_some() {
        v["accessLogSettings"] = json!({
            "destinationArn": s.access_log_destination,
            "format": s.access_log_format,
        });
    }
    if let Some(url) = gw.invoke_url(api_id, &s.stage_name) {
        v["invokeUrl"] = json!(url);
    }
    v
}

fn apply_access_log(stage: &mut Stage, settings: &AccessLogSettings) -> AdminResult<()> {
    if let Some(f) = &settings.format {
        if !f.is_empty() {
            accesslog::check_format(f)
                .map_err(|e| AdminError::bad(format!("accessLogSettings.format: {e}")))?;
        }
    }
    stage.access_log_destination = settings.destination_arn.clone().filter(|d| !d.is_empty());
    stage.access_log_format = match (&settings.format, &stage.access_log_destination) {
        (Some(f), _) if !f.is_empty() => Some(f.clone()),
        // A destination without a format logs in the default format.
        (_, Some(_)) => Some(accesslog::DEFAULT_FORMAT.to_string()),
        _ => None,
    };
    Ok(())
}

fn stage_of<'d>(doc: &'d ApiDoc, name: &str) -> AdminResult<&'d Stage> {
    doc.stages
        .get(name)
        .ok_or_else(|| AdminError::not_found(format!("Invalid stage identifier specified {name}")))
}

async fn check_deployment(gw: &Gateway, api_id: &str, id: &str) -> AdminResult<()> {
    gw.store()
        .get_gateway_deployment(api_id, id)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            StoreError::NotFound(_) => AdminError::bad(format!(
                "deploymentId {id} is not a deployment of API {api_id}"
            )),
            e => e.into(),
        })
}

async fn create_stage(
    State(gw): Gw,
    Path(api_id): Path<String>,
    Body(input): Body<StageInput>,
) -> AdminResult<Response> {
    let name = input
        .stage_name
        .clone()
        .ok_or_else(|| AdminError::bad("stageName is required"))?;
    check_stage_name(&name).map_err(|e| AdminError::bad(e.to_string()))?;
    let vars = input.stage_variables.clone().unwrap_or_default();
    check_stage_variables(&vars).map_err(|e| AdminError::bad(e.to_string()))?;
    if let Some(d) = &input.deployment_id {
        check_deployment(&gw, &api_id, d).await?;
    }
    let _ = (
        &input.tags,
        &input.default_route_settings,
        &input.route_settings,
    );
    let now = now_ms();
    let mut stage = Stage {
        stage_name: name.clone(),
        deployment_id: input.deployment_id.clone(),
        auto_deploy: input.auto_deploy.unwrap_or(false),
        stage_variables: vars,
        description: input.description.clone().unwrap_or_default(),
        access_log_destination: None,
        access_log_format: None,
        created_ms: now,
        last_updated_ms: now,
    };
    if let Some(a) = &input.access_log_settings {
        apply_access_log(&mut stage, a)?;
    }
    let auto = stage.auto_deploy && stage.deployment_id.is_none();
    let s = modify(&gw, &api_id, auto, |d| {
        if d.stages.contains_key(&name) {
            return Err(AdminError::conflict(format!(
                "Stage {name} already exists for API {api_id}"
            )));
        }
        d.stages.insert(name.clone(), stage.clone());
        Ok(())
    })
    .await;
    s?;
    let (doc, _) = load(&gw, &api_id).await?;
    let v = stage_json(&gw, &api_id, stage_of(&doc, &name)?);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_stages(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    let items: Vec<Value> = doc
        .stages
        .values()
        .map(|s| stage_json(&gw, &api_id, s))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_stage(
    State(gw): Gw,
    Path((api_id, name)): Path<(String, String)>,
) -> AdminResult<Json<Value>> {
    let (doc, _) = load(&gw, &api_id).await?;
    Ok(Json(stage_json(&gw, &api_id, stage_of(&doc, &name)?)))
}

async fn update_stage(
    State(gw): Gw,
    Path((api_id, name)): Path<(String, String)>,
    Body(input): Body<StageInput>,
) -> AdminResult<Json<Value>> {
    if input.stage_name.as_deref().is_some_and(|n| n != name) {
        return Err(AdminError::bad("a stage cannot be renamed"));
    }
    if let Some(vars) = &input.stage_variables {
        check_stage_variables(vars).map_err(|e| AdminError::bad(e.to_string()))?;
    }
    if let Some(d) = &input.deployment_id {
        check_deployment(&gw, &api_id, d).await?;
    }
    let turning_auto_on = input.auto_deploy == Some(true);
    modify(&gw, &api_id, turning_auto_on, |d| {
        let mut stage = stage_of(d, &name)?.clone();
        if let Some(dep) = &input.deployment_id {
            stage.deployment_id = Some(dep.clone());
        }
        if let Some(a) = input.auto_deploy {
            stage.auto_deploy = a;
        }
        if let Some(vars) = &input.stage_variables {
            stage.stage_variables = vars.clone();
        }
        if let Some(desc) = &input.description {
            stage.description = desc.clone();
        }
        if let Some(a) = &input.access_log_settings {
            apply_access_log(&mut stage, a)?;
        }
        stage.last_updated_ms = now_ms();
        d.stages.insert(name.clone(), stage);
        Ok(())
    })
    .await?;
    let (doc, _) = load(&gw, &api_id).await?;
    Ok(Json(stage_json(&gw, &api_id, stage_of(&doc, &name)?)))
}

async fn delete_stage(
    State(gw): Gw,
    Path((api_id, name)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    modify(&gw, &api_id, false, |d| {
        stage_of(d, &name)?;
        d.stages.remove(&name);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- deployments ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeploymentInput {
    description: Option<String>,
    stage_name: Option<String>,
}

fn deployment_json(d: &DeploymentDoc) -> Value {
    let mut v = json!({
        "deploymentId": d.deployment_id,
        "deploymentStatus": "DEPLOYED",
        "createdDate": iso(d.created_ms),
        "autoDeployed": d.auto_deployed,
    });
    if !d.description.is_empty() {
        v["description"] = json!(d.description);
    }
    v
}

async fn create_deployment(
    State(gw): Gw,
    Path(api_id): Path<String>,
    Body(input): Body<DeploymentInput>,
) -> AdminResult<Response> {
    let (doc, _) = load(&gw, &api_id).await?;
    if let Some(s) = &input.stage_name {
        stage_of(&doc, s)?;
    }
    let d = deploy(
        &gw,
        &doc,
        input.description.clone().unwrap_or_default(),
        false,
    )
    .await?;
    if let Some(stage) = &input.stage_name {
        let id = d.deployment_id.clone();
        modify(&gw, &api_id, false, |doc| {
            let s = doc.stages.get_mut(stage).ok_or_else(|| {
                AdminError::not_found(format!("Invalid stage identifier specified {stage}"))
            })?;
            s.deployment_id = Some(id.clone());
            s.last_updated_ms = now_ms();
            Ok(())
        })
        .await?;
    }
    Ok((StatusCode::CREATED, Json(deployment_json(&d))).into_response())
}

async fn list_deployments(State(gw): Gw, Path(api_id): Path<String>) -> AdminResult<Json<Value>> {
    load(&gw, &api_id).await?;
    let items: Vec<Value> = gw
        .store()
        .list_gateway_deployments(&api_id)
        .await?
        .iter()
        .filter_map(|d| serde_json::from_str::<DeploymentDoc>(&d.doc).ok())
        .map(|d| deployment_json(&d))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_deployment(
    State(gw): Gw,
    Path((api_id, id)): Path<(String, String)>,
) -> AdminResult<Json<Value>> {
    load(&gw, &api_id).await?;
    let stored = gw
        .store()
        .get_gateway_deployment(&api_id, &id)
        .await
        .map_err(|_| {
            AdminError::not_found(format!("Invalid Deployment identifier specified {id}"))
        })?;
    let d: DeploymentDoc =
        serde_json::from_str(&stored.doc).map_err(|e| AdminError::bad(e.to_string()))?;
    Ok(Json(deployment_json(&d)))
}

async fn delete_deployment(
    State(gw): Gw,
    Path((api_id, id)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    let (doc, _) = load(&gw, &api_id).await?;
    if let Some(s) = doc
        .stages
        .values()
        .find(|s| s.deployment_id.as_deref() == Some(id.as_str()))
    {
        return Err(AdminError::bad(format!(
            "Active stages pointing to this deployment must be moved or deleted (stage {})",
            s.stage_name
        )));
    }
    gw.store()
        .delete_gateway_deployment(&api_id, &id)
        .await
        .map_err(|_| {
            AdminError::not_found(format!("Invalid Deployment identifier specified {id}"))
        })?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- domain names and API mappings ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DomainInput {
    domain_name: Option<String>,
    #[serde(default)]
    domain_name_configurations: Option<Value>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MappingInput {
    api_id: Option<String>,
    stage: Option<String>,
    api_mapping_key: Option<String>,
}

fn domain_json(d: &DomainDoc) -> Value {
    json!({
        "domainName": d.domain_name,
        "apiMappingSelectionExpression": "$request.basepath",
        "domainNameConfigurations": [],
        "tags": {},
    })
}

fn mapping_json(m: &ApiMapping) -> Value {
    json!({
        "apiMappingId": m.api_mapping_id,
        "apiId": m.api_id,
        "stage": m.stage,
        "apiMappingKey": m.api_mapping_key,
    })
}

fn check_domain_name(name: &str) -> AdminResult<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 253
        && lower.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(AdminError::bad(format!(
            "domainName {name:?} is not a valid host name"
        )));
    }
    if lower.contains(crate::server::EXECUTE_API_DOMAIN) {
        return Err(AdminError::bad(format!(
            "domainName {name:?} is under {}, which addresses APIs by id",
            crate::server::EXECUTE_API_DOMAIN
        )));
    }
    Ok(lower)
}

async fn load_domain(gw: &Gateway, name: &str) -> AdminResult<DomainDoc> {
    let name = name.to_ascii_lowercase();
    gw.store()
        .list_gateway_domains()
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, doc)| serde_json::from_str(&doc).ok())
        .ok_or_else(|| {
            AdminError::not_found(format!("Invalid domain name identifier specified {name}"))
        })
}

async fn save_domain(gw: &Gateway, d: &DomainDoc) -> AdminResult<()> {
    let text = serde_json::to_string(d).map_err(|e| AdminError::bad(e.to_string()))?;
    gw.store().put_gateway_domain(&d.domain_name, text).await?;
    reload(gw).await;
    Ok(())
}

async fn create_domain(State(gw): Gw, Body(input): Body<DomainInput>) -> AdminResult<Response> {
    let name = input
        .domain_name
        .as_deref()
        .ok_or_else(|| AdminError::bad("domainName is required"))?;
    let name = check_domain_name(name)?;
    let _ = (&input.domain_name_configurations, &input.tags);
    if load_domain(&gw, &name).await.is_ok() {
        return Err(AdminError::conflict(format!(
            "The domain name {name} already exists"
        )));
    }
    let d = DomainDoc {
        domain_name: name,
        mappings: Vec::new(),
    };
    save_domain(&gw, &d).await?;
    Ok((StatusCode::CREATED, Json(domain_json(&d))).into_response())
}

async fn list_domains(State(gw): Gw) -> AdminResult<Json<Value>> {
    let items: Vec<Value> = gw
        .store()
        .list_gateway_domains()
        .await?
        .iter()
        .filter_map(|(_, doc)| serde_json::from_str::<DomainDoc>(doc).ok())
        .map(|d| domain_json(&d))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_domain(State(gw): Gw, Path(name): Path<String>) -> AdminResult<Json<Value>> {
    Ok(Json(domain_json(&load_domain(&gw, &name).await?)))
}

async fn delete_domain(State(gw): Gw, Path(name): Path<String>) -> AdminResult<StatusCode> {
    let d = load_domain(&gw, &name).await?;
    gw.store().delete_gateway_domain(&d.domain_name).await?;
    reload(&gw).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_mapping(
    State(gw): Gw,
    Path(name): Path<String>,
    Body(input): Body<MappingInput>,
) -> AdminResult<Response> {
    let mut d = load_domain(&gw, &name).await?;
    let api_id = input
        .api_id
        .ok_or_else(|| AdminError::bad("apiId is required"))?;
    let stage = input
        .stage
        .ok_or_else(|| AdminError::bad("stage is required"))?;
    let (doc, _) = load(&gw, &api_id).await?;
    stage_of(&doc, &stage)
        .map_err(|_| AdminError::bad(format!("stage {stage} does not exist in API {api_id}")))?;
    let key = input
        .api_mapping_key
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    if key.split('/').any(|seg| seg == "." || seg == "..")
        || key
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
    {
        return Err(AdminError::bad(format!(
            "apiMappingKey {key:?} may only contain letters, digits, '-', '_', '.' and '/'"
        )));
    }
    if d.mappings.iter().any(|m| m.api_mapping_key == key) {
        return Err(AdminError::conflict(format!(
            "domain name {} already maps the key {key:?}",
            d.domain_name
        )));
    }
    let m = ApiMapping {
        api_mapping_id: new_id(6),
        api_id,
        stage,
        api_mapping_key: key,
    };
    d.mappings.push(m.clone());
    save_domain(&gw, &d).await?;
    Ok((StatusCode::CREATED, Json(mapping_json(&m))).into_response())
}

async fn list_mappings(State(gw): Gw, Path(name): Path<String>) -> AdminResult<Json<Value>> {
    let d = load_domain(&gw, &name).await?;
    let items: Vec<Value> = d.mappings.iter().map(mapping_json).collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_mapping(
    State(gw): Gw,
    Path((name, id)): Path<(String, String)>,
) -> AdminResult<Json<Value>> {
    let d = load_domain(&gw, &name).await?;
    d.mappings
        .iter()
        .find(|m| m.api_mapping_id == id)
        .map(|m| Json(mapping_json(m)))
        .ok_or_else(|| {
            AdminError::not_found(format!("Invalid API mapping identifier specified {id}"))
        })
}

async fn delete_mapping(
    State(gw): Gw,
    Path((name, id)): Path<(String, String)>,
) -> AdminResult<StatusCode> {
    let mut d = load_domain(&gw, &name).await?;
    let before = d.mappings.len();
    d.mappings.retain(|m| m.api_mapping_id != id);
    if d.mappings.len() == before {
        return Err(AdminError::not_found(format!(
            "Invalid API mapping identifier specified {id}"
        )));
    }
    save_domain(&gw, &d).await?;
    Ok(StatusCode::NO_CONTENT)
}
