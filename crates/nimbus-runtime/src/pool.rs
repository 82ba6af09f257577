//! The instance pool: which instances exist, which are idle, and whether a new one may start.
//!
//! Scaling rules (first cut): a warm idle instance of the same version is reused (most recently
//! used first); otherwise a new one starts if the function is under its reserved concurrency and
//! the node under `max_instances`; a full node evicts its least recently used idle instance;
//! otherwise the invocation is throttled. Idle instances are reaped after `idle_timeout`.
//! The pool only does bookkeeping under one short lock; starting and killing happen outside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::instance::{Instance, VersionKey};

/// Scaling limits.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_instances: usize,
    pub idle_timeout: Duration,
    /// First uid handed to instances; each live instance (or spare) has its own from
    /// `uid_base..uid_base + uid_count`.
    pub uid_base: u32,
    /// Spare sandboxes kept ready per kind (python, node, bare); they hold uids too.
    pub spares_per_kind: usize,
}

/// Why an invocation could not get an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttle {
    /// The function is at its reserved concurrency.
    Reserved(u32),
    /// The node is at `max_instances` with nothing idle to evict.
    Node(usize),
}

/// An instance to run on, or the right to start one.
pub(crate) enum Lease {
    Warm(Arc<Instance>),
    Cold(ColdSlot),
}

/// The right to start one instance: a counted place in the pool and a uid.
#[derive(Debug)]
pub(crate) struct ColdSlot {
    pub uid: u32,
    /// The pool generation of its function: an instance of an older one is not reused.
    pub generation: u64,
}

struct Idle {
    instance: Arc<Instance>,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    /// Instances alive or starting.
    total: usize,
    idle: HashMap<VersionKey, Vec<Idle>>,
    /// Invocations running per function: its concurrency.
    busy: HashMap<String, u32>,
    /// Bumped when a function's code or configuration changes: older instances are not reused.
    generation: HashMap<String, u64>,
    free_uids: Vec<u32>,
    shutting_down: bool,
}

pub(crate) struct Pool {
    cfg: PoolConfig,
    inner: Mutex<Inner>,
}

impl Pool {
    pub fn new(cfg: PoolConfig) -> Pool {
        let free_uids = (0..Self::uid_count(&cfg))
            .rev()
            .map(|i| cfg.uid_base + i)
            .collect();
        Pool {
            cfg,
            inner: Mutex::new(Inner {
                free_uids,
                ..Inner::default()
            }),
        }
    }

    /// Uids handed out: twice the instance limit plus the spares, because a uid only comes
    /// back once its instance's processes are all gone, which can trail the pool's own
    /// bookkeeping.
    pub fn uid_count(cfg: &PoolConfig) -> u32 {
        let spares = cfg
            .spares_per_kind
            .saturating_mul(crate::spares::SpareKind::ALL.len());
        (cfg.max_instances.saturating_add(spares) as u32).saturating_mul(2)
    }

    /// A uid for a spare sandbox, if one is free.
    pub fn take_uid(&self) -> Option<u32> {
        self.lock().free_uids.pop()
    }

