//! The gateway's resources as Nimbus keeps them: an API (its routes, integrations, stages and
//! CORS configuration) is one document; a deployment is an immutable snapshot of the routes,
//! integrations and CORS that a stage serves; a custom domain name maps hosts to an API's stage.
//! The stored JSON is this module's serde shape (fields added later must have defaults); the
//! management API's wire shapes live in `admin`.

use std::collections::BTreeMap;
use std::str::FromStr;

use nimbus_core::Qualifier;
use serde::{Deserialize, Serialize};

use crate::cors::CorsConfiguration;
use crate::routing::RouteKey;

/// The account id the gateway reports in events and ARNs.
pub const ACCOUNT_ID: &str = "000000000000";
/// The region the gateway reports.
pub const REGION: &str = "us-east-1";
/// API Gateway's integration timeout bounds for HTTP APIs: 50 ms to 30 s, 30 s by default.
pub const MIN_TIMEOUT_MS: u64 = 50;
pub const MAX_TIMEOUT_MS: u64 = 30_000;
/// The stage that is served without a path prefix.
pub const DEFAULT_STAGE: &str = "$default";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiDoc {
    pub api_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub created_ms: i64,
    #[serde(default)]
    pub cors: Option<CorsConfiguration>,
    #[serde(default)]
    pub disable_execute_api_endpoint: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// By route id.
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    /// By integration id.
    #[serde(default)]
    pub integrations: BTreeMap<String, Integration>,
    /// By stage name.
    #[serde(default)]
    pub stages: BTreeMap<String, Stage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub route_id: String,
    pub route_key: RouteKey,
    /// `integrations/{integrationId}`, as API Gateway writes a route's target.
    #[serde(default)]
    pub target: Option<String>,
}

