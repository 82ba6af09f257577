//! Errors in Lambda's wire shape: the `x-amzn-ErrorType` header names the exception (botocore
//! maps it to its exception class) and the body is `{"Type": "User", "Message": "..."}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::CoreError;
use nimbus_store::{CodeError, StoreError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra body fields some exceptions carry (TooManyRequestsException's Reason).
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            reason: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "Type": if self.status.is_server_error() { "Service" } else { "User" },
            "Message": self.message,
            "message": self.message,
        });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut resp = (
            self.status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        ApiError::invalid(format!("{}: {}", e.field, e.message))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(not_found_message(&what)),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::PreconditionFailed(m) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                m,
            ),
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store failure");
                ApiError::internal(format!("the store failed: {m}"))
            }
        }
    }
}

/// Lambda says "Function not found: ARN"; keep that wording for functions.
fn not_found_message(what: &str) -> String {
    if let Some(name) = what.strip_prefix("function ") {
        return format!(
            "Function not found: {}",
            nimbus_core::FunctionRef::arn(name)
        );
    }
    if let Some(rest) = what.strip_prefix("version ") {
        if let Some((v, name)) = rest.split_once(" of function ") {
            return format!(
                "Function not found: {}",
                nimbus_core::FunctionRef::qualified_arn(name, v)
            );
        }
    }
    if let Some(rest) = what.strip_prefix("alias ") {
        if let Some((a, name)) = rest.split_once(" of function ") {
            return format!(
                "Cannot find alias arn: {}",
                nimbus_core::FunctionRef::qualified_arn(name, a)
            );
        }
    }
    format!("{what} not found")
}

impl From<CodeError> for ApiError {
    fn from(e: CodeError) -> ApiError {
        match e {
            CodeError::Io { .. }
            | CodeError::Write { .. }
            | CodeError::DestinationExists { .. } => {
                tracing::error!(error = %e, "storing code failed");
                ApiError::internal(format!("storing the code failed: {e}"))
            }
            e => ApiError::invalid(format!("Code.ZipFile: {e}")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
