//! Built-in queues with SQS's semantics: the engine behind the SQS-compatible API, event
//! source mappings and queue destinations.
//!
//! Every change to messages (send, receive, delete, visibility, purge) goes to one writer task
//! that applies whatever queued up meanwhile in one transaction (group commit) and only then
//! answers each caller, so a sent message is on disk before SendMessage returns, and a receive
//! is recorded (receive count, new receipt) before the message is handed out. A lone op (the
//! writer idle, the store's connection free) commits on its caller's thread instead, with the
//! same promise. Long polls wait on
//! a per-queue `Notify` that commits wake, or until the next message becomes visible.
//! Queue attributes are cached (single node: only this engine changes them).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use nimbus_core::sqs::{self, MessageAttributeValue, QueueAttributes, SqsError};
use nimbus_store::{
    now_ms, Dedup, HandleOutcome, NewMessage, QueueCounts, QueueMessage, QueueOp, QueueOpResult,
    QueueRecord, Redrive, Store, StoreError,
};
use tokio::sync::{mpsc, oneshot, Notify};

/// Ops one transaction applies at most.
const MAX_BATCH: usize = 1024;
/// FIFO deduplication window.
const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;
/// SQS's minimum time between two purges of a queue.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// SQS's wait before a deleted queue's name can be used again.
const RECREATE_AFTER: Duration = Duration::from_secs(60);
/// How often messages past their retention are deleted.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);

/// A queue as the engine knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub attributes: QueueAttributes,
    pub tags: BTreeMap<String, String>,
    pub created_ms: i64,
    pub modified_ms: i64,
}

impl QueueInfo {
    pub fn arn(&self) -> String {
        sqs::queue_arn(&self.name)
    }
}

/// One message to send.
#[derive(Debug, Clone, Default)]
pub struct SendEntry {
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttributeValue>,
    /// Message system attributes (AWSTraceHeader).
    pub system_attributes: BTreeMap<String, MessageAttributeValue>,
    pub delay_seconds: Option<u32>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
}

/// What SendMessage returns for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct SendResult {
    pub message_id: String,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub md5_system_attributes: Option<String>,
    /// FIFO: the message's sequence number.
    pub sequence_number: Option<String>,
}

/// ReceiveMessage's options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveOptions {
    pub max: usize,
    /// Long polling: `None` takes the queue's ReceiveMessageWaitTimeSeconds.
    pub wait_seconds: Option<u32>,
    /// `None` takes the queue's VisibilityTimeout.
    pub visibility_timeout: Option<u32>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_body: String,
    pub attributes: BTreeMap<String, MessageAttributeValue>,
    /// SQS's message system attributes by name (SentTimestamp, ApproximateReceiveCount, …).
    pub system: BTreeMap<String, String>,
}

type Reply = oneshot::Sender<Result<QueueOpResult, SqsError>>;

struct Inner {
    store: Arc<dyn Store>,
    writer: mpsc::UnboundedSender<(QueueOp, Reply)>,
    /// Ops sent to the writer and not yet answered.
    queued: AtomicUsize,
    queues: Mutex<HashMap<String, Arc<QueueInfo>>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// When each queue was last purged (SQS allows one purge per 60 s).
    purged: Mutex<HashMap<String, std::time::Instant>>,
    /// When queues were deleted (a name can be created again 60 s after).
    deleted: Mutex<HashMap<String, std::time::Instant>>,
    metrics: Arc<crate::QueueMetrics>,
}

/// The queue engine. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

fn internal(e: impl std::fmt::Display) -> SqsError {
    SqsError::internal_error(format!("the queue store failed: {e}"))
}

fn store_error(e: StoreError) -> SqsError {
    match e {
        StoreError::NotFound(_) => SqsError::queue_does_not_exist(),
        other => internal(other),
    }
}

/// A receipt handle: the queue, the message's sequence and the receive's token, opaque to
/// clients (URL-safe base64).
fn encode_handle(queue: &str, seq: i64, receipt: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{seq}:{receipt}:{queue}"))
}

