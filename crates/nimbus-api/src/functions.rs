//! Lambda management API handlers: functions, versions, aliases, concurrency.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nimbus_core::{
    validate_alias_name, Alias, AliasRouting, FunctionConfig, FunctionRef, FunctionVersion, Limits,
    Qualifier, VersionId,
};
use nimbus_store::{new_revision_id, now_ms, FunctionRecord, StoredCode};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::wire::{self, alias_configuration, function_configuration};
use crate::ApiState;

type Params = Query<HashMap<String, String>>;

/// Parses a JSON body with an error that says what is wrong with it.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body_required(body)
}

/// Like [`json_body`], but an empty body is an error too. A type error names the field it is
/// in (`Timeout: invalid type: string "x", expected u32`), as Lambda's messages do.
pub(crate) fn json_body_required<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() && path != "." {
            ApiError::invalid(format!("{path}: {inner}"))
        } else {
            ApiError::invalid(format!(
                "the request body is not valid JSON for this operation: {inner}"
            ))
        }
    })?;
    // Trailing garbage after the object is malformed too.
    de.end().map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not valid JSON for this operation: {e}"
        ))
    })?;
    Ok(value)
}

fn created(v: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// The function name and qualifier a path segment and `?Qualifier=` name together.
pub(crate) fn function_ref(
    path_name: &str,
    params: &HashMap<String, String>,
) -> ApiResult<(String, Option<Qualifier>)> {
    let r = FunctionRef::parse(path_name)?;
    let query_q = params
        .get("Qualifier")
        .map(|q| Qualifier::parse(q))
        .transpose()?;
    let qualifier = match (r.qualifier, query_q) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(format!(
                "the qualifier in the function name ({a}) and the Qualifier parameter ({b}) differ"
            )))
        }
        (a, b) => a.or(b),
    };
    Ok((r.name, qualifier))
}

fn max_items(params: &HashMap<String, String>, default: usize) -> ApiResult<usize> {
    match params.get("MaxItems") {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "MaxItems must be a number from 1 to 10000, got {s:?}"
            ))),
        },
    }
}

fn reject_unsupported_code(
    s3_bucket: &Option<String>,
    image_uri: &Option<String>,
) -> ApiResult<()> {
    if s3_bucket.is_some() {
        return Err(ApiError::invalid(
            "Code.S3Bucket is not supported by Nimbus; send the zip archive in Code.ZipFile",
        ));
    }
    if image_uri.is_some() {
        return Err(ApiError::invalid(
            "container images (ImageUri) are not supported by Nimbus; send a zip archive",
        ));
    }
    Ok(())
}

fn check_architectures(arch: &Option<Vec<String>>) -> ApiResult<()> {
    if let Some(list) = arch {
        if list
            .iter()
            .any(|a| a != "x86_64" && a != std::env::consts::ARCH)
        {
            return Err(ApiError::invalid(format!(
                "Architectures {list:?} is not supported: this server runs {}",
                std::env::consts::ARCH
            )));
        }
    }
    Ok(())
}

/// Decodes and stores a zip (validating it) on the blocking pool.
async fn store_zip(state: &ApiState, zip_b64: String) -> ApiResult<StoredCode> {
    let blobs = state.blobs.clone();
    // Decoding and unpacking a large archive take tens of milliseconds: not on a worker that
    // serves invocations (there may be only one).
    tokio::task::spawn_blocking(move || -> ApiResult<StoredCode> {
        let zip = wire::unb64("Code.ZipFile", &zip_b64)?;
        drop(zip_b64);
        if zip.len() > Limits::ZIP_BYTES {
            return Err(ApiError::too_large(format!(
                "the zip archive is {} bytes; the limit for direct upload is {} bytes",
                zip.len(),
                Limits::ZIP_BYTES
            )));
        }
        Ok(blobs.put_zip(&zip)?)
    })
    .await
    .map_err(|e| ApiError::internal(format!("unpacking the archive failed: {e}")))?
}

