//! Durable asynchronous invocation: the accept path (group commit: one writer task stores every
//! event queued while the previous batch was committing, in one transaction, and only then
//! answers each caller) and the dispatcher (claims due events under a lease, runs each with
//! Lambda's retry policy, event age limit and destinations, deletes it when done with it).
//!
//! At least once: an event is deleted only after its outcome (and any destination record) is
//! stored, so a crash at any moment leaves it to run again; a server that starts clears the
//! leases its predecessor held.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nimbus_core::Qualifier;
use nimbus_runtime::{resolve_target, InvokeError, InvokeRequest, Runtime};
use nimbus_store::{now_ms, AsyncEvent, EventInvokeConfig, NewAsyncEvent, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::destination::{self, Condition, Destination};
use crate::metrics::{AsyncMetrics, Dropped};
use crate::{DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_RETRY_ATTEMPTS};

/// How long a claimed event stays leased: longer than any invocation (Lambda's 900 s maximum
/// timeout plus start-up). A lease outlives its holder only if the server dies, and a server
/// that starts clears them all.
const LEASE_MS: i64 = 16 * 60 * 1000;
/// Events one transaction stores at most.
const MAX_BATCH: usize = 2048;

#[derive(Debug, Clone)]
pub struct AsyncConfig {
    /// The wait before the first retry; each further retry waits twice as long.
    pub retry_base: Duration,
    /// How long a throttled event waits before it is tried again (throttles do not count as
    /// attempts; the event's age limit still applies).
    pub throttle_wait: Duration,
    /// Asynchronous invocations running at once.
    pub concurrency: usize,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        AsyncConfig {
            retry_base: Duration::from_secs(1),
            throttle_wait: Duration::from_millis(500),
            concurrency: 64,
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the event could not be stored: {0}")]
    Store(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

type Ack = oneshot::Sender<Result<(), String>>;

struct Inner {
    store: Arc<dyn Store>,
    /// Queue destinations.
    queues: crate::queues::Queues,
    runtime: Arc<Runtime>,
    cfg: AsyncConfig,
    metrics: Arc<AsyncMetrics>,
    writer: mpsc::UnboundedSender<(NewAsyncEvent, Ack)>,
    /// Events done with, deleted in batches by one task.
    finisher: mpsc::UnboundedSender<i64>,
    /// Event invoke configurations as last read, by (function, qualifier); forgotten when the
    /// API changes one.
    configs:
        std::sync::Mutex<std::collections::HashMap<(String, String), Option<EventInvokeConfig>>>,
    /// Wakes the dispatcher when events were stored.
    stored: Notify,
    permits: Arc<Semaphore>,
}

#[derive(Clone)]
pub struct AsyncEvents {
    inner: Arc<Inner>,
}

impl AsyncEvents {
    /// Clears leases left by a previous server, then starts the writer and the dispatcher.
    pub async fn start(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        metrics: Arc<AsyncMetrics>,
        queues: crate::queues::Queues,
        cfg: AsyncConfig,
    ) -> Result<AsyncEvents, StoreError> {
        let released = store.release_async_leases().await?;
        if released > 0 {
            tracing::info!(
                events = released,
                "asynchronous events that were running when the last server stopped will run again"
            );
        }
        let (writer, rx) = mpsc::unbounded_channel();
        let (finisher, done_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            finisher,
            configs: Default::default(),
            queues,
            store,
            runtime,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            metrics,
            writer,
            stored: Notify::new(),
        });
        tokio::spawn(write_loop(inner.clone(), rx));
        tokio::spawn(finish_loop(inner.store.clone(), done_rx));
        tokio::spawn(dispatch_loop(inner.clone()));
        Ok(AsyncEvents { inner })
    }

    /// Forgets the cached event invoke configurations of `function` (after the API changed one).
    pub fn config_changed(&self, function: &str) {
        self.inner
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(f, _), _| f != function);
    }

    /// An event was stored by other means (a schedule firing): counts it and wakes the
    /// dispatcher.
    pub fn stored(&self, function: &str) {
        self.inner.metrics.received(function, 1);
        self.inner.stored.notify_one();
    }

    /// Stores an event; returns once it is committed to the store. An event for a paused
    /// function (reserved concurrency 0) is stored held: it waits, costing nothing, until the
    /// function's concurrency changes or it passes its maximum age.
    pub async fn accept(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: Bytes,
        request_id: String,
        paused: bool,
    ) -> Result<(), AcceptError> {
        let received_ms = now_ms();
        let not_before_ms = if paused {
            Some(self.inner.expiry_ms(function, qualifier, received_ms).await)
        } else {
            None
        };
        self.inner
            .store_event(NewAsyncEvent {
                request_id,
                function: function.to_string(),
                qualifier: qualifier.map(str::to_string),
                payload: payload.to_vec(),
                received_ms,
                not_before_ms,
                held: paused,
                leased_until_ms: None,
            })
            .await
    }

    /// The function's reserved concurrency changed: events held while it was paused are due
    /// now.
    pub fn concurrency_changed(&self, function: &str) {
        let inner = self.inner.clone();
        let function = function.to_string();
        tokio::spawn(async move {
            match inner
                .store
                .release_held_async_events(&function, now_ms())
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(function = %function, events = n, "held asynchronous events released");
                    inner.stored.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "releasing held asynchronous events failed"),
            }
        });
    }
}

