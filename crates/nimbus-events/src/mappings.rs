//! Event source mappings: a queue polled and delivered to a function in batches, in SQS's event
//! shape, as Lambda's SQS event source does.
//!
//! Each enabled mapping runs `MaximumConcurrency` pollers (default [`DEFAULT_CONCURRENCY`]). A
//! poller long-polls the queue, gathers up to `BatchSize` messages within the batching window,
//! invokes the function synchronously and deletes what succeeded: the whole batch on success,
//! all but the reported items with `ReportBatchItemFailures`, nothing when the function fails
//! (the messages become visible again after the queue's visibility timeout, and the queue's
//! redrive policy moves them to its dead-letter queue after `maxReceiveCount` receives).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use nimbus_core::sqs::SqsError;
use nimbus_core::Qualifier;
use nimbus_runtime::{resolve_target, InvokeError, InvokeRequest, Runtime};
use nimbus_store::{EventSourceMappingDoc, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::queues::{Queues, ReceiveOptions, Received};

/// Pollers of a mapping without ScalingConfig.MaximumConcurrency (Lambda starts SQS event
/// sources with five concurrent batches).
pub const DEFAULT_CONCURRENCY: u32 = 5;
/// The longest a poller long-polls before looking again.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// Lambda's synchronous payload limit: a batch is cut to fit.
const MAX_BATCH_BYTES: usize = 6 * 1024 * 1024;
/// How long a throttled batch waits before its messages are visible again.
const THROTTLE_RETRY_S: u32 = 1;

/// A mapping as stored (the document in `event_source_mappings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub uuid: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub queue: String,
    pub batch_size: u32,
    pub max_batching_window_s: u32,
    pub max_concurrency: Option<u32>,
    pub report_batch_item_failures: bool,
    pub enabled: bool,
    pub last_modified_ms: i64,
}

impl Mapping {
    pub fn function_arn(&self) -> String {
        match &self.qualifier {
            Some(q) => nimbus_core::FunctionRef::qualified_arn(&self.function, q),
            None => nimbus_core::FunctionRef::arn(&self.function),
        }
    }

    pub fn source_arn(&self) -> String {
        nimbus_core::sqs::queue_arn(&self.queue)
    }

    fn doc(&self) -> Result<EventSourceMappingDoc, StoreError> {
        Ok(EventSourceMappingDoc {
            uuid: self.uuid.clone(),
            function: self.function.clone(),
            source: self.queue.clone(),
            doc: serde_json::to_string(self).map_err(|e| StoreError::Backend(e.to_string()))?,
        })
    }
}

fn from_doc(d: &EventSourceMappingDoc) -> Result<Mapping, StoreError> {
    serde_json::from_str(&d.doc).map_err(|e| {
        StoreError::Backend(format!(
            "event source mapping {} is unreadable: {e}",
            d.uuid
        ))
    })
}

struct Running {
    stop: watch::Sender<bool>,
}

struct Inner {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    queues: Queues,
    running: Mutex<HashMap<String, Running>>,
    /// The last batch's outcome per mapping (Lambda's LastProcessingResult).
    results: Mutex<HashMap<String, String>>,
}

/// The event source mappings engine. Cheap to clone.
#[derive(Clone)]
pub struct Mappings {
    inner: Arc<Inner>,
}

impl Mappings {
    /// Starts the pollers of every enabled stored mapping.
    pub async fn start(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        queues: Queues,
    ) -> Result<Mappings, StoreError> {
        let m = Mappings {
            inner: Arc::new(Inner {
                store,
                runtime,
                queues,
                running: Mutex::default(),
                results: Mutex::default(),
            }),
        };
        for doc in m.inner.store.list_event_source_mappings().await? {
            match from_doc(&doc) {
                Ok(mapping) => m.apply(&mapping),
                Err(e) => tracing::error!(error = %e, "an event source mapping is not started"),
            }
        }
        Ok(m)
    }

    pub async fn list(&self) -> Result<Vec<Mapping>, StoreError> {
        self.inner
            .store
            .list_event_source_mappings()
            .await?
            .iter()
            .map(from_doc)
            .collect()
    }

    pub async fn get(&self, uuid: &str) -> Result<Mapping, StoreError> {
        from_doc(&self.inner.store.get_event_source_mapping(uuid).await?)
    }

    /// Stores the mapping (new or changed) and (re)starts or stops its pollers.
    pub async fn put(&self, mapping: &Mapping) -> Result<(), StoreError> {
        self.inner
            .store
            .put_event_source_mapping(mapping.doc()?)
            .await?;
        self.apply(mapping);
        Ok(())
    }

    pub async fn delete(&self, uuid: &str) -> Result<Mapping, StoreError> {
        let mapping = self.get(uuid).await?;
        self.inner.store.delete_event_source_mapping(uuid).await?;
        self.stop(uuid);
        self.results().remove(uuid);
        Ok(mapping)
    }