    /// An instance's processes are all gone: its uid may be used again.
    pub fn free_uid(&self, uid: u32) {
        self.lock().free_uids.push(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an idle instance or the right to start one. Killed instances to discard are
    /// returned to the caller so killing happens outside the lock.
    pub fn acquire(
        &self,
        key: &VersionKey,
        reserved: Option<u32>,
    ) -> (Result<Lease, Throttle>, Vec<Arc<Instance>>) {
        let mut inner = self.lock();
        let mut discard = Vec::new();
        let busy = inner.busy.get(&key.function).copied().unwrap_or(0);
        if let Some(limit) = reserved {
            if busy >= limit {
                return (Err(Throttle::Reserved(limit)), discard);
            }
        }
        if inner.shutting_down {
            return (Err(Throttle::Node(0)), discard);
        }
        let mut warm = None;
        if let Some(list) = inner.idle.get_mut(key) {
            while let Some(idle) = list.pop() {
                if idle.instance.is_alive() {
                    warm = Some(idle.instance);
                    break;
                }
                discard.push(idle.instance);
            }
        }
        inner.total -= discard.len();
        if let Some(instance) = warm {
            *inner.busy.entry(key.function.clone()).or_default() += 1;
            return (Ok(Lease::Warm(instance)), discard);
        }
        if inner.total >= self.cfg.max_instances {
            // Evict the least recently used idle instance of any version.
            let victim = inner
                .idle
                .iter()
                .filter_map(|(k, list)| list.first().map(|i| (k.clone(), i.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k);
            let Some(victim_key) = victim else {
                return (Err(Throttle::Node(self.cfg.max_instances)), discard);
            };
            if let Some(list) = inner.idle.get_mut(&victim_key) {
                let evicted = list.remove(0);
                inner.total -= 1;
                discard.push(evicted.instance);
            }
        }
        let Some(uid) = inner.free_uids.pop() else {
            return (Err(Throttle::Node(self.cfg.max_instances)), discard);
        };
        inner.total += 1;
        *inner.busy.entry(key.function.clone()).or_default() += 1;
        let generation = inner.generation.get(&key.function).copied().unwrap_or(0);
        (Ok(Lease::Cold(ColdSlot { uid, generation })), discard)
    }

    /// A cold start failed before an instance existed.
    pub fn cold_failed(&self, function: &str, slot: ColdSlot) {
        let mut inner = self.lock();
        inner.total -= 1;
        inner.free_uids.push(slot.uid);
        Self::not_busy(&mut inner, function);
    }

    fn not_busy(inner: &mut Inner, function: &str) {
        if let Some(b) = inner.busy.get_mut(function) {
            *b = b.saturating_sub(1);
            if *b == 0 {
                inner.busy.remove(function);
            }
        }
    }

    /// Hands an instance back after an invocation. It goes idle if it is healthy and still
    /// current; otherwise it is returned for the caller to kill.
    pub fn release(
        &self,
        instance: Arc<Instance>,
        generation: u64,
        reusable: bool,
    ) -> Option<Arc<Instance>> {
        let mut inner = self.lock();
        Self::not_busy(&mut inner, &instance.key.function);
        let current = inner
            .generation
            .get(&instance.key.function)
            .copied()
            .unwrap_or(0)
            == generation;
        if reusable && current && !inner.shutting_down && instance.is_alive() {
            inner
                .idle
                .entry(instance.key.clone())
                .or_default()
                .push(Idle {
                    instance,
                    since: Instant::now(),
                });
            None
        } else {
            inner.total -= 1;
            Some(instance)
        }
    }

    /// Removes instances idle longer than the idle timeout; returns them for killing.
    pub fn reap(&self) -> Vec<Arc<Instance>> {
        let mut inner = self.lock();
        let cutoff = self.cfg.idle_timeout;
        let mut out = Vec::new();
        for list in inner.idle.values_mut() {
            list.retain(|i| {
                let keep = i.since.elapsed() < cutoff && i.instance.is_alive();
                if !keep {
                    out.push(i.instance.clone());
                }
                keep
            });
        }
        inner.idle.retain(|_, l| !l.is_empty());
        inner.total -= out.len();
        out
    }

    /// A function changed or went away: its idle instances are returned for killing and its
    /// busy ones will not be reused.
    pub fn retire(&self, function: &str) -> Vec<Arc<Instance>> {
        let mut inner = self.lock();
        *inner.generation.entry(function.to_string()).or_default() += 1;
        let keys: Vec<VersionKey> = inner
            .idle
            .keys()
            .filter(|k| k.function == function)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(list) = inner.idle.remove(&k) {
                out.extend(list.into_iter().map(|i| i.instance));
            }
        }
        inner.total -= out.len();
        out
    }

    /// Stops handing out instances and returns every idle one for killing.
    pub fn shut_down(&self) -> Vec<Arc<Instance>> {
        let mut inner = self.lock();
        inner.shutting_down = true;
        let all: Vec<Arc<Instance>> = inner
            .idle
            .drain()
            .flat_map(|(_, l)| l.into_iter().map(|i| i.instance))
            .collect();
        inner.total -= all.len();
        all
    }

    /// Invocations running now, over all functions.
    pub fn busy_total(&self) -> u32 {
        self.lock().busy.values().sum()
    }

    /// (instances alive or starting, idle instances)
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.total, inner.idle.values().map(Vec::len).sum())
    }
}
