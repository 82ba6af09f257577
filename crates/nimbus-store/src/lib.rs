//! Nimbus persistence. [`Store`] is the metadata interface every other crate uses (functions,
//! versions, aliases, log events, metric minutes); [`SqliteStore`] is the embedded
//! implementation and a PostgreSQL one can sit behind the same trait. [`BlobStore`] keeps code archives on disk,
//! content-addressed by sha256, and unpacks each archive once, read-only.

mod blob;
pub mod code;
mod queues;
mod sqlite;
mod store;

pub use blob::{BlobStore, CollectGuard, StoredCode, UploadGuard};
pub use code::{CodeError, Unpacked, UnzipLimits};
pub use queues::{
    Dedup, EventSourceMappingDoc, HandleOutcome, NewMessage, QueueCounts, QueueMessage, QueueOp,
    QueueOpResult, QueueOpsResult, QueueRecord, Redrive, Sent,
};
pub use sqlite::SqliteStore;
pub use store::{
    AsyncEvent, EventInvokeConfig, FunctionRecord, GatewayApiDoc, GatewayDeploymentDoc, LogEvent,
    LogQuery, MetricMinute, NewAsyncEvent, NewLogEvent, Page, ProvisionedConfig, ScheduleRecord,
    Store, StoreError,
};

/// Milliseconds since the Unix epoch, the store's one time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh revision id (Lambda's RevisionId is a UUID).
pub fn new_revision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