pub async fn create_function(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: wire::CreateFunctionRequest = json_body_required(&body)?;
    let name = req
        .function_name
        .ok_or_else(|| ApiError::invalid("FunctionName is required"))?;
    let name = FunctionRef::parse(&name)?.name;
    if req.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(ApiError::invalid(
            "PackageType Image is not supported by Nimbus; use Zip",
        ));
    }
    check_architectures(&req.architectures)?;
    let runtime_name = req.runtime.ok_or_else(|| {
        ApiError::invalid("Runtime is required for a function packaged as a zip archive")
    })?;
    let handler = req.handler.ok_or_else(|| {
        ApiError::invalid("Handler is required for a function packaged as a zip archive")
    })?;
    let config = FunctionConfig {
        runtime_name,
        handler,
        memory_mb: req.memory_size.unwrap_or(Limits::MEMORY_DEFAULT_MB),
        timeout_s: req.timeout.unwrap_or(Limits::TIMEOUT_DEFAULT_S),
        ephemeral_mb: req
            .ephemeral_storage
            .map(|e| e.size)
            .unwrap_or(Limits::EPHEMERAL_DEFAULT_MB),
        environment: req
            .environment
            .and_then(|e| e.variables)
            .unwrap_or_default(),
        description: req.description.unwrap_or_default(),
        role: req.role.unwrap_or_default(),
    };
    config.validate()?;
    let code = req
        .code
        .ok_or_else(|| ApiError::invalid("Code is required"))?;
    reject_unsupported_code(&code.s3_bucket, &code.image_uri)?;
    let zip = code
        .zip_file
        .ok_or_else(|| ApiError::invalid("Code.ZipFile is required"))?;
    if state.store.get_function(&name).await.is_ok() {
        return Err(ApiError::conflict(format!(
            "Function already exist: {name}"
        )));
    }
    let upload = state.blobs.upload_guard().await;
    let stored = store_zip(&state, zip).await?;
    let now = now_ms();
    let latest = FunctionVersion {
        function: name.clone(),
        version: VersionId::Latest,
        config,
        code_sha256: stored.sha256,
        code_size: stored.size,
        last_modified_ms: now,
        revision_id: new_revision_id(),
    };
    let record = FunctionRecord {
        name: name.clone(),
        created_ms: now,
        tags: req.tags.unwrap_or_default(),
        reserved_concurrency: None,
    };
    state.store.create_function(record, latest.clone()).await?;
    drop(upload);
    let shown = if req.publish {
        state.store.publish_version(&name, None, None, None).await?
    } else {
        latest
    };
    tracing::info!(function = %name, "function created");
    Ok(created(function_configuration(&shown)))
}

/// The version a qualifier names (aliases resolve to their primary version).
async fn version_for(
    state: &ApiState,
    name: &str,
    q: Option<Qualifier>,
) -> ApiResult<FunctionVersion> {
    let v = match q {
        None | Some(Qualifier::Latest) => VersionId::Latest,
        Some(Qualifier::Version(n)) => VersionId::Published(n),
        Some(Qualifier::Alias(a)) => state.store.get_alias(name, &a).await?.function_version,
    };
    Ok(state.store.get_version(name, v).await?)
}

pub async fn get_function(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Params,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let (name, q) = function_ref(&name, &p)?;
    let record = state.store.get_function(&name).await?;
    let v = version_for(&state, &name, q).await?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9070");
    let mut out = serde_json::json!({
        "Configuration": function_configuration(&v),
        "Code": { "RepositoryType": "S3", "Location": crate::nimbus::code_location(&state, host, &v.code_sha256) },
        "Tags": record.tags,
    });
    if let Some(n) = record.reserved_concurrency {
        out["Concurrency"] = serde_json::json!({ "ReservedConcurrentExecutions": n });
    }
    Ok(Json(out))
}

