//! The `Store` trait: what Nimbus keeps about functions, and the errors it can give.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use nimbus_core::{Alias, FunctionVersion, VersionId};

use crate::queues::{EventSourceMappingDoc, QueueCounts, QueueOp, QueueOpsResult, QueueRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist; the string says what ("function hello", "alias live of hello").
    #[error("{0} not found")]
    NotFound(String),
    /// The thing already exists or the change conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// A RevisionId given by the caller no longer matches.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request contradicts what is stored (for example a CodeSha256 that does not match).
    #[error("{0}")]
    Invalid(String),
    /// The storage backend failed; the message says where.
    #[error("store failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// A caller's RevisionId no longer matches (Lambda's wording).
    pub fn stale_revision() -> StoreError {
        StoreError::PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into(),
        )
    }
}

/// Function-level facts that are not part of any version.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRecord {
    pub name: String,
    pub created_ms: i64,
    pub tags: BTreeMap<String, String>,
    pub reserved_concurrency: Option<u32>,
}

/// One page of a listing and the marker of the next page, if any.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// A log line on its way into the store.
#[derive(Debug, Clone, PartialEq)]
///
/// The function, stream and request id are shared: every line an instance writes carries the
/// same ones, so they are reference-counted rather than copied per line.
pub struct NewLogEvent {
    pub function: Arc<str>,
    pub stream: Arc<str>,
    pub ts_ms: i64,
    /// The invocation the line belongs to; None for lines printed outside any invocation.
    pub request_id: Option<Arc<str>>,
    pub message: String,
}

/// A stored log line; `id` increases monotonically and is the cursor for `--follow`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub id: i64,
    pub function: String,
    pub stream: String,
    pub ts_ms: i64,
    /// The invocation the line belongs to; None for lines printed outside any invocation.
    pub request_id: Option<String>,
    pub message: String,
}

/// Which log events to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub function: String,
    /// Only events at or after this time.
    pub since_ms: Option<i64>,
    /// Only events with an id greater than this (follow cursor).
    pub after_id: Option<i64>,
    /// Only events whose message contains this text.
    pub filter: Option<String>,
    /// Only events of this invocation.
    pub request_id: Option<String>,
    pub limit: usize,
}

/// One function version's execution metrics for one UTC minute, in a form that can be merged:
/// counts add up, maxima take the larger, and duration histograms add bucket by bucket. The
/// bucket layout (what index `i` means) belongs to nimbus-telemetry; the store keeps the counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricMinute {
    pub function: String,
    /// The executed version (`$LATEST`, `3`); for provisioned concurrency, the qualifier it is
    /// configured on (an alias name or a version).
    pub version: String,
    /// Start of the minute, ms since the Unix epoch (a multiple of 60 000).
    pub minute_ms: i64,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    /// Invocations served by provisioned instances.
    pub provisioned_invocations: u64,
    pub duration_sum_ms: f64,
    pub duration_max_ms: f64,
    /// Sparse histogram of invocation durations: (bucket index, count), ascending index.
    pub duration_buckets: Vec<(u16, u64)>,
    pub init_duration_max_ms: f64,
    /// Sparse histogram of init durations (cold starts that reported one).
    pub init_duration_buckets: Vec<(u16, u64)>,
    pub concurrency_max: u64,
    /// Largest busy/allocated ratio of provisioned instances seen in the minute.
    pub provisioned_utilization_max: Option<f64>,
}