impl Inner {
    /// The event invoke configuration of (function, qualifier), cached until the API changes it.
    async fn config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>, StoreError> {
        let key = (function.to_string(), qualifier.to_string());
        if let Some(c) = self
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let read = match self
            .store
            .get_event_invoke_config(function, qualifier)
            .await
        {
            Ok(c) => Some(c),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, read.clone());
        Ok(read)
    }

    /// When an event received at `received_ms` passes its maximum age.
    async fn expiry_ms(&self, function: &str, qualifier: Option<&str>, received_ms: i64) -> i64 {
        let max_age_s = self
            .config(function, qualifier.unwrap_or("$LATEST"))
            .await
            .ok()
            .flatten()
            .and_then(|c| c.max_event_age_s)
            .unwrap_or(DEFAULT_MAX_EVENT_AGE_S);
        received_ms + max_age_s as i64 * 1000 + 1
    }

    /// Hands an event to the writer and waits until its batch is committed; counts it.
    async fn store_event(&self, event: NewAsyncEvent) -> Result<(), AcceptError> {
        let function = event.function.clone();
        let (ack, done) = oneshot::channel();
        self.writer
            .send((event, ack))
            .map_err(|_| AcceptError::ShuttingDown)?;
        match done.await {
            Ok(Ok(())) => {
                self.metrics.received(&function, 1);
                Ok(())
            }
            Ok(Err(e)) => Err(AcceptError::Store(e)),
            Err(_) => Err(AcceptError::ShuttingDown),
        }
    }
}

/// Group commit: whatever queued up while the last batch was being written goes in the next.
async fn write_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(NewAsyncEvent, Ack)>) {
    // Waits for the first, then takes whatever else is already queued, up to the limit.
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut queued);
        let (mut events, acks): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // Events that can start now (a free dispatch slot) are stored already leased and run
        // straight from here once committed, without waiting for the dispatcher to claim
        // them; the rest wait in the store for a claim. A crash before they finish leaves them
        // leased, and the next server releases every lease at start.
        let now = now_ms();
        let mut direct = Vec::new();
        for (i, e) in events.iter_mut().enumerate() {
            if e.held {
                continue;
            }
            let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
                break;
            };
            e.leased_until_ms = Some(now + LEASE_MS);
            direct.push((i, permit));
        }
        let to_run: Vec<NewAsyncEvent> = direct.iter().map(|(i, _)| events[*i].clone()).collect();
        let result = inner
            .store
            .enqueue_async_events(events)
            .await
            .map_err(|e| e.to_string());
        match &result {
            Ok(ids) => {
                for ((i, permit), e) in direct.into_iter().zip(to_run) {
                    let Some(&id) = ids.get(i) else { continue };
                    let event = AsyncEvent {
                        id,
                        request_id: e.request_id,
                        function: e.function,
                        qualifier: e.qualifier,
                        payload: e.payload,
                        received_ms: e.received_ms,
                        attempts: 0,
                        next_attempt_ms: e.received_ms,
                    };
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        run(&inner, event).await;
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing asynchronous events failed; their callers are told");
            }
        }
        let ack_result = result.map(|_| ());
        for ack in acks {
            let _ = ack.send(ack_result.clone());
        }
        inner.stored.notify_one();
    }
}