pub async fn get_function_configuration(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Json<serde_json::Value>> {
    let (name, q) = function_ref(&name, &p)?;
    let v = version_for(&state, &name, q).await?;
    Ok(Json(function_configuration(&v)))
}

pub async fn list_functions(
    State(state): State<ApiState>,
    Query(p): Params,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = max_items(&p, 50)?;
    let marker = p.get("Marker").map(String::as_str);
    let all_versions = p.get("FunctionVersion").map(String::as_str) == Some("ALL");
    let page = state.store.list_functions(marker, limit).await?;
    let mut functions = Vec::new();
    for latest in &page.items {
        if all_versions {
            let versions = state
                .store
                .list_versions(&latest.function, None, 10_000)
                .await?;
            functions.extend(versions.items.iter().map(function_configuration));
        } else {
            functions.push(function_configuration(latest));
        }
    }
    Ok(wire::page("Functions", functions, page.next_marker))
}

pub async fn update_function_code(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let name = FunctionRef::parse(&name)?.name;
    let req: wire::UpdateFunctionCodeRequest = json_body_required(&body)?;
    reject_unsupported_code(&req.s3_bucket, &req.image_uri)?;
    check_architectures(&req.architectures)?;
    let zip = req
        .zip_file
        .ok_or_else(|| ApiError::invalid("ZipFile is required"))?;
    let mut latest = state.store.get_version(&name, VersionId::Latest).await?;
    if let Some(rev) = &req.revision_id {
        if *rev != latest.revision_id {
            return Err(nimbus_store::StoreError::stale_revision().into());
        }
    }
    let upload = state.blobs.upload_guard().await;
    let stored = store_zip(&state, zip).await?;
    latest.code_sha256 = stored.sha256;
    latest.code_size = stored.size;
    if req.dry_run {
        return Ok(Json(function_configuration(&latest)));
    }
    latest.last_modified_ms = now_ms();
    latest.revision_id = new_revision_id();
    state
        .store
        .update_latest(latest.clone(), req.revision_id.as_deref())
        .await?;
    drop(upload);
    // Forgotten first: an instance of the new code started from here on measures afresh.
    state.runtime.forget_cpu_demand(&name);
    state.runtime.retire(&name);
    let shown = if req.publish {
        state.store.publish_version(&name, None, None, None).await?
    } else {
        latest
    };
    Ok(Json(function_configuration(&shown)))
}

pub async fn update_function_configuration(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let name = FunctionRef::parse(&name)?.name;
    let req: wire::UpdateFunctionConfigurationRequest = json_body(&body)?;
    let mut latest = state.store.get_version(&name, VersionId::Latest).await?;
    let c = &mut latest.config;
    if let Some(v) = req.runtime {
        c.runtime_name = v;
    }
    if let Some(v) = req.role {
        c.role = v;
    }
    if let Some(v) = req.handler {
        c.handler = v;
    }
    if let Some(v) = req.description {
        c.description = v;
    }
    if let Some(v) = req.timeout {
        c.timeout_s = v;
    }
    if let Some(v) = req.memory_size {
        c.memory_mb = v;
    }
    if let Some(env) = req.environment {
        c.environment = env.variables.unwrap_or_default();
    }
    if let Some(e) = req.ephemeral_storage {
        c.ephemeral_mb = e.size;
    }
    c.validate()?;
    latest.last_modified_ms = now_ms();
    latest.revision_id = new_revision_id();
    state
        .store
        .update_latest(latest.clone(), req.revision_id.as_deref())
        .await?;
    state.runtime.retire(&name);
    Ok(Json(function_configuration(&latest)))
}

pub async fn delete_function(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<StatusCode> {
    let (name, q) = function_ref(&name, &p)?;
    match q {
        None => {
            state.store.delete_function(&name).await?;
            state.runtime.forget_provisioned(&name);
            state.metrics.forget_function(&name);
            state.events.config_changed(&name);
            tracing::info!(function = %name, "function deleted");
        }
        Some(Qualifier::Version(n)) => {
            state.store.delete_version(&name, n).await?;
            crate::provisioned::sync(&state, Some(&name)).await;
        }
        Some(Qualifier::Latest) => {
            return Err(ApiError::invalid(
                "$LATEST cannot be deleted on its own; delete the function without a qualifier",
            ))
        }
        Some(Qualifier::Alias(a)) => {
            return Err(ApiError::invalid(format!(
                "{a} is an alias; delete it with DeleteAlias, or give a version number"
            )))
        }
    }
    state.runtime.retire(&name);
    if q.is_none() {
        state.runtime.forget_cpu_demand(&name);
    }
    tokio::spawn(collect_garbage(state.clone()));
    Ok(StatusCode::NO_CONTENT)
}

/// Removes code no version refers to any more. Uploads in progress hold the blob store's
/// upload guard until their version is stored, so their code is never taken for garbage.
async fn collect_garbage(state: ApiState) {
    let _guard = state.blobs.collect_guard().await;
    let referenced = match state.store.referenced_code().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "code garbage collection skipped");
            return;
        }
    };
    let blobs = state.blobs.clone();
    match tokio::task::spawn_blocking(move || blobs.collect_garbage(&referenced)).await {
        Ok(n) if n > 0 => tracing::debug!(removed = n, "unreferenced code removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "code garbage collection failed"),
    }
}