    /// The outcome of the mapping's last batch, in Lambda's words.
    pub fn last_result(&self, uuid: &str) -> String {
        self.results()
            .get(uuid)
            .cloned()
            .unwrap_or_else(|| "No records processed".into())
    }

    fn results(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inner.results.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self, uuid: &str) {
        if let Some(r) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid)
        {
            let _ = r.stop.send(true);
        }
    }

    /// Stops the mapping's pollers and, when it is enabled, starts new ones with its settings.
    /// A poller in the middle of a batch finishes it first.
    fn apply(&self, mapping: &Mapping) {
        self.stop(&mapping.uuid);
        if !mapping.enabled {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let pollers = mapping
            .max_concurrency
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        for _ in 0..pollers {
            tokio::spawn(poll_loop(
                self.inner.clone(),
                mapping.clone(),
                stopped.clone(),
            ));
        }
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mapping.uuid.clone(), Running { stop });
    }
}

fn record_result(inner: &Inner, uuid: &str, result: &str) {
    let mut r = inner.results.lock().unwrap_or_else(|p| p.into_inner());
    if r.get(uuid).map(String::as_str) != Some(result) {
        r.insert(uuid.to_string(), result.to_string());
    }
}

async fn poll_loop(inner: Arc<Inner>, m: Mapping, mut stopped: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        if *stopped.borrow() {
            return;
        }
        let batch = tokio::select! {
            b = gather(&inner.queues, &m) => b,
            _ = stopped.changed() => return,
        };
        let batch = match batch {
            Ok(b) => {
                failures = 0;
                b
            }
            Err(e) => {
                // Logged once per run of failures; the poller backs off (1 s doubling to a
                // minute) so a deleted queue costs nothing while its mapping remains.
                if failures == 0 {
                    tracing::warn!(uuid = %m.uuid, queue = %m.queue, error = %e.message, "polling a queue failed; retrying with backoff");
                }
                record_result(&inner, &m.uuid, &format!("PROBLEM: {}", e.message));
                let wait = Duration::from_secs(1 << failures.min(6));
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        deliver(&inner, &m, batch).await;
    }
}

/// Up to `batch_size` messages: waits for the first, then gathers more within the batching
/// window; cut to Lambda's payload limit (the rest made visible again at once).
async fn gather(queues: &Queues, m: &Mapping) -> Result<Vec<Received>, SqsError> {
    let want = m.batch_size.max(1) as usize;
    let opts = |max| ReceiveOptions {
        max,
        wait_seconds: None,
        visibility_timeout: None,
    };
    let mut batch = queues
        .receive_until(
            &m.queue,
            opts(want),
            tokio::time::Instant::now() + POLL_WAIT,
        )
        .await?;
    if batch.is_empty() {
        return Ok(batch);
    }
    if m.max_batching_window_s > 0 {
        let end = tokio::time::Instant::now() + Duration::from_secs(m.max_batching_window_s as u64);
        while batch.len() < want && tokio::time::Instant::now() < end {
            let more = queues
                .receive_until(&m.queue, opts(want - batch.len()), end)
                .await?;
            batch.extend(more);
        }
    }
    let mut size = 0;
    let fits = batch
        .iter()
        .take_while(|r| {
            size += r.body.len() + 512;
            size <= MAX_BATCH_BYTES
        })
        .count()
        .max(1);
    if fits < batch.len() {
        let rest: Vec<(String, u32)> = batch
            .split_off(fits)
            .into_iter()
            .map(|r| (r.receipt_handle, 0))
            .collect();
        queues.change_visibility(&m.queue, &rest).await?;
    }
    Ok(batch)
}

/// SQS's event shape for Lambda.
pub fn sqs_event(queue: &str, batch: &[Received]) -> Value {
    let arn = nimbus_core::sqs::queue_arn(queue);
    let records: Vec<Value> = batch
        .iter()
        .map(|r| {
            let attributes: serde_json::Map<String, Value> = r
                .system
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let message_attributes: serde_json::Map<String, Value> = r
                .attributes
                .iter()
                .map(|(name, v)| {
                    let mut o = serde_json::Map::new();
                    if let Some(s) = &v.string_value {
                        o.insert("stringValue".into(), s.clone().into());
                    }
                    if let Some(b) = &v.binary_value {
                        o.insert(
                            "binaryValue".into(),
                            base64::engine::general_purpose::STANDARD.encode(b).into(),
                        );
                    }
                    o.insert("stringListValues".into(), json!([]));
                    o.insert("binaryListValues".into(), json!([]));
                    o.insert("dataType".into(), v.data_type.clone().into());
                    (name.clone(), Value::Object(o))
                })
                .collect();
            json!({
                "messageId": r.message_id,
                "receiptHandle": r.receipt_handle,
                "body": r.body,
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": r.md5_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": nimbus_core::REGION,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Which messages of a successful invocation failed, per the function's
/// `batchItemFailures` response (`None`: the whole batch counts as failed, as Lambda treats
/// an unreadable response or an unknown identifier).
pub fn reported_failures(payload: &[u8], batch: &[Received]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if text.is_empty() || text == "null" {
        return Some(Vec::new());
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let failures = match v.get("batchItemFailures") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return None,
    };
    let mut out = Vec::with_capacity(failures.len());
    for f in failures {
        let id = f.get("itemIdentifier")?.as_str()?;
        if id.is_empty() || !batch.iter().any(|r| r.message_id == id) {
            return None;
        }
        out.push(id.to_string());
    }
    Some(out)
}

async fn deliver(inner: &Inner, m: &Mapping, batch: Vec<Received>) {
    let payload = sqs_event(&m.queue, &batch).to_string();
    let qualifier = match m.qualifier.as_deref().map(Qualifier::parse).transpose() {
        Ok(q) => q,
        Err(e) => {
            record_result(inner, &m.uuid, &format!("PROBLEM: {e}"));
            return;
        }
    };
    let target = match resolve_target(inner.store.as_ref(), &m.function, qualifier.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            // The messages come back after their visibility timeout.
            record_result(
                inner,
                &m.uuid,
                &format!("PROBLEM: Function call failed: {e}"),
            );
            tracing::warn!(uuid = %m.uuid, function = %m.function, error = %e, "an event source mapping's function cannot be invoked");
            return;
        }
    };
    let req = InvokeRequest {
        version: target.version,
        reserved_concurrency: target.reserved,
        payload: Bytes::from(payload),
        invoked_arn: target.invoked_arn,
        client_context: None,
        request_id: nimbus_runtime::new_request_id(),
        log_tail: false,
    };
    let handles = |keep: &dyn Fn(&Received) -> bool| -> Vec<String> {
        batch
            .iter()
            .filter(|r| keep(r))
            .map(|r| r.receipt_handle.clone())
            .collect()
    };
    let done = match inner.runtime.invoke(req).await {
        Err(InvokeError::Throttled { .. }) => {
            record_result(inner, &m.uuid, "PROBLEM: Function call throttled");
            let back: Vec<(String, u32)> = handles(&|_| true)
                .into_iter()
                .map(|h| (h, THROTTLE_RETRY_S))
                .collect();
            let _ = inner.queues.change_visibility(&m.queue, &back).await;
            return;
        }
        Err(InvokeError::ShuttingDown) => return,
        Ok(outcome) if outcome.function_error => {
            record_result(inner, &m.uuid, "PROBLEM: Function call failed");
            return;
        }
        Ok(outcome) if m.report_batch_item_failures => {
            match reported_failures(&outcome.payload, &batch) {
                Some(failed) => {
                    record_result(inner, &m.uuid, "OK");
                    handles(&|r| !failed.contains(&r.message_id))
                }
                None => {
                    record_result(
                        inner,
                        &m.uuid,
                        "PROBLEM: the function's batchItemFailures response is invalid; the whole batch failed",
                    );
                    return;
                }
            }
        }
        Ok(_) => {
            record_result(inner, &m.uuid, "OK");
            handles(&|_| true)
        }
    };
    if done.is_empty() {
        return;
    }
    if let Err(e) = inner.queues.delete(&m.queue, &done).await {
        // They come back after their visibility timeout: at least once.
        tracing::warn!(uuid = %m.uuid, error = %e.message, "deleting a processed batch failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn msg(id: &str) -> Received {
        Received {
            message_id: id.into(),
            receipt_handle: format!("h-{id}"),
            body: "b".into(),
            md5_body: "m".into(),
            attributes: BTreeMap::new(),
            system: BTreeMap::new(),
        }
    }

    #[test]
    fn batch_item_failures_follow_lambdas_success_and_failure_conditions() {
        let batch = [msg("a"), msg("b")];
        let cases: &[(&str, Option<Vec<&str>>)] = &[
            ("", Some(vec![])),
            ("null", Some(vec![])),
            ("{}", Some(vec![])),
            (r#"{"batchItemFailures":null}"#, Some(vec![])),
            (r#"{"batchItemFailures":[]}"#, Some(vec![])),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#,
                Some(vec!["b"]),
            ),
            // Complete failure: invalid JSON, empty/null/missing identifiers, unknown ids.
            ("not json", None),
            (r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#, None),
            (r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#, None),
            (r#"{"batchItemFailures":[{"itemIdentifer":"a"}]}"#, None),
            (r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#, None),
            (r#"{"batchItemFailures":"a"}"#, None),
        ];
        for (payload, want) in cases {
            let got = reported_failures(payload.as_bytes(), &batch);
            let want = want
                .as_ref()
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{payload}");
        }
    }
}
