//! Closed loops over steps that are not one prebuilt request: a step may make several calls
//! (a receive, then a delete of what it got), build its request from what came back, or call
//! the store in-process. Each worker is a tokio task with its own state; a step reports how
//! many items (messages, events) it moved, or that there was nothing left to move.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use super::stats::{self, Latency};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// This many items, in one timed step.
    Items(u64),
    /// Nothing was left to move (an empty queue): the worker stops.
    Exhausted,
}

/// One worker's unit of work, repeated in a closed loop.
pub trait Step: Send + 'static {
    /// Does one unit; an error is counted by its text and the loop goes on.
    fn step(&mut self) -> impl Future<Output = Result<Moved, String>> + Send;
}

/// How long a loop runs and how much it may move.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    /// Items over all workers after which the workers stop (the run stays bounded in rows
    /// written, however fast the system under test is).
    pub max_items: u64,
}

/// The result of one closed loop.
#[derive(Debug, Clone, Default)]
pub struct StepRun {
    /// Steps that succeeded and moved something.
    pub steps: u64,
    pub items: u64,
    /// From the common start to the last worker's end.
    pub elapsed: Duration,
    /// Latencies of the successful steps, sorted.
    pub latencies: Vec<Duration>,
    /// Failed steps by their error text.
    pub errors: BTreeMap<String, u64>,
}

impl StepRun {
    pub fn items_per_sec(&self) -> f64 {
        stats::rate(self.items, self.elapsed)
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn latency(&self) -> Option<Latency> {
        Some(Latency {
            samples: self.latencies.len(),
            p50: stats::percentile(&self.latencies, 0.50)?,
            p99: stats::percentile(&self.latencies, 0.99)?,
        })
    }

    /// `3× HTTP 500: ..., 1× ...`, most frequent first; empty when none failed.
    pub fn error_summary(&self) -> String {
        let mut v: Vec<_> = self.errors.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(e, n)| format!("{n}× {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A failing step must not spin: after this many errors in a row a worker gives up.
const MAX_ERRORS_IN_A_ROW: u32 = 100;

/// Runs every worker in a closed loop from a common start until `bounds.duration` has passed,
/// `bounds.max_items` items have been moved in all, or the worker finds nothing left.
pub async fn closed_loop<S: Step>(workers: Vec<S>, bounds: Bounds) -> StepRun {
    let n = workers.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let moved = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (barrier, moved) = (barrier.clone(), moved.clone());
            tokio::spawn(async move {
                let mut r = StepRun::default();
                let mut in_a_row = 0;
                barrier.wait().await;
                let began = Instant::now();
                let until = began + bounds.duration;
                while Instant::now() < until && moved.load(Ordering::Relaxed) < bounds.max_items {
                    let t = Instant::now();
                    match w.step().await {
                        Ok(Moved::Items(k)) => {
                            r.latencies.push(t.elapsed());
                            r.steps += 1;
                            r.items += k;
                            moved.fetch_add(k, Ordering::Relaxed);
                            in_a_row = 0;
                        }
                        Ok(Moved::Exhausted) => break,
                        Err(e) => {
                            *r.errors.entry(e).or_default() += 1;
                            in_a_row += 1;
                            if in_a_row >= MAX_ERRORS_IN_A_ROW {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                (r, began, Instant::now())
            })
        })
        .collect();
    barrier.wait().await;
    let mut run = StepRun::default();
    // The run lasts from the first worker's start to the last one's end, whenever this task
    // itself got to run.
    let mut span: Option<(Instant, Instant)> = None;
    for h in handles {
        match h.await {
            Ok((r, began, ended)) => {
                span = Some(match span {
                    Some((b, e)) => (b.min(began), e.max(ended)),
                    None => (began, ended),
                });
                run.steps += r.steps;
                run.items += r.items;
                run.latencies.extend(r.latencies);
                for (e, k) in r.errors {
                    *run.errors.entry(e).or_default() += k;
                }
            }
            Err(e) => *run.errors.entry(format!("worker died: {e}")).or_default() += 1,
        }
    }
    run.elapsed = span.map_or(Duration::ZERO, |(b, e)| e.duration_since(b));
    run.latencies.sort_unstable();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves `per_step` items per step from a shared stock until it is empty; fails every
    /// `fail_every`-th step.
    struct Stock {
        left: Arc<AtomicU64>,
        per_step: u64,
        fail_every: u64,
        calls: u64,
    }

    impl Step for Stock {
        async fn step(&mut self) -> Result<Moved, String> {
            self.calls += 1;
            if self.fail_every > 0 && self.calls.is_multiple_of(self.fail_every) {
                return Err("injected".into());
            }
            tokio::task::yield_now().await;
            let mut cur = self.left.load(Ordering::Relaxed);
            loop {
                if cur == 0 {
                    return Ok(Moved::Exhausted);
                }
                let take = cur.min(self.per_step);
                match self.left.compare_exchange(
                    cur,
                    cur - take,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(Moved::Items(take)),
                    Err(now) => cur = now,
                }
            }
        }
    }

    fn workers(n: usize, stock: u64, per_step: u64, fail_every: u64) -> Vec<Stock> {
        let left = Arc::new(AtomicU64::new(stock));
        (0..n)
            .map(|_| Stock {
                left: left.clone(),
                per_step,
                fail_every,
                calls: 0,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_stock_ends_the_loop_with_every_item_counted() {
        let bounds = Bounds {
            duration: Duration::from_secs(30),
            max_items: u64::MAX,
        };
        let run = closed_loop(workers(4, 1003, 10, 0), bounds).await;
        assert_eq!(run.items, 1003);
        // 100 full steps and one of 3.
        assert_eq!(run.steps, 101);
        assert_eq!(run.latencies.len(), 101);
        assert!(run.elapsed < Duration::from_secs(30));
        assert!(run.items_per_sec() > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_item_cap_and_the_duration_bound_the_loop() {
        let capped = Bounds {
            duration: Duration::from_secs(30),
            max_items: 500,
        };
        let run = closed_loop(workers(2, u64::MAX, 10, 0), capped).await;
        // Each worker may finish the step in flight when the cap is reached.
        assert!((500..=520).contains(&run.items), "{} items", run.items);

        let timed = Bounds {
            duration: Duration::from_millis(100),
            max_items: u64::MAX,
        };
        let run = closed_loop(workers(2, u64::MAX, 1, 0), timed).await;
        assert!(run.elapsed >= Duration::from_millis(100));
        assert!(run.elapsed < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_counted_by_text_and_not_as_steps() {
        let bounds = Bounds {
            duration: Duration::from_secs(30),
            max_items: u64::MAX,
        };
        let run = closed_loop(workers(1, 90, 1, 10), bounds).await;
        assert_eq!(run.items, 90);
        assert_eq!(run.steps, 90);
        // Calls 10, 20, ..., 100 failed (the 100th before it looked); call 101 found it empty.
        assert_eq!(run.failed(), 10);
        assert_eq!(run.error_summary(), "10× injected");
    }
}
