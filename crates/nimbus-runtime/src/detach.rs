//! A future that is run where it is awaited and, if its caller goes away before it ends, is
//! finished on a task of its own.
//!
//! An invocation must run to its end even when the client that asked for it hangs up, so that its
//! instance is released or killed and its log and metrics are written, as on Lambda. Spawning
//! every invocation on a task of its own gives that, but costs a task, a join handle and two
//! cross-task wake-ups per invocation on the hot path. [`Detached`] gives the same guarantee for
//! the price of one box: it polls the invocation inline, and only the rare caller that is dropped
//! mid-way pays for a spawn.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Polls a boxed future where it is awaited; if dropped before the future ends, moves it to a
/// spawned task that finishes it.
pub(crate) struct Detached<T: Send + 'static> {
    fut: Option<BoxedFuture<T>>,
}

impl<T: Send + 'static> Detached<T> {
    pub(crate) fn new(fut: impl Future<Output = T> + Send + 'static) -> Detached<T> {
        Detached {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<T: Send + 'static> Future for Detached<T> {
    /// `None` when the future panicked (as a spawned task's `JoinError` would report it).
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(None);
        };
        // A panic ends this invocation only, as it would on a task of its own; the caller's
        // connection lives on and answers with an error.
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.fut = None;
                Poll::Ready(Some(out))
            }
            Err(_) => {
                self.fut = None;
                Poll::Ready(None)
            }
        }
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) there is nothing left to finish it on.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = fut.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_inline_and_returns_the_output() {
        assert_eq!(Detached::new(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn a_dropped_caller_leaves_the_future_to_finish_on_its_own() {
        let finished = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let flag = finished.clone();
        let caller = tokio::spawn(Detached::new(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        }));
        started_rx.await.expect("the future started");
        caller.abort();
        assert!(caller.await.is_err_and(|e| e.is_cancelled()));
        assert!(
            !finished.load(Ordering::SeqCst),
            "not finished when the caller went"
        );
        for _ in 0..100 {
            if finished.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the detached future never finished");
    }

    #[tokio::test]
    async fn a_panic_ends_only_the_future() {
        let out = Detached::new(async {
            if true {
                panic!("boom");
            }
            1
        })
        .await;
        assert_eq!(out, None);
    }
}
