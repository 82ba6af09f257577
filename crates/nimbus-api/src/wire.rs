//! Lambda's JSON shapes, apart from the domain types; conversions happen here and only here.

use std::collections::BTreeMap;

use base64::Engine;
use nimbus_core::{Alias, FunctionRef, FunctionVersion, VersionId};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(field: &str, data: &str) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::invalid(format!("{field} is not valid base64: {e}")))
}

/// Lambda's CodeSha256: base64 of the digest. Nimbus keys blobs by hex.
pub fn code_sha_b64(hex_sha: &str) -> String {
    hex::decode(hex_sha).map(|d| b64(&d)).unwrap_or_default()
}

pub fn code_sha_hex(b64_sha: &str) -> ApiResult<String> {
    let raw = unb64("CodeSha256", b64_sha)?;
    if raw.len() != 32 {
        return Err(ApiError::invalid(
            "CodeSha256 must be the base64 of a 32-byte SHA-256 digest",
        ));
    }
    Ok(hex::encode(raw))
}

/// Lambda's timestamp format: `2019-09-24T18:18:16.525+0000`.
pub fn lambda_time(ms: i64) -> String {
    nimbus_telemetry::utc_timestamp(ms, "+0000")
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    #[serde(default)]
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorage {
    pub size: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<FunctionCode>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    #[serde(default)]
    pub publish: bool,
    pub environment: Option<Environment>,
    pub package_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub dry_run: bool,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingConfig {
    #[serde(default)]
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAliasRequest {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateAliasRequest {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfig>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConcurrencyRequest {
    pub reserved_concurrent_executions: Option<i64>,
}

/// A listing in Lambda's shape: `{KEY: [...], "NextMarker": ...}` (the marker only when more
/// items follow).
pub fn page(
    key: &str,
    items: Vec<serde_json::Value>,
    next_marker: Option<String>,
) -> axum::Json<serde_json::Value> {
    let mut out = serde_json::json!({ key: items });
    if let Some(m) = next_marker {
        out["NextMarker"] = m.into();
    }
    axum::Json(out)
}

/// GetFunctionConfiguration's shape (also inside GetFunction and ListFunctions).
pub fn function_configuration(v: &FunctionVersion) -> serde_json::Value {
    let arn = match v.version {
        VersionId::Latest => FunctionRef::arn(&v.function),
        VersionId::Published(n) => FunctionRef::qualified_arn(&v.function, &n.to_string()),
    };
    let c = &v.config;
    serde_json::json!({
        "FunctionName": v.function,
        "FunctionArn": arn,
        "Runtime": c.runtime_name,
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": v.code_size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_mb,
        "LastModified": lambda_time(v.last_modified_ms),
        "CodeSha256": code_sha_b64(&v.code_sha256),
        "Version": v.version.to_string(),
        "Environment": { "Variables": c.environment },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": v.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": { "Size": c.ephemeral_mb },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": { "LogFormat": "Text", "LogGroup": nimbus_telemetry::log_group_name(&v.function) },
    })
}

pub fn alias_configuration(a: &Alias) -> serde_json::Value {
    let mut out = serde_json::json!({
        "AliasArn": FunctionRef::qualified_arn(&a.function, &a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version.to_string(),
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if let Some(r) = &a.routing {
        out["RoutingConfig"] = serde_json::json!({
            "AdditionalVersionWeights": { r.additional_version.to_string(): r.weight }
        });
    }
    out
}

/// The per-minute metrics of a function (`/nimbus/v1/functions/{name}/metrics`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionMetrics {
    pub function: String,
    /// Seconds per point.
    pub period: u64,
    pub since: String,
    pub until: String,
    pub series: Vec<MetricSeries>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSeries {
    pub version: String,
    /// The whole window as one point; its percentiles come from the merged histograms.
    pub summary: MetricPoint,
    /// Minutes with any activity, oldest first; minutes left out had none.
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPoint {
    /// Start of the minute (of the window, for a summary), UTC.
    pub timestamp: String,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    pub provisioned_concurrency_invocations: u64,
    pub duration_p50_ms: Option<f64>,
    pub duration_p90_ms: Option<f64>,
    pub duration_p99_ms: Option<f64>,
    pub duration_max_ms: Option<f64>,
    pub init_duration_p50_ms: Option<f64>,
    pub concurrent_executions_max: u64,
    pub provisioned_concurrency_utilization_max: Option<f64>,
}

impl FunctionMetrics {
    pub fn new(
        function: String,
        period: u64,
        since_ms: i64,
        until_ms: i64,
        series: Vec<nimbus_telemetry::VersionSeries>,
    ) -> FunctionMetrics {
        let time = |ms: i64| nimbus_telemetry::utc_timestamp(ms, "Z");
        // Milliseconds to the microsecond: the histograms are not more precise than that.
        let ms = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        let point = |m: &nimbus_telemetry::MinuteStats| MetricPoint {
            timestamp: time(m.minute_ms),
            invocations: m.invocations,
            errors: m.errors,
            throttles: m.throttles,
            cold_starts: m.cold_starts,
            provisioned_concurrency_invocations: m.provisioned_invocations,
            duration_p50_ms: ms(m.duration_p50_ms),
            duration_p90_ms: ms(m.duration_p90_ms),
            duration_p99_ms: ms(m.duration_p99_ms),
            duration_max_ms: ms(m.duration_max_ms),
            init_duration_p50_ms: ms(m.init_duration_p50_ms),
            concurrent_executions_max: m.concurrent_executions_max,
            provisioned_concurrency_utilization_max: m.provisioned_concurrency_utilization_max,
        };
        FunctionMetrics {
            function,
            period,
            since: time(since_ms),
            until: time(until_ms),
            series: series
                .iter()
                .map(|s| MetricSeries {
                    version: s.version.clone(),
                    summary: point(&s.summary),
                    points: s.points.iter().map(point).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(
            lambda_time(1_569_349_096_525),
            "2019-09-24T18:18:16.525+0000"
        );
    }

    #[test]
    fn sha_round_trip() {
        let hex_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let b = code_sha_b64(hex_sha);
        assert_eq!(b, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        assert_eq!(code_sha_hex(&b).unwrap(), hex_sha);
    }

    #[test]
    fn metric_series_shape() {
        let stats = nimbus_telemetry::MinuteStats {
            minute_ms: 1_767_225_600_000,
            invocations: 5,
            errors: 1,
            throttles: 0,
            cold_starts: 1,
            provisioned_invocations: 0,
            duration_p50_ms: Some(12.345_678_9),
            duration_p90_ms: Some(20.0),
            duration_p99_ms: Some(30.0),
            duration_max_ms: Some(31.0),
            init_duration_p50_ms: None,
            concurrent_executions_max: 2,
            provisioned_concurrency_utilization_max: None,
        };
        let out = FunctionMetrics::new(
            "f".into(),
            60,
            1_767_225_600_000,
            1_767_229_200_000,
            vec![nimbus_telemetry::VersionSeries {
                version: "$LATEST".into(),
                summary: stats.clone(),
                points: vec![stats],
            }],
        );
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["period"], 60);
        assert_eq!(v["since"], "2026-01-01T00:00:00.000Z");
        let p = &v["series"][0]["points"][0];
        assert_eq!(p["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(p["invocations"], 5);
        assert_eq!(p["coldStarts"], 1);
        assert_eq!(p["durationP50Ms"], 12.346);
        assert_eq!(p["initDurationP50Ms"], serde_json::Value::Null);
        assert_eq!(p["concurrentExecutionsMax"], 2);
        assert!(p.get("provisionedConcurrencyUtilizationMax").is_some());
        assert_eq!(v["series"][0]["summary"]["errors"], 1);
    }
}