impl Route {
    /// The integration id the target names, if the target is an integration.
    pub fn integration_id(&self) -> Option<&str> {
        self.target.as_deref()?.strip_prefix("integrations/")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    pub integration_id: String,
    pub kind: IntegrationKind,
    /// `2.0` or `1.0` (function integrations); HTTP integrations use `1.0` as on AWS.
    pub payload_format_version: String,
    pub timeout_ms: u64,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum IntegrationKind {
    /// `AWS_PROXY`: invoke a function. `uri` is as the user gave it (name, `name:qualifier`,
    /// a function ARN or API Gateway's invocation URI for one).
    Function { uri: String },
    /// `HTTP_PROXY`: forward to a backend URL.
    Http {
        uri: String,
        /// `None` (or `ANY`) forwards the request's own method.
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        request_parameters: BTreeMap<String, String>,
    },
    /// `MOCK` (a Nimbus extension for HTTP APIs): a fixed response.
    Mock {
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub stage_name: String,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub auto_deploy: bool,
    #[serde(default)]
    pub stage_variables: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// Access log settings: where API Gateway would send them (kept as given) and the line
    /// format with `$context` variables. Lines are written when a format is set.
    #[serde(default)]
    pub access_log_destination: Option<String>,
    #[serde(default)]
    pub access_log_format: Option<String>,
    pub created_ms: i64,
    pub last_updated_ms: i64,
}

/// What a deployment freezes: the routes with their integrations, and the CORS configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDoc {
    pub deployment_id: String,
    #[serde(default)]
    pub description: String,
    pub created_ms: i64,
    #[serde(default)]
    pub auto_deployed: bool,
    pub routes: Vec<DeployedRoute>,
    #[serde(default)]
    pub cors: Option<CorsConfiguration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeployedRoute {
    pub route_key: RouteKey,
    /// `None` when the route had no integration at deployment time (requests to it get 500).
    pub integration: Option<Integration>,
}

impl ApiDoc {
    /// The snapshot a new deployment of this API freezes.
    pub fn snapshot(
        &self,
        deployment_id: String,
        description: String,
        created_ms: i64,
        auto_deployed: bool,
    ) -> DeploymentDoc {
        DeploymentDoc {
            deployment_id,
            description,
            created_ms,
            auto_deployed,
            routes: self
                .routes
                .values()
                .map(|r| DeployedRoute {
                    route_key: r.route_key.clone(),
                    integration: r
                        .integration_id()
                        .and_then(|id| self.integrations.get(id))
                        .cloned(),
                })
                .collect(),
            cors: self.cors.clone(),
        }
    }
}

/// A custom domain name and the API stages mapped under it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainDoc {
    pub domain_name: String,
    #[serde(default)]
    pub mappings: Vec<ApiMapping>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiMapping {
    pub api_mapping_id: String,
    pub api_id: String,
    pub stage: String,
    /// The first path segment(s) under which the stage is served on this domain (empty: the root).
    #[serde(default)]
    pub api_mapping_key: String,
}

/// Why a name or value given to the management API is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(String),
}

/// Stage names as API Gateway allows them: `$default`, or 1–128 of letters, digits, `-`, `_`.
pub fn check_stage_name(name: &str) -> Result<(), ModelError> {
    if name == DEFAULT_STAGE {
        return Ok(());
    }
    if name.is_empty() || name.len() > 128 {
        return Err(ModelError::Invalid(format!(
            "stage name {name:?} must be 1 to 128 characters long"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(ModelError::Invalid(format!(
            "stage name {name:?} may only contain letters, digits, '-' and '_' (found {c:?}), or be $default"
        )));
    }
    Ok(())
}

/// Stage variable names and values as API Gateway allows them.
pub fn check_stage_variables(vars: &BTreeMap<String, String>) -> Result<(), ModelError> {
    for (k, v) in vars {
        if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ModelError::Invalid(format!(
                "stage variable name {k:?} must be 1 to 64 letters, digits or '_'"
            )));
        }
        if v.len() > 2048 {
            return Err(ModelError::Invalid(format!(
                "stage variable {k} is {} characters long; the limit is 2048",
                v.len()
            )));
        }
        if let Some(c) = v.chars().find(|c| {
            !(c.is_alphanumeric()
                || " -._~:/?#&=,".contains(*c)
                || matches!(
                    *c,
                    '@' | '!' | '$' | '\'' | '(' | ')' | '*' | '+' | ';' | '%'
                ))
        }) {
            return Err(ModelError::Invalid(format!(
                "stage variable {k} contains {c:?}, which API Gateway does not allow in values"
            )));
        }
    }
    Ok(())
}

/// The function a function integration's URI names: `name`, `name:qualifier`, a function ARN
/// (`arn:aws:lambda:region:account:function:name[:qualifier]`), or API Gateway's invocation URI
/// (`arn:aws:apigateway:region:lambda:path/2015-03-31/functions/<function ARN>/invocations`).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTarget {
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

impl FromStr for FunctionTarget {
    type Err = ModelError;
    fn from_str(uri: &str) -> Result<FunctionTarget, ModelError> {
        let bad = |why: &str| {
            ModelError::Invalid(format!(
                "integration URI {uri:?} does not name a function: {why}"
            ))
        };
        let mut s = uri;
        if let Some(rest) = s.strip_prefix("arn:aws:apigateway:") {
            let start = rest
                .find(":lambda:path/2015-03-31/functions/")
                .ok_or_else(|| bad("an API Gateway invocation URI must contain :lambda:path/2015-03-31/functions/"))?;
            s = &rest[start + ":lambda:path/2015-03-31/functions/".len()..];
            s = s
                .strip_suffix("/invocations")
                .ok_or_else(|| bad("an API Gateway invocation URI must end with /invocations"))?;
        }
        let r = nimbus_core::FunctionRef::parse(s).map_err(|e| bad(&e.to_string()))?;
        Ok(FunctionTarget {
            name: r.name,
            qualifier: r.qualifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_targets() {
        let ok = [
            ("items", "items", None),
            ("items:live", "items", Some("live")),
            ("items:3", "items", Some("3")),
            (
                "arn:aws:lambda:us-east-1:000000000000:function:items",
                "items",
                None,
            ),
            (
                "arn:aws:lambda:us-east-1:000000000000:function:items:live",
                "items",
                Some("live"),
            ),
            (
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:items:7/invocations",
                "items",
                Some("7"),
            ),
        ];
        for (uri, name, q) in ok {
            let t: FunctionTarget = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(t.name, name, "{uri}");
            assert_eq!(
                t.qualifier,
                q.map(|q| Qualifier::parse(q).unwrap()),
                "{uri}"
            );
        }
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:0:function",
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/items",
            "items:a:b",
            "bad name",
        ] {
            assert!(bad.parse::<FunctionTarget>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stage_names() {
        for ok in ["$default", "prod", "dev-2", "a_b", &"x".repeat(128)] {
            assert_eq!(check_stage_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "pr od", "prod/1", "$prod", "ünï", &"x".repeat(129)] {
            assert!(check_stage_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stage_variables() {
        let vars = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            check_stage_variables(&vars("backend", "http://127.0.0.1:9/x?y=1")),
            Ok(())
        );
        assert!(check_stage_variables(&vars("bad-name", "x")).is_err());
        assert!(check_stage_variables(&vars("k", "a\"b")).is_err());
        assert!(check_stage_variables(&vars("k", &"v".repeat(2049))).is_err());
    }
}
