//! Nimbus execution. A [`Runtime`] turns an invocation of a resolved function version into a
//! result: it takes a warm instance from the [`pool`] or starts one in a sandbox, hands the event
//! to the instance through the Lambda Runtime API the instance polls, captures what the instance
//! prints, and frames it with Lambda's START/END/REPORT lines.
//!
//! Nothing here knows about the management API or HTTP clients; the API crate calls [`Runtime::invoke`].

mod bootstraps;
pub mod coalesce;
mod cpugate;
mod detach;
mod instance;
mod interpreters;
mod invoke;
mod output;
pub mod peer;
pub mod pool;
mod provision;
mod runtime_api;
mod spares;
mod target;
mod zygote;

pub use bootstraps::install_bootstraps;
pub use cpugate::{CpuGateConfig, CpuGateStatus, FunctionDemand};
pub use interpreters::{discover_interpreters, Interpreter, Interpreters};
pub use invoke::{
    new_request_id, InstanceInfo, InvokeError, InvokeOutcome, InvokeRequest, Runtime, RuntimeConfig,
};
pub use provision::ProvisionStatus;
pub use target::{resolve_target, InvokeTarget};