fn decode_handle(queue: &str, handle: &str) -> Result<(i64, i64), SqsError> {
    let invalid = || SqsError::receipt_handle_is_invalid(handle);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(handle)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let seq = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    let receipt = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    if parts.next() != Some(queue) {
        return Err(invalid());
    }
    Ok((seq, receipt))
}

impl Queues {
    /// Starts the writer and the retention task.
    pub fn start(store: Arc<dyn Store>) -> Queues {
        let (writer, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            store,
            writer,
            queued: AtomicUsize::new(0),
            queues: Mutex::default(),
            waiters: Mutex::default(),
            purged: Mutex::default(),
            deleted: Mutex::default(),
            metrics: Arc::default(),
        });
        tokio::spawn(write_loop(inner.clone(), rx));
        tokio::spawn(expiry_loop(inner.store.clone()));
        Queues { inner }
    }

    /// The queues' metrics (a telemetry collector).
    pub fn metrics(&self) -> Arc<crate::QueueMetrics> {
        self.inner.metrics.clone()
    }

    fn waiter(&self, queue: &str) -> Arc<Notify> {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    fn forget(&self, queue: &str) {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
    }

    async fn run(&self, op: QueueOp) -> Result<QueueOpResult, SqsError> {
        if let Some(r) = self.run_now(&op) {
            return r;
        }
        let (tx, rx) = oneshot::channel();
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        if self.inner.writer.send((op, tx)).is_err() {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(internal("the server is shutting down"));
        }
        rx.await
            .map_err(|_| internal("the server is shutting down"))?
    }

    /// A lone caller (nothing queued for the writer, the store's connection free) commits its
    /// op on its own thread: no hop to the writer task and none to a blocking thread, which is
    /// most of a request's cost when requests come one at a time. Under load the writer is
    /// busy and ops take the group commit.
    fn run_now(&self, op: &QueueOp) -> Option<Result<QueueOpResult, SqsError>> {
        if !short(op) || self.inner.queued.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let results = self.inner.store.queue_ops_now(std::slice::from_ref(op))?;
        let r = match results {
            Ok(mut results) => match results.pop() {
                Some(r) => r.map_err(store_error),
                None => Err(internal("the store answered no result")),
            },
            Err(e) => {
                tracing::error!(error = %e, "a queue transaction failed; its caller is told");
                Err(internal(&e))
            }
        };
        wake(&self.inner, sent_to(op).into_iter());
        Some(r)
    }

    /// The queue named `name` (cached).
    pub async fn queue(&self, name: &str) -> Result<Arc<QueueInfo>, SqsError> {
        if let Some(q) = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(q.clone());
        }
        let rec = self
            .inner
            .store
            .get_queue(name)
            .await
            .map_err(store_error)?;
        let info = Arc::new(info_from_record(rec)?);
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// CreateQueue: creates the queue, or returns the existing one when every given attribute
    /// matches it (QueueNameExists otherwise).
    pub async fn create_queue(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Arc<QueueInfo>, SqsError> {
        sqs::validate_queue_name(name)?;
        let attrs = QueueAttributes::for_create(name, attributes)?;
        self.check_redrive(&attrs).await?;
        match self.queue(name).await {
            Ok(existing) if existing.attributes == attrs => return Ok(existing),
            Ok(existing) => return Err(name_exists(name, &existing.attributes, &attrs)),
            Err(e) if e.code == SqsError::queue_does_not_exist().code => {}
            Err(e) => return Err(e),
        }
        if let Some(at) = self
            .inner
            .deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            if at.elapsed() < RECREATE_AFTER {
                return Err(SqsError::queue_deleted_recently(name));
            }
        }
        let now = now_ms();
        let rec = QueueRecord {
            name: name.to_string(),
            attributes: serde_json::to_string(&attrs).map_err(internal)?,
            tags,
            created_ms: now,
            modified_ms: now,
        };
        match self.inner.store.create_queue(rec).await {
            Ok(()) => {}
            // Created meanwhile by someone else: the same rule applies.
            Err(StoreError::Conflict(_)) => {
                let existing = self.queue(name).await?;
                return if existing.attributes == attrs {
                    Ok(existing)
                } else {
                    Err(name_exists(name, &existing.attributes, &attrs))
                };
            }
            Err(e) => return Err(internal(e)),
        }
        self.queue(name).await
    }

    /// A dead-letter queue must exist and be of the same kind (FIFO or standard).
    async fn check_redrive(&self, attrs: &QueueAttributes) -> Result<(), SqsError> {
        let Some(r) = &attrs.redrive_policy else {
            return Ok(());
        };
        let dlq_name = sqs::queue_name_from_arn(&r.dead_letter_target_arn).ok_or_else(|| {
            SqsError::invalid_attribute_value(
                "RedrivePolicy",
                "deadLetterTargetArn is not an SQS queue ARN",
            )
        })?;
        let dlq = self.queue(dlq_name).await.map_err(|_| {
            SqsError::invalid_attribute_value(
                "RedrivePolicy",
                &format!("Dead letter target does not exist: {dlq_name}"),
            )
        })?;
        if dlq.attributes.fifo_queue != attrs.fifo_queue {
            return Err(SqsError::invalid_attribute_value(
                "RedrivePolicy",
                "the dead-letter queue of a FIFO queue must be a FIFO queue, and of a standard queue a standard queue",
            ));
        }
        Ok(())
    }

    /// Queue names starting with `prefix`, by name.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SqsError> {
        let all = self
            .inner
            .store
            .list_queues(prefix)
            .await
            .map_err(internal)?;
        Ok(all.into_iter().map(|q| q.name).collect())
    }

    /// SetQueueAttributes.
    pub async fn set_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), SqsError> {
        let q = self.queue(name).await?;
        let mut attrs = q.attributes.clone();
        attrs.set(attributes)?;
        self.check_redrive(&attrs).await?;
        let doc = serde_json::to_string(&attrs).map_err(internal)?;
        self.inner
            .store
            .update_queue(name, Some(doc), None, now_ms())
            .await
            .map_err(store_error)?;
        self.forget(name);
        Ok(())
    }

    /// Every attribute GetQueueAttributes can report, with the current message counts.
    pub async fn attributes(&self, name: &str) -> Result<BTreeMap<String, String>, SqsError> {
        let q = self.queue(name).await?;
        let counts: QueueCounts = self
            .inner
            .store
            .queue_counts(name, now_ms())
            .await
            .map_err(store_error)?;
        let mut out = q.attributes.to_map();
        out.insert("QueueArn".into(), q.arn());
        out.insert("CreatedTimestamp".into(), (q.created_ms / 1000).to_string());
        out.insert(
            "LastModifiedTimestamp".into(),
            (q.modified_ms / 1000).to_string(),
        );
        out.insert(
            "ApproximateNumberOfMessages".into(),
            counts.visible.to_string(),
        );
        out.insert(
            "ApproximateNumberOfMessagesNotVisible".into(),
            counts.in_flight.to_string(),
        );
        out.insert(
            "ApproximateNumberOfMessagesDelayed".into(),
            counts.delayed.to_string(),
        );
        Ok(out)
    }

    /// TagQueue / UntagQueue: the new tag set.
    pub async fn set_tags(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), SqsError> {
        self.inner
            .store
            .update_queue(name, None, Some(tags), now_ms())
            .await
            .map_err(store_error)?;
        self.forget(name);
        Ok(())
    }

    /// DeleteQueue: the queue and its messages; long polls on it end.
    pub async fn delete_queue(&self, name: &str) -> Result<(), SqsError> {
        self.inner
            .store
            .delete_queue(name)
            .await
            .map_err(store_error)?;
        self.forget(name);
        self.inner.metrics.forget(name);
        self.inner
            .purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let mut deleted = self.inner.deleted.lock().unwrap_or_else(|p| p.into_inner());
        deleted.retain(|_, at| at.elapsed() < RECREATE_AFTER);
        deleted.insert(name.to_string(), std::time::Instant::now());
        drop(deleted);
        if let Some(w) = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        {
            w.notify_waiters();
        }
        Ok(())
    }

    /// PurgeQueue: deletes every message; returns how many. A second purge within 60 s is
    /// refused (PurgeQueueInProgress), as SQS does.
    pub async fn purge(&self, name: &str) -> Result<u64, SqsError> {
        self.queue(name).await?;
        {
            let mut purged = self.inner.purged.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if let Some(at) = purged.get(name) {
                if now.duration_since(*at) < PURGE_INTERVAL {
                    return Err(SqsError::purge_queue_in_progress(name));
                }
            }
            purged.insert(name.to_string(), now);
        }
        match self
            .run(QueueOp::Purge {
                queue: name.to_string(),
            })
            .await?
        {
            QueueOpResult::Purged(n) => Ok(n),
            other => Err(internal(format!("unexpected result {other:?}"))),
        }
    }

    /// SendMessage / SendMessageBatch: each entry is validated on its own (a bad one fails
    /// alone); the good ones are stored in one transaction before this returns.
    pub async fn send(
        &self,
        name: &str,
        entries: Vec<SendEntry>,
    ) -> Result<Vec<Result<SendResult, SqsError>>, SqsError> {
        let q = self.queue(name).await?;
        let now = now_ms();
        let mut results: Vec<Result<SendResult, SqsError>> = Vec::with_capacity(entries.len());
        let mut messages = Vec::new();
        let mut slots = Vec::new();
        for entry in entries {
            match prepare(&q.attributes, entry, now) {
                Ok((msg, result)) => {
                    slots.push(results.len());
                    results.push(Ok(result));
                    messages.push(msg);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if messages.is_empty() {
            return Ok(results);
        }
        let sent = match self
            .run(QueueOp::Send {
                queue: name.to_string(),
                messages,
            })
            .await?
        {
            QueueOpResult::Sent(s) => s,
            other => return Err(internal(format!("unexpected result {other:?}"))),
        };
        self.inner
            .metrics
            .sent(name, sent.iter().filter(|s| !s.duplicate).count() as u64);
        for (slot, s) in slots.into_iter().zip(sent) {
            if let Some(Ok(r)) = results.get_mut(slot) {
                // A FIFO duplicate answers with the original message's id.
                r.message_id = s.message_id;
                if q.attributes.fifo_queue {
                    r.sequence_number = Some(format!("{:020}", s.seq));
                }
            }
        }
        Ok(results)
    }

    /// ReceiveMessage, long-polling up to the wait time when nothing is there.
    pub async fn receive(
        &self,
        name: &str,
        opts: ReceiveOptions,
    ) -> Result<Vec<Received>, SqsError> {
        let q = self.queue(name).await?;
        let wait_s = opts
            .wait_seconds
            .unwrap_or(q.attributes.receive_message_wait_time_seconds);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s as u64);
        self.receive_until(name, opts, deadline).await
    }

    /// A receive that waits until `deadline` for messages (the event source mappings' batching
    /// window uses this with any duration).
    pub async fn receive_until(
        &self,
        name: &str,
        opts: ReceiveOptions,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Received>, SqsError> {
        let notify = self.waiter(name);
        loop {
            let q = self.queue(name).await?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            let visibility = opts
                .visibility_timeout
                .unwrap_or(q.attributes.visibility_timeout);
            let redrive = self.redrive(&q).await;
            let dead_letter_queue = redrive.as_ref().map(|r| r.dead_letter_queue.clone());
            let result = self
                .run(QueueOp::Receive {
                    queue: name.to_string(),
                    max: opts.max.max(1),
                    now_ms: now,
                    visible_until_ms: now + visibility as i64 * 1000,
                    fifo: q.attributes.fifo_queue,
                    redrive,
                    receipt: rand::random::<i64>() & i64::MAX,
                })
                .await?;
            let QueueOpResult::Received {
                messages,
                moved,
                next_visible_ms,
            } = result
            else {
                return Err(internal("unexpected result of a receive"));
            };
            self.inner
                .metrics
                .received(name, messages.len() as u64, moved as u64);
            if let Some(dlq) = dead_letter_queue.filter(|_| moved > 0) {
                self.waiter(&dlq).notify_waiters();
            }
            if !messages.is_empty() {
                return messages.into_iter().map(|m| received(name, m)).collect();
            }
            let now_i = tokio::time::Instant::now();
            if now_i >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(at) = next_visible_ms {
                let in_ms = (at - now_ms()).max(1) as u64;
                until = until.min(now_i + Duration::from_millis(in_ms));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn redrive(&self, q: &QueueInfo) -> Option<Redrive> {
        let r = q.attributes.redrive_policy.as_ref()?;
        let dlq_name = sqs::queue_name_from_arn(&r.dead_letter_target_arn)?;
        let dlq = self.queue(dlq_name).await.ok()?;
        Some(Redrive {
            dead_letter_queue: dlq_name.to_string(),
            max_receive_count: r.max_receive_count,
            retention_ms: dlq.attributes.message_retention_period as i64 * 1000,
        })
    }

    /// DeleteMessage / DeleteMessageBatch. A handle from an older receive of a message received
    /// again since deletes nothing and is not an error (SQS's rule); a malformed one or another
    /// queue's is ReceiptHandleIsInvalid.
    pub async fn delete(
        &self,
        name: &str,
        handles: &[String],
    ) -> Result<Vec<Result<(), SqsError>>, SqsError> {
        let q = self.queue(name).await?;
        let mut out: Vec<Result<(), SqsError>> = Vec::with_capacity(handles.len());
        let mut valid = Vec::new();
        for h in handles {
            match decode_handle(name, h) {
                Ok(pair) => {
                    out.push(Ok(()));
                    valid.push(pair);
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if !valid.is_empty() {
            let done = match self
                .run(QueueOp::Delete {
                    queue: name.to_string(),
                    handles: valid,
                })
                .await?
            {
                QueueOpResult::Handles(h) => {
                    h.iter().filter(|o| **o == HandleOutcome::Done).count()
                }
                _ => 0,
            };
            self.inner.metrics.deleted(name, done as u64);
            // A FIFO delete may unlock a group whose next message a long poll is waiting for.
            if q.attributes.fifo_queue {
                self.waiter(name).notify_waiters();
            }
        }
        Ok(out)
    }

    /// ChangeMessageVisibility / …Batch: the message becomes visible `seconds` from now.
    pub async fn change_visibility(
        &self,
        name: &str,
        entries: &[(String, u32)],
    ) -> Result<Vec<Result<(), SqsError>>, SqsError> {
        self.queue(name).await?;
        let now = now_ms();
        let mut out: Vec<Result<(), SqsError>> = Vec::with_capacity(entries.len());
        let mut valid = Vec::new();
        let mut slots = Vec::new();
        for (h, seconds) in entries {
            match decode_handle(name, h) {
                Ok((seq, receipt)) => {
                    slots.push(out.len());
                    out.push(Ok(()));
                    valid.push((seq, receipt, now + *seconds as i64 * 1000));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if valid.is_empty() {
            return Ok(out);
        }
        let outcomes = match self
            .run(QueueOp::ChangeVisibility {
                queue: name.to_string(),
                now_ms: now,
                entries: valid,
            })
            .await?
        {
            QueueOpResult::Handles(h) => h,
            other => return Err(internal(format!("unexpected result {other:?}"))),
        };
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            if outcome != HandleOutcome::Done {
                out[slot] = Err(SqsError::message_not_inflight());
            }
        }
        // A message made visible now can satisfy a waiting long poll.
        self.waiter(name).notify_waiters();
        Ok(out)
    }
}

/// QueueNameExists naming the first attribute whose value differs, as SQS does.
fn name_exists(name: &str, existing: &QueueAttributes, asked: &QueueAttributes) -> SqsError {
    let (old, new) = (existing.to_map(), asked.to_map());
    let differs = old
        .keys()
        .chain(new.keys())
        .find(|k| old.get(*k) != new.get(*k))
        .cloned();
    let mut e = SqsError::queue_name_exists(name);
    if let Some(attr) = differs {
        e.message = format!(
            "A queue already exists with the same name ({name}) and a different value for attribute {attr}"
        );
    }
    e
}

fn info_from_record(rec: QueueRecord) -> Result<QueueInfo, SqsError> {
    let attributes: QueueAttributes = serde_json::from_str(&rec.attributes)
        .map_err(|e| internal(format!("queue {} has unreadable attributes: {e}", rec.name)))?;
    Ok(QueueInfo {
        name: rec.name,
        attributes,
        tags: rec.tags,
        created_ms: rec.created_ms,
        modified_ms: rec.modified_ms,
    })
}

/// Validates one entry against the queue and builds the stored message.
fn prepare(
    attrs: &QueueAttributes,
    e: SendEntry,
    now: i64,
) -> Result<(NewMessage, SendResult), SqsError> {
    sqs::validate_body(&e.body)?;
    sqs::validate_message_attributes(&e.attributes)?;
    sqs::check_message_size(
        sqs::message_size(&e.body, &e.attributes),
        attrs.maximum_message_size,
    )?;
    let fields = sqs::resolve_send_fields(
        attrs,
        &e.body,
        e.delay_seconds.map(i64::from),
        e.group_id.as_deref(),
        e.dedup_id.as_deref(),
    )?;
    let dedup = fields.deduplication_id.map(|id| Dedup {
        key: match (
            &fields.message_group_id,
            attrs.deduplication_scope.as_deref(),
        ) {
            (Some(g), Some("messageGroup")) => format!("{g}\u{0}{id}"),
            _ => id.clone(),
        },
        id,
        until_ms: now + DEDUP_WINDOW_MS,
    });
    let group_id = fields.message_group_id;
    let delay = fields.delay_seconds as i64;
    let md5_body = sqs::md5_hex(e.body.as_bytes());
    let (attributes, md5_attributes) = if e.attributes.is_empty() {
        (None, None)
    } else {
        (
            Some(serde_json::to_string(&e.attributes).map_err(internal)?),
            Some(sqs::md5_of_attributes(&e.attributes)),
        )
    };
    let (system_attributes, md5_system) = if e.system_attributes.is_empty() {
        (None, None)
    } else {
        (
            Some(serde_json::to_string(&e.system_attributes).map_err(internal)?),
            Some(sqs::md5_of_attributes(&e.system_attributes)),
        )
    };
    let message_id = uuid::Uuid::new_v4().to_string();
    let msg = NewMessage {
        message_id: message_id.clone(),
        body: e.body,
        attributes,
        system_attributes,
        md5_body: md5_body.clone(),
        md5_attributes: md5_attributes.clone(),
        sent_ms: now,
        visible_ms: now + delay * 1000,
        expires_ms: now + attrs.message_retention_period as i64 * 1000,
        group_id,
        dedup,
    };
    Ok((
        msg,
        SendResult {
            message_id,
            md5_body,
            md5_attributes,
            md5_system_attributes: md5_system,
            sequence_number: None,
        },
    ))
}

fn received(queue: &str, m: QueueMessage) -> Result<Received, SqsError> {
    let attributes: BTreeMap<String, MessageAttributeValue> = match &m.attributes {
        Some(json) => serde_json::from_str(json).map_err(internal)?,
        None => BTreeMap::new(),
    };
    let mut system = BTreeMap::new();
    system.insert("SenderId".to_string(), nimbus_core::ACCOUNT_ID.to_string());
    system.insert("SentTimestamp".to_string(), m.sent_ms.to_string());
    system.insert(
        "ApproximateReceiveCount".to_string(),
        m.receive_count.to_string(),
    );
    system.insert(
        "ApproximateFirstReceiveTimestamp".to_string(),
        m.first_receive_ms.unwrap_or(m.sent_ms).to_string(),
    );
    if let Some(g) = &m.group_id {
        system.insert("MessageGroupId".to_string(), g.clone());
    }
    // Only FIFO messages carry a deduplication id; they also have a sequence number.
    if let Some(d) = &m.dedup_id {
        system.insert("MessageDeduplicationId".to_string(), d.clone());
        system.insert("SequenceNumber".to_string(), format!("{:020}", m.seq));
    }
    if let Some(json) = &m.system_attributes {
        let sys: BTreeMap<String, MessageAttributeValue> =
            serde_json::from_str(json).map_err(internal)?;
        if let Some(v) = sys
            .get("AWSTraceHeader")
            .and_then(|v| v.string_value.clone())
        {
            system.insert("AWSTraceHeader".to_string(), v);
        }
    }
    Ok(Received {
        message_id: m.message_id,
        receipt_handle: encode_handle(queue, m.seq, m.receipt),
        body: m.body,
        md5_body: m.md5_body,
        attributes,
        system,
    })
}

/// Group commit for every message change.
async fn write_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(QueueOp, Reply)>) {
    // Waits for the first, then takes whatever else is already queued, up to the limit.
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut queued);
        let n = batch.len();
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let woken: Vec<String> = ops.iter().filter_map(sent_to).cloned().collect();
        match inner.store.queue_ops(ops).await {
            Ok(results) => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r.map_err(store_error));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "a queue transaction failed; its callers are told");
                for reply in replies {
                    let _ = reply.send(Err(internal(&e)));
                }
            }
        }
        inner.queued.fetch_sub(n, Ordering::SeqCst);
        wake(&inner, woken.iter());
    }
}

/// Whether `op` is as small as one SQS call's (at most ten messages, and SendMessageBatch's
/// total is capped by the message size limit), so committing it on an async worker holds that
/// thread about as long as parsing a request does. A purge, or a mapping's receive or delete
/// of a batch of thousands, always goes to the writer.
fn short(op: &QueueOp) -> bool {
    match op {
        QueueOp::Send { messages, .. } => messages.len() <= sqs::MAX_BATCH_ENTRIES,
        QueueOp::Receive { max, .. } => *max <= sqs::MAX_BATCH_ENTRIES,
        QueueOp::Delete { handles, .. } => handles.len() <= sqs::MAX_BATCH_ENTRIES,
        QueueOp::ChangeVisibility { entries, .. } => entries.len() <= sqs::MAX_BATCH_ENTRIES,
        QueueOp::Purge { .. } => false,
    }
}

/// The queue a send puts messages in (whose long polls its commit wakes); `None` for other ops.
fn sent_to(op: &QueueOp) -> Option<&String> {
    match op {
        QueueOp::Send { queue, .. } => Some(queue),
        _ => None,
    }
}

/// Wakes the long polls waiting on `queues` (after a commit that sent to them).
fn wake<'a>(inner: &Inner, queues: impl Iterator<Item = &'a String>) {
    let waiters = inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
    for q in queues {
        if let Some(w) = waiters.get(q) {
            w.notify_waiters();
        }
    }
}

async fn expiry_loop(store: Arc<dyn Store>) {
    loop {
        tokio::time::sleep(EXPIRY_INTERVAL).await;
        match store.expire_queue_messages(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "queue messages past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expired queue messages failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ops_the_size_of_one_sqs_call_may_run_on_a_worker() {
        let receive = |max| QueueOp::Receive {
            queue: "q".into(),
            max,
            now_ms: 0,
            visible_until_ms: 0,
            fifo: false,
            redrive: None,
            receipt: 1,
        };
        let delete = |n| QueueOp::Delete {
            queue: "q".into(),
            handles: vec![(1, 1); n],
        };
        assert!(short(&receive(10)));
        assert!(
            !short(&receive(11)),
            "a mapping's big batch goes to the writer"
        );
        assert!(short(&delete(10)));
        assert!(!short(&delete(10_000)));
        assert!(!short(&QueueOp::Purge { queue: "q".into() }));
    }

    #[test]
    fn receipt_handles_round_trip_and_name_their_queue() {
        let h = encode_handle("orders", 42, 7_000_000_001);
        assert_eq!(decode_handle("orders", &h).unwrap(), (42, 7_000_000_001));
        for bad in [h.as_str(), "", "not base64!", "MTI"] {
            let other = decode_handle("other", bad).unwrap_err();
            assert_eq!(other.code, SqsError::receipt_handle_is_invalid("x").code);
        }
    }
}
