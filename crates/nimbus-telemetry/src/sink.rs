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
        function: &Arc<str>,
        stream: &Arc<str>,
        request_id: Option<&Arc<str>>,
        ts_ms: i64,
        message: String,
    ) {
        let _ = self.tx.send(Msg::Event(NewLogEvent {
            function: function.clone(),
            stream: stream.clone(),
            ts_ms,
            request_id: request_id.cloned(),
            message,
        }));
    }

    /// Waits until everything emitted before this call is stored (at most the writer's linger,
    /// 50 ms, longer than the write itself).
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
    let mut msgs: Vec<Msg> = Vec::with_capacity(BATCH);
    let mut retention_tick = tokio::time::interval(RETENTION_EVERY);
    let mut closed = false;
    while !closed {
        tokio::select! {
            n = rx.recv_many(&mut msgs, BATCH) => closed = n == 0,
            _ = retention_tick.tick() => {
                purge(&store, retention).await;
                continue;
            }
        }
        // Let what follows gather for LINGER without looking at the channel: a task waiting on
        // it is woken by every send, which on a busy server is once or more per invocation. A
        // flush that came with the first lines, or the channel's end, is not kept waiting.
        if !closed && !msgs.iter().any(|m| matches!(m, Msg::Flush(_))) {
            tokio::time::sleep(LINGER).await;
        }
        // Store everything queued by now, at most BATCH lines per write. A flush is answered
        // once the write holding every line queued before it has been stored.
        loop {
            take(msgs.drain(..), &mut batch, &mut waiters);
            while batch.len() < BATCH && !closed {
                match rx.try_recv() {
                    Ok(m) => take(std::iter::once(m), &mut batch, &mut waiters),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                }
            }
            let more = batch.len() >= BATCH;
            store_batch(&store, &mut batch).await;
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            if !more {
                break;
            }
        }
    }
}

/// Sorts messages into the lines to store and the flushes to answer once they are.
fn take(
    msgs: impl Iterator<Item = Msg>,
    batch: &mut Vec<NewLogEvent>,
    waiters: &mut Vec<oneshot::Sender<()>>,
) {
    for m in msgs {
        match m {
            Msg::Event(e) => batch.push(e),
            Msg::Flush(w) => waiters.push(w),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_store::{LogQuery, SqliteStore};

    #[tokio::test]
    async fn lines_are_stored_in_order_and_flush_waits_for_them() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let (sink, _writer) = LogSink::start(store.clone(), Duration::from_secs(3600));
        let (f, s, req): (Arc<str>, Arc<str>, Arc<str>) = ("f".into(), "s".into(), "req".into());
        for i in 0..5000 {
            sink.emit(
                &f,
                &s,
                Some(&req),
                nimbus_store::now_ms(),
                format!("line {i}"),
            );
        }
        sink.flush().await;
        let q = LogQuery {
            function: "f".into(),
            limit: 10_000,
            ..Default::default()
        };
        let got = store.query_logs(q).await.unwrap();
        assert_eq!(got.len(), 5000);
        assert_eq!(got[0].message, "line 0");
        assert_eq!(got[4999].message, "line 4999");
        assert_eq!(got[10].request_id.as_deref(), Some("req"));
    }

    #[tokio::test]
    async fn retention_purges_old_lines() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let now = nimbus_store::now_ms();
        store
            .append_logs(vec![
                NewLogEvent {
                    function: "f".into(),
                    stream: "s".into(),
                    ts_ms: now - 10_000_000,
                    request_id: None,
                    message: "old".into(),
                },
                NewLogEvent {
                    function: "f".into(),
                    stream: "s".into(),
                    ts_ms: now,
                    request_id: None,
                    message: "new".into(),
                },
            ])
            .await
            .unwrap();
        purge(&store, Duration::from_secs(60)).await;
        let q = LogQuery {
            function: "f".into(),
            limit: 10,
            ..Default::default()
        };
        let left: Vec<String> = store
            .query_logs(q)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(left, vec!["new".to_string()]);
    }
}
