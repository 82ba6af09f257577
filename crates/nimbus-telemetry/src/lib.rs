//! Nimbus logs and metrics: the lines Lambda frames every invocation with, a writer that moves
//! log lines from instances into the store in batches, off the invocation path, and execution
//! metrics per function and version (Prometheus text and per-minute series).

mod lines;
pub mod metrics;
mod sink;

pub use lines::{
    end_line, log_group_name, log_stream_name, report_line, start_line, utc_timestamp, Report,
};
pub use metrics::{InvocationRecord, Metrics, MetricsRollup, MinuteStats, VersionSeries};
pub use sink::{LogSink, LogWriter};