impl MetricMinute {
    /// Adds `other` (the same function, version and minute) into `self`.
    pub fn merge(&mut self, other: &MetricMinute) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.cold_starts += other.cold_starts;
        self.provisioned_invocations += other.provisioned_invocations;
        self.duration_sum_ms += other.duration_sum_ms;
        self.duration_max_ms = self.duration_max_ms.max(other.duration_max_ms);
        merge_buckets(&mut self.duration_buckets, &other.duration_buckets);
        self.init_duration_max_ms = self.init_duration_max_ms.max(other.init_duration_max_ms);
        merge_buckets(
            &mut self.init_duration_buckets,
            &other.init_duration_buckets,
        );
        self.concurrency_max = self.concurrency_max.max(other.concurrency_max);
        self.provisioned_utilization_max = match (
            self.provisioned_utilization_max,
            other.provisioned_utilization_max,
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Adds sparse bucket counts, keeping the result sorted by index.
fn merge_buckets(into: &mut Vec<(u16, u64)>, from: &[(u16, u64)]) {
    for &(i, n) in from {
        match into.binary_search_by_key(&i, |&(j, _)| j) {
            Ok(at) => into[at].1 += n,
            Err(at) => into.insert(at, (i, n)),
        }
    }
}

/// Metadata storage. Every method is a single transaction: either all of it happened or none.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a function with its `$LATEST` version. Conflict if the name is taken.
    async fn create_function(
        &self,
        record: FunctionRecord,
        latest: FunctionVersion,
    ) -> Result<(), StoreError>;
    async fn get_function(&self, name: &str) -> Result<FunctionRecord, StoreError>;
    /// [`Store::get_function`] without the copy: a store that caches records hands out the
    /// cached one. For the invocation path, which reads a record on every call.
    async fn function_shared(&self, name: &str) -> Result<Arc<FunctionRecord>, StoreError> {
        self.get_function(name).await.map(Arc::new)
    }
    /// Functions in name order, starting after `marker`, with their `$LATEST` version.
    async fn list_functions(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<FunctionVersion>, StoreError>;
    /// Replaces `$LATEST`. When `expected_revision` is given it must match the stored one.
    async fn update_latest(
        &self,
        latest: FunctionVersion,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn set_reserved_concurrency(
        &self,
        name: &str,
        value: Option<u32>,
    ) -> Result<(), StoreError>;
    async fn set_tags(&self, name: &str, tags: BTreeMap<String, String>) -> Result<(), StoreError>;
    /// Deletes a function with every version and alias.
    async fn delete_function(&self, name: &str) -> Result<(), StoreError>;
    /// Deletes one published version. Conflict if an alias points at it.
    async fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError>;
    async fn get_version(
        &self,
        name: &str,
        version: VersionId,
    ) -> Result<FunctionVersion, StoreError>;
    /// [`Store::get_version`] without the copy (see [`Store::function_shared`]).
    async fn version_shared(
        &self,
        name: &str,
        version: VersionId,
    ) -> Result<Arc<FunctionVersion>, StoreError> {
        self.get_version(name, version).await.map(Arc::new)
    }
    /// `$LATEST` first, then published versions in order, starting after `marker`.
    async fn list_versions(
        &self,
        name: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<FunctionVersion>, StoreError>;
    /// Freezes `$LATEST` as the next version number. If `$LATEST` is unchanged since the newest
    /// published version, that version is returned instead (Lambda's rule).
    async fn publish_version(
        &self,
        name: &str,
        description: Option<String>,
        expected_code_sha256: Option<&str>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion, StoreError>;
    async fn create_alias(&self, alias: Alias) -> Result<(), StoreError>;
    async fn get_alias(&self, function: &str, name: &str) -> Result<Alias, StoreError>;
    async fn update_alias(
        &self,
        alias: Alias,
        expected_revision: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn delete_alias(&self, function: &str, name: &str) -> Result<(), StoreError>;
    async fn list_aliases(
        &self,
        function: &str,
        for_version: Option<VersionId>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<Alias>, StoreError>;
    /// Appends log events in one transaction.
    async fn append_logs(&self, events: Vec<NewLogEvent>) -> Result<(), StoreError>;
    async fn query_logs(&self, query: LogQuery) -> Result<Vec<LogEvent>, StoreError>;
    /// Deletes the log events older than `before_ms`, oldest first in the order they were
    /// stored, up to the first one that is not; returns how many. (Events are stored as they
    /// are written, so an older one stored after a newer one waits for a later purge; after
    /// the host's clock is stepped back, lines stamped by the fast clock hold back the purge
    /// of everything stored after them until the clock passes their time: kept, not lost.)
    async fn purge_logs(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Adds each row into the stored row of the same function, version and minute (see
    /// [`MetricMinute::merge`]), or stores it as it is; one transaction.
    async fn put_metric_minutes(&self, rows: Vec<MetricMinute>) -> Result<(), StoreError>;
    /// Stored minutes of a function (of one version, if given) with `from_ms <= minute_ms <
    /// until_ms`, ordered by version and minute.
    async fn metric_minutes(
        &self,
        function: &str,
        version: Option<&str>,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<MetricMinute>, StoreError>;
    /// Deletes minutes that start before `before_ms`; returns how many.
    async fn prune_metric_minutes(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Every code sha256 some version still refers to (for blob garbage collection).
    async fn referenced_code(&self) -> Result<Vec<String>, StoreError>;
    /// Creates or replaces a provisioned concurrency configuration (the function must exist).
    async fn put_provisioned(&self, cfg: ProvisionedConfig) -> Result<(), StoreError>;
    /// `NotFound` when there is no such configuration.
    async fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<(), StoreError>;
    /// Every configuration, or a function's, ordered by function then qualifier.
    async fn list_provisioned(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<ProvisionedConfig>, StoreError>;

    // Durable asynchronous invocations.
    /// Stores accepted events, all in one transaction (the caller batches for group commit);
    /// returns their ids, in order.
    async fn enqueue_async_events(
        &self,
        events: Vec<NewAsyncEvent>,
    ) -> Result<Vec<i64>, StoreError>;
    /// Leases up to `limit` events due at `now_ms` (not leased, or leased until before now)
    /// until `lease_until_ms`, oldest due first.
    async fn claim_async_events(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<AsyncEvent>, StoreError>;
    /// The events are done with (delivered, or dropped): they are deleted, in one transaction.
    async fn finish_async_events(&self, ids: Vec<i64>) -> Result<(), StoreError>;
    /// Records an attempt and makes the event due again at `next_attempt_ms`, unleased.
    async fn retry_async_event(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError>;
    /// Holds events of a paused function (reserved concurrency 0): each is due again only at
    /// its given time (when it passes its maximum age), unleased.
    async fn hold_async_events(&self, held: Vec<(i64, i64)>) -> Result<(), StoreError>;
    /// The function is no longer paused: its held events are due at `now_ms`.
    async fn release_held_async_events(
        &self,
        function: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Clears every lease (a single node starting: the leases died with the last server).
    async fn release_async_leases(&self) -> Result<u64, StoreError>;
    /// When the next event falls due (its lease's end if it is leased), if there is one.
    async fn next_async_due_ms(&self) -> Result<Option<i64>, StoreError>;
    /// How many events are stored (waiting, leased or scheduled for a retry).
    async fn count_async_events(&self) -> Result<u64, StoreError>;
    /// Creates or replaces a function's (qualifier's) asynchronous invocation configuration.
    async fn put_event_invoke_config(&self, cfg: EventInvokeConfig) -> Result<(), StoreError>;
    async fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<EventInvokeConfig, StoreError>;
    async fn delete_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<(), StoreError>;
    async fn list_event_invoke_configs(
        &self,
        function: &str,
    ) -> Result<Vec<EventInvokeConfig>, StoreError>;

    // Schedules.
    /// `Conflict` when the name is taken.
    async fn create_schedule(&self, s: ScheduleRecord) -> Result<(), StoreError>;
    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    async fn get_schedule(&self, name: &str) -> Result<ScheduleRecord, StoreError>;
    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError>;
    async fn set_schedule_enabled(
        &self,
        name: &str,
        enabled: bool,
        next_fire_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// Fires the period `period_ms` of an enabled schedule whose next fire it is: in one
    /// transaction, moves the schedule on to `next_fire_ms` and stores `event` for asynchronous
    /// invocation. `false` (and nothing stored) when the period is no longer due (fired
    /// already, the schedule disabled, changed or deleted): a period fires at most once.
    async fn fire_schedule(
        &self,
        name: &str,
        period_ms: i64,
        next_fire_ms: Option<i64>,
        event: NewAsyncEvent,
    ) -> Result<bool, StoreError>;

    // Queues (see `queues.rs`).
    /// `Conflict` when the name is taken.
    async fn create_queue(&self, queue: QueueRecord) -> Result<(), StoreError>;
    async fn get_queue(&self, name: &str) -> Result<QueueRecord, StoreError>;
    /// Queues whose names start with `prefix`, by name.
    async fn list_queues(&self, prefix: &str) -> Result<Vec<QueueRecord>, StoreError>;
    /// Replaces the attributes document (moving `modified_ms` on) and/or the tags.
    async fn update_queue(
        &self,
        name: &str,
        attributes: Option<String>,
        tags: Option<BTreeMap<String, String>>,
        modified_ms: i64,
    ) -> Result<(), StoreError>;
    /// Deletes the queue and its messages.
    async fn delete_queue(&self, name: &str) -> Result<(), StoreError>;
    /// Applies the ops in order in one transaction. The outer error fails them all (nothing
    /// committed); an inner one is that op's own (an unknown queue) and the others still apply.
    async fn queue_ops(&self, ops: Vec<QueueOp>) -> QueueOpsResult;
    /// `queue_ops` on the caller's own thread, when the store can start at once (its
    /// connection is free): `None` means it could not and nothing was done. Lets a lone caller
    /// skip the hops to a writer and a blocking thread; a store that cannot keeps the default.
    fn queue_ops_now(&self, _ops: &[QueueOp]) -> Option<QueueOpsResult> {
        None
    }
    async fn queue_counts(&self, name: &str, now_ms: i64) -> Result<QueueCounts, StoreError>;
    /// Deletes messages past their retention; returns how many.
    async fn expire_queue_messages(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Creates or replaces an event source mapping.
    async fn put_event_source_mapping(&self, m: EventSourceMappingDoc) -> Result<(), StoreError>;
    async fn get_event_source_mapping(
        &self,
        uuid: &str,
    ) -> Result<EventSourceMappingDoc, StoreError>;
    async fn list_event_source_mappings(&self) -> Result<Vec<EventSourceMappingDoc>, StoreError>;
    async fn delete_event_source_mapping(&self, uuid: &str) -> Result<(), StoreError>;

    // API gateway resources. The gateway crate owns their shape; the store keeps each API as one
    // JSON document with a revision, so every change is a read-modify-write checked against
    // concurrent writers.
    /// Every API, ordered by id.
    async fn list_gateway_apis(&self) -> Result<Vec<GatewayApiDoc>, StoreError>;
    /// `NotFound` when there is no such API.
    async fn get_gateway_api(&self, api_id: &str) -> Result<GatewayApiDoc, StoreError>;
    /// Creates the API (`expected_revision` `None`; `Conflict` if the id exists) or replaces it
    /// if its stored revision is `expected_revision` (else `PreconditionFailed`). Returns the
    /// new revision.
    async fn put_gateway_api(
        &self,
        api_id: &str,
        doc: String,
        expected_revision: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// Deletes the API and its deployments; `NotFound` when there is no such API.
    async fn delete_gateway_api(&self, api_id: &str) -> Result<(), StoreError>;
    /// Stores a new deployment of an existing API; deployments are never changed afterwards.
    async fn put_gateway_deployment(
        &self,
        api_id: &str,
        deployment: GatewayDeploymentDoc,
    ) -> Result<(), StoreError>;
    /// `NotFound` when the API has no such deployment.
    async fn get_gateway_deployment(
        &self,
        api_id: &str,
        deployment_id: &str,
    ) -> Result<GatewayDeploymentDoc, StoreError>;
    /// An API's deployments, oldest first.
    async fn list_gateway_deployments(
        &self,
        api_id: &str,
    ) -> Result<Vec<GatewayDeploymentDoc>, StoreError>;
    /// `NotFound` when the API has no such deployment.
    async fn delete_gateway_deployment(
        &self,
        api_id: &str,
        deployment_id: &str,
    ) -> Result<(), StoreError>;
    /// Every custom domain name with its document, ordered by name.
    async fn list_gateway_domains(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Creates or replaces a custom domain name's document.
    async fn put_gateway_domain(&self, domain_name: &str, doc: String) -> Result<(), StoreError>;
    /// `NotFound` when there is no such domain name.
    async fn delete_gateway_domain(&self, domain_name: &str) -> Result<(), StoreError>;
}

/// An accepted asynchronous invocation, as the accept path hands it to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAsyncEvent {
    pub request_id: String,
    pub function: String,
    /// The qualifier the caller gave (version or alias), if any.
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub received_ms: i64,
    /// Not to be run before this time (`None`: at once).
    pub not_before_ms: Option<i64>,
    /// Stored held: its function is paused (see `hold_async_events`).
    pub held: bool,
    /// Stored already leased until then: the caller runs it at once, without a claim.
    pub leased_until_ms: Option<i64>,
}

/// A stored asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncEvent {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub received_ms: i64,
    /// Attempts made so far (the first run is attempt 1).
    pub attempts: u32,
    pub next_attempt_ms: i64,
}

/// A function's (qualifier's) asynchronous invocation configuration; `None` fields take
/// Lambda's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInvokeConfig {
    pub function: String,
    /// `$LATEST`, a version number or an alias.
    pub qualifier: String,
    pub max_retry_attempts: Option<u32>,
    pub max_event_age_s: Option<u32>,
    /// Destination ARNs.
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

/// A schedule: an EventBridge expression in a time zone, firing a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub name: String,
    pub expression: String,
    /// An IANA zone name (`UTC` by default).
    pub timezone: String,
    /// `name` or `name:qualifier`.
    pub function: String,
    /// A fixed event (JSON) instead of EventBridge's Scheduled Event.
    pub input: Option<String>,
    pub enabled: bool,
    pub created_ms: i64,
    /// The period that fires next (`None`: no fire time left, or disabled).
    pub next_fire_ms: Option<i64>,
    pub last_fire_ms: Option<i64>,
}

/// One API gateway API as stored: its id, the revision of the document and the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayApiDoc {
    pub api_id: String,
    pub revision: u64,
    pub doc: String,
}

/// One immutable deployment of an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDeploymentDoc {
    pub deployment_id: String,
    pub created_ms: i64,
    pub doc: String,
}

/// A provisioned concurrency configuration: keep `requested` instances of the version (or of
/// the version the alias points at) named by `qualifier` initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedConfig {
    pub function: String,
    pub qualifier: String,
    pub requested: u32,
    pub last_modified_ms: i64,
}