/// Deletes finished events in batches: whatever finished while the last batch was committing.
async fn finish_loop(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<i64>) {
    // Waits for the first, then takes whatever else is already queued, up to the limit.
    let mut queued = Vec::new();
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let ids = std::mem::take(&mut queued);
        if let Err(e) = store.finish_async_events(ids).await {
            // They run again when their leases run out: at least once, as promised.
            tracing::error!(error = %e, "removing finished asynchronous events failed");
        }
    }
}

async fn dispatch_loop(inner: Arc<Inner>) {
    loop {
        // One permit per running event; claim only as many as can start now.
        let first = match inner.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let free = inner.permits.available_permits() + 1;
        let now = now_ms();
        let claimed = match inner
            .store
            .claim_async_events(now, now + LEASE_MS, free)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming asynchronous events failed; retrying");
                drop(first);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            drop(first);
            // Sleep until the next event falls due or new ones are stored (at most a second,
            // so retries scheduled by other means are not missed).
            let wait = match inner.store.next_async_due_ms().await {
                Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(1, 1000) as u64),
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = inner.stored.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut permit = Some(first);
        for event in claimed {
            let p = match permit.take() {
                Some(p) => p,
                None => match inner.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                run(&inner, event).await;
                drop(p);
            });
        }
    }
}

/// One attempt at one event, and what follows from its outcome.
async fn run(inner: &Inner, e: AsyncEvent) {
    let qualifier_name = e.qualifier.clone().unwrap_or_else(|| "$LATEST".into());
    let cfg = match inner.config(&e.function, &qualifier_name).await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(error = %err, "reading an event invoke configuration failed; retrying the event");
            reschedule(inner, &e, e.attempts, inner.cfg.retry_base).await;
            return;
        }
    };
    let max_retries = cfg
        .as_ref()
        .and_then(|c| c.max_retry_attempts)
        .unwrap_or(DEFAULT_MAX_RETRY_ATTEMPTS);
    let max_age_ms = cfg
        .as_ref()
        .and_then(|c| c.max_event_age_s)
        .unwrap_or(DEFAULT_MAX_EVENT_AGE_S) as i64
        * 1000;
    let on_success = cfg.as_ref().and_then(|c| c.on_success.clone());
    let on_failure = cfg.as_ref().and_then(|c| c.on_failure.clone());
    let function_arn = nimbus_core::FunctionRef::qualified_arn(&e.function, &qualifier_name);

    let age_ms = now_ms() - e.received_ms;
    inner
        .metrics
        .age(&e.function, Duration::from_millis(age_ms.max(0) as u64));
    if age_ms > max_age_ms {
        tracing::warn!(function = %e.function, request_id = %e.request_id, age_ms, "asynchronous event dropped: older than its maximum event age");
        inner
            .metrics
            .dropped(&e.function, Dropped::EventAgeExceeded);
        if let Some(dest) = &on_failure {
            let record = destination::record(
                &e.request_id,
                &function_arn,
                Condition::EventAgeExceeded,
                e.attempts,
                &e.payload,
                None,
                time::OffsetDateTime::now_utc(),
            );
            deliver(inner, &e.function, dest, record).await;
        }
        finish(inner, &e);
        return;
    }

    let qualifier = match e.qualifier.as_deref().map(Qualifier::parse).transpose() {
        Ok(q) => q,
        Err(err) => {
            tracing::warn!(function = %e.function, error = %err, "asynchronous event dropped: its qualifier is not valid");
            inner.metrics.dropped(&e.function, Dropped::FunctionGone);
            finish(inner, &e);
            return;
        }
    };
    let target = match resolve_target(inner.store.as_ref(), &e.function, qualifier.as_ref()).await {
        Ok(t) => t,
        Err(StoreError::NotFound(what)) => {
            tracing::warn!(function = %e.function, request_id = %e.request_id, "asynchronous event dropped: {what} no longer exists");
            inner.metrics.dropped(&e.function, Dropped::FunctionGone);
            finish(inner, &e);
            return;
        }
        Err(err) => {
            tracing::warn!(error = %err, "resolving an asynchronous event's function failed; retrying the event");
            reschedule(inner, &e, e.attempts, inner.cfg.retry_base).await;
            return;
        }
    };
    if target.reserved == Some(0) {
        // Paused: held until the concurrency changes or the event is too old.
        let until = e.received_ms + max_age_ms + 1;
        if let Err(err) = inner.store.hold_async_events(vec![(e.id, until)]).await {
            tracing::error!(error = %err, request_id = %e.request_id, "holding an asynchronous event failed");
        }
        return;
    }
    let req = InvokeRequest {
        version: target.version,
        reserved_concurrency: target.reserved,
        payload: Bytes::from(e.payload.clone()),
        invoked_arn: target.invoked_arn,
        client_context: None,
        // Every attempt keeps the event's request id, as Lambda's retries do.
        request_id: e.request_id.clone(),
        log_tail: false,
    };
    let attempt = e.attempts + 1;
    match inner.runtime.invoke(req).await {
        Err(InvokeError::Throttled { .. }) => {
            // Not an attempt: the event waits for capacity (its age limit still applies).
            reschedule(inner, &e, e.attempts, inner.cfg.throttle_wait).await;
        }
        Err(InvokeError::ShuttingDown) => {
            // Left leased: the next server clears the lease and runs it.
        }
        Ok(outcome) if !outcome.function_error => {
            if let Some(dest) = &on_success {
                let record = destination::record(
                    &e.request_id,
                    &function_arn,
                    Condition::Success,
                    attempt,
                    &e.payload,
                    Some(destination::Response {
                        executed_version: &outcome.executed_version,
                        function_error: false,
                        payload: &outcome.payload,
                    }),
                    time::OffsetDateTime::now_utc(),
                );
                deliver(inner, &e.function, dest, record).await;
            }
            finish(inner, &e);
        }
        Ok(outcome) => {
            if attempt <= max_retries {
                // 1×, 2×, 4× the base between attempts.
                let wait = inner.cfg.retry_base * 2u32.saturating_pow(e.attempts);
                reschedule(inner, &e, attempt, wait).await;
                return;
            }
            tracing::warn!(function = %e.function, request_id = %e.request_id, attempts = attempt, "asynchronous invocation failed on every attempt");
            inner
                .metrics
                .dropped(&e.function, Dropped::RetriesExhausted);
            if let Some(dest) = &on_failure {
                let record = destination::record(
                    &e.request_id,
                    &function_arn,
                    Condition::RetriesExhausted,
                    attempt,
                    &e.payload,
                    Some(destination::Response {
                        executed_version: &outcome.executed_version,
                        function_error: true,
                        payload: &outcome.payload,
                    }),
                    time::OffsetDateTime::now_utc(),
                );
                deliver(inner, &e.function, dest, record).await;
            }
            finish(inner, &e);
        }
    }
}

