//! Nimbus domain types and rules: what a function, a version and an alias are, which names and
//! values are valid, the limits Lambda users expect, and EventBridge schedule expressions. This
//! crate does no I/O.

mod error;
mod function;
mod limits;
mod names;
mod runtime;
pub mod schedule;
pub mod sqs;

pub use error::CoreError;
pub use function::{
    Alias, AliasRouting, FunctionConfig, FunctionVersion, LogFormat, VersionId, LATEST,
};
pub use limits::Limits;
pub use names::{
    validate_alias_name, validate_env_key, validate_function_name, validate_handler, FunctionRef,
    Qualifier, ACCOUNT_ID, REGION,
};
pub use runtime::Runtime;
pub use schedule::{parse_time_zone, ScheduleError, ScheduleExpression};
