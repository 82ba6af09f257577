//! Functions, their versions and aliases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{validate_env_key, validate_handler, CoreError, Limits, Runtime};

/// The mutable version every function has.
pub const LATEST: &str = "$LATEST";

/// How a function's log lines are written (Lambda's LoggingConfig.LogFormat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything about a function version that decides how it runs. Stored with each version:
/// `$LATEST` is edited in place, published versions are frozen copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// The runtime as the user spelled it (`python3.12`), echoed back by the API.
    pub runtime_name: String,
    pub handler: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub ephemeral_mb: u32,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// Accepted and echoed for compatibility with tools that require one; Nimbus has no IAM.
    #[serde(default)]
    pub role: String,
}

impl FunctionConfig {
    /// The runtime Nimbus runs for `runtime_name`.
    pub fn runtime(&self) -> Result<Runtime, CoreError> {
        Runtime::parse(&self.runtime_name)
    }

    /// Checks every field against Lambda's rules; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), CoreError> {
        let runtime = self.runtime()?;
        validate_handler(&self.handler)?;
        if runtime != Runtime::Provided && !self.handler.contains('.') {
            return Err(CoreError::new(
                "Handler",
                format!(
                    "handler {:?} must be MODULE.FUNCTION (for example app.handler) for the {} runtime",
                    self.handler, runtime
                ),
            ));
        }
        if !(Limits::MEMORY_MIN_MB..=Limits::MEMORY_MAX_MB).contains(&self.memory_mb) {
            return Err(CoreError::new(
                "MemorySize",
                format!(
                    "memory size {} MB is outside {}..={} MB",
                    self.memory_mb,
                    Limits::MEMORY_MIN_MB,
                    Limits::MEMORY_MAX_MB
                ),
            ));
        }
        if !(Limits::TIMEOUT_MIN_S..=Limits::TIMEOUT_MAX_S).contains(&self.timeout_s) {
            return Err(CoreError::new(
                "Timeout",
                format!(
                    "timeout {} s is outside {}..={} seconds",
                    self.timeout_s,
                    Limits::TIMEOUT_MIN_S,
                    Limits::TIMEOUT_MAX_S
                ),
            ));
        }
        if !(Limits::EPHEMERAL_MIN_MB..=Limits::EPHEMERAL_MAX_MB).contains(&self.ephemeral_mb) {
            return Err(CoreError::new(
                "EphemeralStorage",
                format!(
                    "ephemeral storage {} MB is outside {}..={} MB",
                    self.ephemeral_mb,
                    Limits::EPHEMERAL_MIN_MB,
                    Limits::EPHEMERAL_MAX_MB
                ),
            ));
        }
        if self.description.chars().count() > Limits::DESCRIPTION_CHARS {
            return Err(CoreError::new(
                "Description",
                format!(
                    "description is longer than {} characters",
                    Limits::DESCRIPTION_CHARS
                ),
            ));
        }
        let mut env_bytes = 0;
        for (k, v) in &self.environment {
            validate_env_key(k)?;
            if v.contains('\0') {
                // No process environment can carry it (C strings end there).
                return Err(CoreError::new(
                    "Environment",
                    format!("the value of environment variable {k} contains a NUL character"),
                ));
            }
            if RESERVED_ENV.contains(&k.as_str()) {
                return Err(CoreError::new(
                    "Environment",
                    format!(
                        "environment variable {k} is reserved by the runtime and cannot be set"
                    ),
                ));
            }
            env_bytes += k.len() + v.len();
        }
        if env_bytes > Limits::ENV_BYTES {
            return Err(CoreError::new(
                "Environment",
                format!(
                    "environment variables take {env_bytes} bytes, more than the {} byte limit",
                    Limits::ENV_BYTES
                ),
            ));
        }
        Ok(())
    }
}

/// Variables Lambda reserves (users may not set them).
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "_X_AMZN_TRACE_ID",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// A version id: `$LATEST` or a published number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VersionId {
    Latest,
    Published(u64),
}

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionId::Latest => f.write_str(LATEST),
            VersionId::Published(n) => write!(f, "{n}"),
        }
    }
}

impl VersionId {
    pub fn parse(s: &str) -> Option<VersionId> {
        if s == LATEST {
            return Some(VersionId::Latest);
        }
        s.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(VersionId::Published)
    }
}