pub async fn publish_version(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let name = FunctionRef::parse(&name)?.name;
    let req: wire::PublishVersionRequest = json_body(&body)?;
    let sha = req
        .code_sha256
        .as_deref()
        .map(wire::code_sha_hex)
        .transpose()?;
    let v = state
        .store
        .publish_version(
            &name,
            req.description,
            sha.as_deref(),
            req.revision_id.as_deref(),
        )
        .await?;
    Ok(created(function_configuration(&v)))
}

pub async fn list_versions(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Json<serde_json::Value>> {
    let name = FunctionRef::parse(&name)?.name;
    let limit = max_items(&p, 50)?;
    let page = state
        .store
        .list_versions(&name, p.get("Marker").map(String::as_str), limit)
        .await?;
    let items = page.items.iter().map(function_configuration).collect();
    Ok(wire::page("Versions", items, page.next_marker))
}

fn parse_version(field: &str, s: &str) -> ApiResult<VersionId> {
    VersionId::parse(s).ok_or_else(|| {
        ApiError::invalid(format!(
            "{field} {s:?} is neither $LATEST nor a version number"
        ))
    })
}

fn routing(cfg: Option<wire::RoutingConfig>) -> ApiResult<Option<AliasRouting>> {
    let Some(weights) = cfg.and_then(|c| c.additional_version_weights) else {
        return Ok(None);
    };
    let mut it = weights.into_iter();
    let Some((v, weight)) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(ApiError::invalid(
            "RoutingConfig.AdditionalVersionWeights may name only one additional version",
        ));
    }
    let additional_version = match VersionId::parse(&v) {
        Some(VersionId::Published(n)) => n,
        _ => {
            return Err(ApiError::invalid(format!(
                "RoutingConfig: {v:?} is not a published version number"
            )))
        }
    };
    Ok(Some(AliasRouting {
        additional_version,
        weight,
    }))
}

pub async fn create_alias(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let function = FunctionRef::parse(&name)?.name;
    let req: wire::CreateAliasRequest = json_body_required(&body)?;
    let alias_name = req
        .name
        .ok_or_else(|| ApiError::invalid("Name is required"))?;
    validate_alias_name(&alias_name)?;
    let version = req
        .function_version
        .ok_or_else(|| ApiError::invalid("FunctionVersion is required"))?;
    let alias = Alias {
        function,
        name: alias_name,
        function_version: parse_version("FunctionVersion", &version)?,
        description: req.description.unwrap_or_default(),
        routing: routing(req.routing_config)?,
        revision_id: new_revision_id(),
    };
    alias.validate()?;
    state.store.create_alias(alias.clone()).await?;
    Ok(created(alias_configuration(&alias)))
}

