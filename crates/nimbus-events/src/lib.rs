//! Nimbus's event-driven side. Today: durable asynchronous invocation ([`AsyncEvents`]):
//! an accepted event is on disk before the caller gets 202, a dispatcher runs it at least once
//! with Lambda's retry policy, event age limit and destinations ([`destination`]).
//! [`schedules`]: EventBridge rate/cron schedules that fire functions through it.
//! Queues and event source mappings join this crate next.

pub mod destination;
mod dispatch;
pub mod mappings;
mod metrics;
pub mod queues;
pub mod schedules;

pub use dispatch::{AcceptError, AsyncConfig, AsyncEvents};
pub use metrics::{AsyncMetrics, QueueMetrics};
pub use schedules::Scheduler;

/// Lambda's defaults for asynchronous invocation.
pub const DEFAULT_MAX_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_MAX_EVENT_AGE_S: u32 = 21_600;
/// The bounds PutFunctionEventInvokeConfig accepts.
pub const MAX_RETRY_ATTEMPTS: u32 = 2;
pub const MIN_EVENT_AGE_S: u32 = 60;
pub const MAX_EVENT_AGE_S: u32 = 21_600;
