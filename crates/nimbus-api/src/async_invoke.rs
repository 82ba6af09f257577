//! Asynchronous (`Event`) invocations, first cut: accepted events are queued in memory and run
//! with Lambda's retry policy (two retries with backoff on function errors; throttles wait and
//! retry). Durable queuing, event age limits and destinations replace this in the events crate.

use std::sync::Arc;
use std::time::Duration;

use nimbus_runtime::{InvokeError, InvokeRequest, Runtime};
use tokio::sync::mpsc;

const RETRIES: u32 = 2;
const WORKERS: usize = 16;
/// How long a throttled event keeps waiting for capacity before it is dropped.
const THROTTLE_PATIENCE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct AsyncInvoker {
    tx: mpsc::UnboundedSender<InvokeRequest>,
}

impl AsyncInvoker {
    pub fn start(runtime: Arc<Runtime>) -> AsyncInvoker {
        let (tx, rx) = mpsc::unbounded_channel::<InvokeRequest>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WORKERS {
            let rx = rx.clone();
            let runtime = runtime.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(req) = next else { break };
                    run(&runtime, req).await;
                }
            });
        }
        AsyncInvoker { tx }
    }

    pub fn submit(&self, req: InvokeRequest) {
        let _ = self.tx.send(req);
    }
}

async fn run(runtime: &Arc<Runtime>, req: InvokeRequest) {
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    let mut throttle_wait = Duration::from_millis(100);
    loop {
        // Retries keep the request id, as Lambda's do.
        match runtime.invoke(req.clone()).await {
            Ok(o) if !o.function_error => return,
            Ok(_) if attempt < RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(attempt as u64)).await;
            }
            Ok(_) => {
                tracing::warn!(function = %req.version.function, request_id = %req.request_id, "async invocation failed after {RETRIES} retries; event dropped");
                return;
            }
            Err(InvokeError::Throttled { .. }) if started.elapsed() < THROTTLE_PATIENCE => {
                tokio::time::sleep(throttle_wait).await;
                throttle_wait = (throttle_wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::warn!(function = %req.version.function, request_id = %req.request_id, error = %e, "async invocation dropped");
                return;
            }
        }
    }
}
