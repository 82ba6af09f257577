//! The store on its own: a `SqliteStore` opened in-process in a temporary directory (the same
//! file settings as the server's: WAL, `synchronous=NORMAL`), called from tokio tasks without
//! HTTP, JSON or the engines in front of it. What the queue and async-invocation paths cost
//! over this is what the HTTP figures beside it show.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use nimbus_store::{now_ms, NewAsyncEvent, SqliteStore, Store};

use super::steps::{Moved, Step};

/// A store in a directory of its own, removed when dropped.
pub struct TempStore {
    pub store: Arc<SqliteStore>,
    dir: PathBuf,
}

impl TempStore {
    /// `name` tells this run's directory from the server's and other runs'.
    pub fn open(name: &str) -> anyhow::Result<TempStore> {
        let dir = std::env::temp_dir().join(format!("nimbus-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("nimbus.db");
        let store = SqliteStore::open(&path)
            .with_context(|| format!("opening a store at {}", path.display()))?;
        Ok(TempStore {
            store: Arc::new(store),
            dir,
        })
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An id shaped like the engines' (a 36-character UUID), unique within the run, without the
/// random source the engines use: the raw figure leaves the engine's work out.
pub fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// `per_call` accepted events of the python hello (the event `{}`) in one
/// `enqueue_async_events` call: one per call is a caller on its own, many per call what the
/// accept path's group commit does.
pub struct Enqueue {
    pub store: Arc<SqliteStore>,
    pub per_call: usize,
    /// Tells this worker's ids from the others'.
    pub worker: u64,
    pub next: u64,
}

impl Step for Enqueue {
    async fn step(&mut self) -> Result<Moved, String> {
        let now = now_ms();
        let events: Vec<NewAsyncEvent> = (0..self.per_call)
            .map(|_| {
                self.next += 1;
                NewAsyncEvent {
                    request_id: id(self.worker << 40 | self.next),
                    function: "bench-python".into(),
                    qualifier: None,
                    payload: b"{}".to_vec(),
                    received_ms: now,
                    not_before_ms: None,
                    held: false,
                    leased_until_ms: None,
                }
            })
            .collect();
        self.store
            .enqueue_async_events(events)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Moved::Items(self.per_call as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::steps::{closed_loop, Bounds};
    use std::time::Duration;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        assert_eq!(id(1).len(), 36);
        assert_eq!(id(1), "00000000-0000-4000-8000-000000000001");
        assert_ne!(id(1 << 40 | 1), id(2 << 40 | 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueued_events_are_stored_and_the_directory_goes_with_the_store() {
        let t = TempStore::open("raw-test").unwrap();
        let dir = t.dir.clone();
        assert!(dir.join("nimbus.db").is_file());
        let workers = (0..3)
            .map(|w| Enqueue {
                store: t.store.clone(),
                per_call: 4,
                worker: w,
                next: 0,
            })
            .collect();
        let run = closed_loop(
            workers,
            Bounds {
                duration: Duration::from_secs(30),
                max_items: 40,
            },
        )
        .await;
        assert_eq!(run.failed(), 0, "{}", run.error_summary());
        assert_eq!(run.items % 4, 0);
        assert!(run.items >= 40);
        assert_eq!(t.store.count_async_events().await.unwrap(), run.items);
        drop(t);
        assert!(!dir.exists());
    }
}
