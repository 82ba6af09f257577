//! The log sink: instances hand lines to an unbounded channel (never blocking an invocation);
//! one writer task stores them in batches. Retention runs on the same task.

use std::sync::Arc;
use std::time::Duration;

use nimbus_store::{NewLogEvent, Store};
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Event(NewLogEvent),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Msg>,
}

/// The writer task's handle; `shutdown` stores what is pending and stops it.
pub struct LogWriter {
    task: tokio::task::JoinHandle<()>,
}

const BATCH: usize = 2_000;
const LINGER: Duration = Duration::from_millis(50);
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl LogSink {
    /// Starts the writer. Events older than `retention` are purged every minute.
    pub fn start(store: Arc<dyn Store>, retention: Duration) -> (LogSink, LogWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(writer(store, rx, retention));
        (LogSink { tx }, LogWriter { task })
    }

    /// Queues one line.
    pub fn emit(
        &self,
        function: &str,
        stream: &str,
        request_id: Option<&str>,
        ts_ms: i64,
        message: String,
    ) {
        let _ = self.tx.send(Msg::Event(NewLogEvent {
            function: function.to_string(),
            stream: stream.to_string(),
            ts_ms,
            request_id: request_id.map(str::to_string),
            message,
        }));
    }

    /// Waits until everything emitted before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl LogWriter {
    /// Waits for the writer to store what is queued. Every [`LogSink`] must be dropped first.
    pub async fn shutdown(self) {
        let _ = self.task.await;
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Msg>, retention: Duration) {
    let mut batch: Vec<NewLogEvent> = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_purge = tokio::time::Instant::now();
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut closed = false;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Event(e)) => batch.push(e),
                Some(Msg::Flush(w)) => {
                    waiters.push(w);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => next = Some(m),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        store_batch(&store, &mut batch).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        if last_purge.elapsed() >= RETENTION_EVERY {
            last_purge = tokio::time::Instant::now();
            purge(&store, retention).await;
        }
        if closed {
            break;
        }
    }
    store_batch(&store, &mut batch).await;
}

async fn store_batch(store: &Arc<dyn Store>, batch: &mut Vec<NewLogEvent>) {
    if batch.is_empty() {
        return;
    }
    let events = std::mem::take(batch);
    let n = events.len();
    if let Err(e) = store.append_logs(events).await {
        tracing::error!(error = %e, lines = n, "could not store log lines");
    }
}

async fn purge(store: &Arc<dyn Store>, retention: Duration) {
    let cutoff = nimbus_store::now_ms() - retention.as_millis() as i64;
    match store.purge_logs(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(removed = n, "log retention"),
        Err(e) => tracing::warn!(error = %e, "log retention failed"),
    }
}
