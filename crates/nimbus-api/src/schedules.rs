//! Schedules (`/nimbus/v1/schedules`): EventBridge rate/cron expressions firing functions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use nimbus_core::FunctionRef;
use nimbus_events::schedules::{check, next_fire};
use nimbus_store::{now_ms, ScheduleRecord};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::functions::json_body_required;
use crate::ApiState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScheduleInput {
    name: String,
    expression: String,
    function: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    enabled: Option<bool>,
}

fn iso(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(nimbus_telemetry::utc_timestamp(ms, "Z"))
    })
}

fn schedule_json(s: &ScheduleRecord) -> Value {
    json!({
        "name": s.name,
        "expression": s.expression,
        "timezone": s.timezone,
        "function": s.function,
        "input": s.input.as_deref().and_then(|i| serde_json::from_str::<Value>(i).ok()),
        "enabled": s.enabled,
        "arn": format!("arn:aws:events:us-east-1:000000000000:rule/{}", s.name),
        "nextFire": iso(s.next_fire_ms),
        "lastFire": iso(s.last_fire_ms),
    })
}

pub async fn create(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let input: ScheduleInput = json_body_required(&body)?;
    let timezone = input.timezone.unwrap_or_else(|| "UTC".into());
    let fixed = input.input.map(|v| v.to_string());
    check(&input.name, &input.expression, &timezone, fixed.as_deref())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    // The target must exist now, as EventBridge checks a target's ARN.
    let target = FunctionRef::parse(&input.function)?;
    state.store.get_function(&target.name).await?;
    let function = match &target.qualifier {
        Some(q) => format!("{}:{q}", target.name),
        None => target.name.clone(),
    };
    let enabled = input.enabled.unwrap_or(true);
    let mut record = ScheduleRecord {
        name: input.name,
        expression: input.expression,
        timezone,
        function,
        input: fixed,
        enabled,
        created_ms: now_ms(),
        next_fire_ms: None,
        last_fire_ms: None,
    };
    if enabled {
        record.next_fire_ms = next_fire(&record, record.created_ms);
    }
    state.store.create_schedule(record.clone()).await?;
    state.scheduler.changed();
    Ok((StatusCode::CREATED, Json(schedule_json(&record))).into_response())
}

pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = state
        .store
        .list_schedules()
        .await?
        .iter()
        .map(schedule_json)
        .collect();
    Ok(Json(json!({ "schedules": items })))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(schedule_json(&state.store.get_schedule(&name).await?)))
}

pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_schedule(&name).await?;
    state.scheduler.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(state: &ApiState, name: &str, enabled: bool) -> ApiResult<Json<Value>> {
    let s = state.store.get_schedule(name).await?;
    // Enabling starts from now: periods that passed while it was disabled do not fire.
    let next = if enabled {
        next_fire(&s, now_ms())
    } else {
        None
    };
    state
        .store
        .set_schedule_enabled(name, enabled, next)
        .await?;
    state.scheduler.changed();
    Ok(Json(schedule_json(&state.store.get_schedule(name).await?)))
}

pub async fn enable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(&state, &name, true).await
}

pub async fn disable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(&state, &name, false).await
}