/// One version of a function: its configuration and code, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersion {
    pub function: String,
    pub version: VersionId,
    pub config: FunctionConfig,
    /// Hex sha256 of the code zip; the blob store's key.
    pub code_sha256: String,
    pub code_size: u64,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Changes whenever this version's record changes (Lambda's RevisionId).
    pub revision_id: String,
}

/// Weighted routing of an alias: `additional_version` gets `weight` (0.0–1.0) of invocations.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRouting {
    pub additional_version: u64,
    pub weight: f64,
}

/// A named pointer at a version, optionally splitting traffic with a second one.
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub function: String,
    pub name: String,
    pub function_version: VersionId,
    pub description: String,
    pub routing: Option<AliasRouting>,
    pub revision_id: String,
}

impl Alias {
    /// Checks the routing rules Lambda applies: weights in [0, 1], a distinct published
    /// additional version, and a published primary version when routing is used.
    pub fn validate(&self) -> Result<(), CoreError> {
        if let Some(r) = &self.routing {
            if !(0.0..=1.0).contains(&r.weight) || r.weight.is_nan() {
                return Err(CoreError::new(
                    "RoutingConfig",
                    format!(
                        "weight {} for version {} must be between 0.0 and 1.0",
                        r.weight, r.additional_version
                    ),
                ));
            }
            match self.function_version {
                VersionId::Latest => return Err(CoreError::new(
                    "RoutingConfig",
                    "an alias that splits traffic must point at a published version, not $LATEST",
                )),
                VersionId::Published(v) if v == r.additional_version => {
                    return Err(CoreError::new(
                        "RoutingConfig",
                        format!("the additional version {v} is the alias's own version"),
                    ))
                }
                VersionId::Published(_) => {}
            }
        }
        Ok(())
    }

    /// Picks the version for one invocation, given a uniform sample in [0, 1).
    pub fn pick(&self, sample: f64) -> VersionId {
        match &self.routing {
            Some(r) if sample < r.weight => VersionId::Published(r.additional_version),
            _ => self.function_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FunctionConfig {
        FunctionConfig {
            runtime_name: "python3.12".into(),
            handler: "app.handler".into(),
            memory_mb: 128,
            timeout_s: 3,
            ephemeral_mb: 512,
            environment: BTreeMap::new(),
            description: String::new(),
            role: String::new(),
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(config().validate().is_ok());
        type Mutation = Box<dyn Fn(&mut FunctionConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("MemorySize", Box::new(|c| c.memory_mb = 64)),
            ("MemorySize", Box::new(|c| c.memory_mb = 10_241)),
            ("Timeout", Box::new(|c| c.timeout_s = 0)),
            ("Timeout", Box::new(|c| c.timeout_s = 901)),
            ("Runtime", Box::new(|c| c.runtime_name = "cobol".into())),
            ("Handler", Box::new(|c| c.handler = "nodot".into())),
            ("EphemeralStorage", Box::new(|c| c.ephemeral_mb = 100)),
            (
                "Environment",
                Box::new(|c| {
                    c.environment
                        .insert("AWS_LAMBDA_RUNTIME_API".into(), "x".into());
                }),
            ),
            (
                "Environment",
                Box::new(|c| {
                    c.environment.insert("BIG".into(), "x".repeat(5000));
                }),
            ),
            (
                "Environment",
                Box::new(|c| {
                    c.environment.insert("NUL".into(), "a\0b".into());
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = config();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        let mut provided = config();
        provided.runtime_name = "provided.al2023".into();
        provided.handler = "bootstrap".into();
        assert!(provided.validate().is_ok());
    }

    #[test]
    fn alias_routing() {
        let mut a = Alias {
            function: "f".into(),
            name: "live".into(),
            function_version: VersionId::Published(1),
            description: String::new(),
            routing: Some(AliasRouting {
                additional_version: 2,
                weight: 0.25,
            }),
            revision_id: String::new(),
        };
        assert!(a.validate().is_ok());
        assert_eq!(a.pick(0.1), VersionId::Published(2));
        assert_eq!(a.pick(0.3), VersionId::Published(1));
        a.routing = Some(AliasRouting {
            additional_version: 1,
            weight: 0.5,
        });
        assert!(a.validate().is_err());
        a.routing = Some(AliasRouting {
            additional_version: 2,
            weight: 1.5,
        });
        assert!(a.validate().is_err());
        a.function_version = VersionId::Latest;
        a.routing = Some(AliasRouting {
            additional_version: 2,
            weight: 0.5,
        });
        assert!(a.validate().is_err());
    }
}