pub async fn get_alias(
    State(state): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    let a = state.store.get_alias(&function, &alias).await?;
    Ok(Json(alias_configuration(&a)))
}

pub async fn update_alias(
    State(state): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    let req: wire::UpdateAliasRequest = json_body(&body)?;
    let mut a = state.store.get_alias(&function, &alias).await?;
    if let Some(v) = req.function_version {
        a.function_version = parse_version("FunctionVersion", &v)?;
    }
    if let Some(d) = req.description {
        a.description = d;
    }
    if let Some(r) = req.routing_config {
        a.routing = routing(Some(r))?;
    }
    a.revision_id = new_revision_id();
    a.validate()?;
    state
        .store
        .update_alias(a.clone(), req.revision_id.as_deref())
        .await?;
    // Provisioned concurrency follows the alias to its new version.
    crate::provisioned::sync(&state, Some(&function)).await;
    Ok(Json(alias_configuration(&a)))
}

pub async fn delete_alias(
    State(state): State<ApiState>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let function = FunctionRef::parse(&name)?.name;
    state.store.delete_alias(&function, &alias).await?;
    crate::provisioned::sync(&state, Some(&function)).await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_aliases(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    let limit = max_items(&p, 50)?;
    let for_version = p
        .get("FunctionVersion")
        .map(|v| parse_version("FunctionVersion", v))
        .transpose()?;
    let page = state
        .store
        .list_aliases(
            &function,
            for_version,
            p.get("Marker").map(String::as_str),
            limit,
        )
        .await?;
    let items = page.items.iter().map(alias_configuration).collect();
    Ok(wire::page("Aliases", items, page.next_marker))
}

pub async fn put_concurrency(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    let req: wire::ConcurrencyRequest = json_body_required(&body)?;
    let n = req
        .reserved_concurrent_executions
        .ok_or_else(|| ApiError::invalid("ReservedConcurrentExecutions is required"))?;
    let n = u32::try_from(n).map_err(|_| {
        ApiError::invalid(format!(
            "ReservedConcurrentExecutions must be 0 or more, got {n}"
        ))
    })?;
    state
        .store
        .set_reserved_concurrency(&function, Some(n))
        .await?;
    state.events.concurrency_changed(&function);
    Ok(Json(
        serde_json::json!({ "ReservedConcurrentExecutions": n }),
    ))
}

pub async fn get_concurrency(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&name)?.name;
    let r = state.store.get_function(&function).await?;
    Ok(Json(match r.reserved_concurrency {
        Some(n) => serde_json::json!({ "ReservedConcurrentExecutions": n }),
        None => serde_json::json!({}),
    }))
}

pub async fn delete_concurrency(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let function = FunctionRef::parse(&name)?.name;
    state
        .store
        .set_reserved_concurrency(&function, None)
        .await?;
    state.events.concurrency_changed(&function);
    Ok(StatusCode::NO_CONTENT)
}

/// Tags live on the function; `resource` is its ARN.
pub async fn list_tags(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let function = FunctionRef::parse(&resource)?.name;
    let r = state.store.get_function(&function).await?;
    Ok(Json(serde_json::json!({ "Tags": r.tags })))
}

pub async fn tag_resource(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct TagRequest {
        tags: BTreeMap<String, String>,
    }
    let function = FunctionRef::parse(&resource)?.name;
    let req: TagRequest = json_body_required(&body)?;
    let mut r = state.store.get_function(&function).await?;
    r.tags.extend(req.tags);
    state.store.set_tags(&function, r.tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn untag_resource(
    State(state): State<ApiState>,
    Path(resource): Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> ApiResult<StatusCode> {
    let function = FunctionRef::parse(&resource)?.name;
    let mut r = state.store.get_function(&function).await?;
    let keys: Vec<String> = url_pairs(q.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "tagKeys")
        .map(|(_, v)| v)
        .collect();
    for k in keys {
        r.tags.remove(&k);
    }
    state.store.set_tags(&function, r.tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}
