//! Nimbus logs: the lines Lambda frames every invocation with, and a writer that moves log lines
//! from instances into the store in batches, off the invocation path.

mod lines;
mod sink;

pub use lines::{
    end_line, log_group_name, log_stream_name, report_line, start_line, utc_timestamp, Report,
};
pub use sink::{LogSink, LogWriter};