async fn reschedule(inner: &Inner, e: &AsyncEvent, attempts: u32, wait: Duration) {
    let at = now_ms() + wait.as_millis() as i64;
    if let Err(err) = inner.store.retry_async_event(e.id, attempts, at).await {
        // The lease runs out and the event is claimed again: nothing is lost.
        tracing::error!(error = %err, request_id = %e.request_id, "rescheduling an asynchronous event failed");
    }
}

fn finish(inner: &Inner, e: &AsyncEvent) {
    // Deleted with the next batch; if the server dies first, it runs again (at least once).
    let _ = inner.finisher.send(e.id);
}

/// Sends a record to a destination: an asynchronous invocation of the destination function,
/// stored before the source event is removed.
async fn deliver(inner: &Inner, source: &str, arn: &str, record: Vec<u8>) {
    let delivered = match Destination::parse(arn) {
        Ok(Destination::Function { name, qualifier }) => inner
            .store_event(NewAsyncEvent {
                request_id: nimbus_runtime::new_request_id(),
                function: name,
                qualifier,
                payload: record,
                received_ms: now_ms(),
                not_before_ms: None,
                held: false,
                leased_until_ms: None,
            })
            .await
            .is_ok(),
        Ok(Destination::Queue { name }) => {
            let body = String::from_utf8_lossy(&record).into_owned();
            let entry = crate::queues::SendEntry {
                body,
                ..Default::default()
            };
            match inner.queues.send(&name, vec![entry]).await {
                Ok(mut r) => match r.pop() {
                    Some(Ok(_)) => true,
                    Some(Err(e)) => {
                        tracing::warn!(function = %source, queue = %name, error = %e.message, "destination delivery failed");
                        false
                    }
                    None => false,
                },
                Err(e) => {
                    tracing::warn!(function = %source, queue = %name, error = %e.message, "destination delivery failed");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!(function = %source, error = %e, "destination delivery failed");
            false
        }
    };
    inner.metrics.destination(source, delivered);
}
