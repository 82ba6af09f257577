//! The instance pool: which instances exist, which are idle, and whether a new one may start.
//!
//! Scaling rules: a warm idle instance of the same version is reused (provisioned ones first,
//! then most recently used); otherwise a new one starts if the function is under its reserved
//! concurrency and the node under `max_instances`; a full node evicts its least recently used
//! idle instance (never a provisioned one). When nothing can be had, the caller waits for
//! capacity ([`Pool::notified`]) up to a bound rather than failing at once.
//!
//! Fair sharing: while capacity is contested (the node is full, or what is free would not cover
//! the waiting invocations of functions below their share), a function already running at least
//! its fair share (`max_instances` / functions running or waiting) is refused, so the capacity
//! it would have taken goes to the starved ones instead.
//! Idle instances are reaped after `idle_timeout` (provisioned ones are kept).
//! The pool only does bookkeeping under one short lock; starting and killing happen outside it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::instance::{Instance, VersionKey};

/// Scaling limits.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_instances: usize,
    pub idle_timeout: Duration,
    /// First uid handed to instances; each live instance (or spare) has its own from
    /// `uid_base..uid_base + uid_count`.
    pub uid_base: u32,
    /// How long an invocation may wait for capacity on a full node before it is throttled.
    pub queue_timeout: Duration,
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
    /// The node is full and this function has its fair share while another waits.
    FairShare,
    /// Nothing is idle and the caller may not start an instance now (every cold-start permit
    /// is taken). Nothing was changed.
    Starting,
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
    /// Invocations waiting for capacity per function.
    waiting: HashMap<String, u32>,
    /// Bumped when a function's code or configuration changes: older instances are not reused.
    generation: HashMap<String, u64>,
    free_uids: Vec<u32>,
    shutting_down: bool,
}

impl Inner {
    /// `function`'s reserved concurrency when its running invocations have reached it (an
    /// invocation now would be throttled); `None` without a reservation or below it.
    fn reserved_full(&self, function: &str, reserved: Option<u32>) -> Option<u32> {
        let limit = reserved?;
        (self.busy.get(function).copied().unwrap_or(0) >= limit).then_some(limit)
    }
}

pub(crate) struct Pool {
    cfg: PoolConfig,
    inner: Mutex<Inner>,
    /// Woken whenever capacity may have freed up.
    capacity: Notify,
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
            capacity: Notify::new(),
        }
    }

    /// A future that resolves the next time capacity may have freed up. Create (and enable)
    /// it before calling [`Pool::acquire`] so a release in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.capacity.notified()
    }

    pub fn wake(&self) {
        self.capacity.notify_waiters();
    }

    /// Counts an invocation of `function` as waiting (or no longer waiting) for capacity.
    pub fn set_waiting(&self, function: &str, waiting: bool) {
        let mut inner = self.lock();
        if waiting {
            *inner.waiting.entry(function.to_string()).or_default() += 1;
        } else if let Some(w) = inner.waiting.get_mut(function) {
            *w = w.saturating_sub(1);
            if *w == 0 {
                inner.waiting.remove(function);
            }
        }
    }

    /// How many waiting invocations of starved functions (below their fair share) `function`
    /// must leave capacity to, because it already has its own share; 0 when it need not.
    fn starved_behind(&self, inner: &Inner, function: &str) -> u32 {
        if inner.waiting.is_empty() {
            return 0;
        }
        let active = inner
            .busy
            .keys()
            .chain(inner.waiting.keys())
            .chain(std::iter::once(&function.to_string()))
            .collect::<std::collections::HashSet<_>>()
            .len()
            .max(1);
        let share = (self.cfg.max_instances / active).max(1) as u32;
        let busy = |f: &str| inner.busy.get(f).copied().unwrap_or(0);
        if busy(function) < share {
            return 0;
        }
        inner
            .waiting
            .iter()
            .filter(|(f, _)| f.as_str() != function && busy(f) < share)
            .map(|(_, n)| *n)
            .sum()
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

    /// Whether an invocation of `function` would be throttled now for its reserved concurrency.
    pub fn at_reserved(&self, function: &str, reserved: Option<u32>) -> bool {
        self.lock().reserved_full(function, reserved).is_some()
    }

    /// Takes an idle instance or, when `can_start` (the caller holds a cold-start permit), the
    /// right to start one. Killed instances to discard are returned to the caller so killing
    /// happens outside the lock.
    pub fn acquire(
        &self,
        key: &VersionKey,
        reserved: Option<u32>,
        can_start: bool,
    ) -> (Result<Lease, Throttle>, Vec<Arc<Instance>>) {
        let mut inner = self.lock();
        let mut discard = Vec::new();
        if let Some(limit) = inner.reserved_full(&key.function, reserved) {
            return (Err(Throttle::Reserved(limit)), discard);
        }
        if inner.shutting_down {
            return (Err(Throttle::Node(0)), discard);
        }
        // Capacity is contested when what is free (nothing on a full node) would not cover the
        // starved functions' waiting invocations: a function at its share leaves it to them,
        // also when a release has just freed a slot it could otherwise race them for.
        let free = self.cfg.max_instances.saturating_sub(inner.total) as u32;
        let starved = self.starved_behind(&inner, &key.function);
        if starved > 0 && free <= starved {
            return (Err(Throttle::FairShare), discard);
        }
        let mut warm = None;
        if let Some(list) = inner.idle.get_mut(key) {
            // Provisioned instances first, then the most recently used.
            if let Some(i) = list.iter().rposition(|i| i.instance.is_provisioned()) {
                let last = list.len() - 1;
                list.swap(i, last);
            }
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
        if !can_start {
            if !discard.is_empty() {
                // Dead instances left, freeing capacity this caller cannot use now: others
                // waiting for capacity may.
                drop(inner);
                self.wake();
            }
            return (Err(Throttle::Starting), discard);
        }
        if inner.total >= self.cfg.max_instances {
            // Evict the least recently used idle instance of any version (never a provisioned
            // one: keeping those initialised is what they are for).
            let victim = inner
                .idle
                .iter()
                .flat_map(|(k, list)| {
                    list.iter()
                        .enumerate()
                        .filter(|(_, i)| !i.instance.is_provisioned())
                        .map(move |(n, i)| (k.clone(), n, i.since))
                })
                .min_by_key(|(_, _, since)| *since)
                .map(|(k, n, _)| (k, n));
            let Some((victim_key, n)) = victim else {
                return (Err(Throttle::Node(self.cfg.max_instances)), discard);
            };
            if let Some(list) = inner.idle.get_mut(&victim_key) {
                let evicted = list.remove(n);
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
        drop(inner);
        self.wake();
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
        self.park(inner, instance, generation, reusable)
    }

    /// Adds a started instance that serves nothing yet (provisioned concurrency) as idle. It
    /// must have been counted by [`Pool::reserve`].
    pub fn add_idle(&self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        let generation = instance.generation;
        self.park(self.lock(), instance, generation, true)
    }

    /// Makes `instance` idle if it may serve again (healthy, of its function's current
    /// generation, no shutdown); otherwise uncounts it and hands it back for killing.
    fn park(
        &self,
        mut inner: std::sync::MutexGuard<'_, Inner>,
        instance: Arc<Instance>,
        generation: u64,
        reusable: bool,
    ) -> Option<Arc<Instance>> {
        let current = inner
            .generation
            .get(&instance.key.function)
            .copied()
            .unwrap_or(0)
            == generation;
        let out = if reusable && current && !inner.shutting_down && instance.is_alive() {
            let idle = Idle {
                instance,
                since: Instant::now(),
            };
            // The key is copied only for a version's first idle list, not on every release.
            match inner.idle.get_mut(&idle.instance.key) {
                Some(list) => list.push(idle),
                None => {
                    let key = idle.instance.key.clone();
                    inner.idle.entry(key).or_default().push(idle);
                }
            }
            None
        } else {
            inner.total -= 1;
            Some(instance)
        };
        drop(inner);
        self.wake();
        out
    }

    /// The right to start an instance that serves nothing yet (provisioned concurrency):
    /// counted in the node's total, busy for no function. `None` when the node is full.
    pub fn reserve(&self, function: &str) -> Option<ColdSlot> {
        let mut inner = self.lock();
        if inner.shutting_down || inner.total >= self.cfg.max_instances {
            return None;
        }
        let uid = inner.free_uids.pop()?;
        inner.total += 1;
        let generation = inner.generation.get(function).copied().unwrap_or(0);
        Some(ColdSlot { uid, generation })
    }

    /// A reserved start failed.
    pub fn reserve_failed(&self, slot: ColdSlot) {
        let mut inner = self.lock();
        inner.total -= 1;
        inner.free_uids.push(slot.uid);
        drop(inner);
        self.wake();
    }

    /// Removes instances idle longer than the idle timeout; returns them for killing.
    pub fn reap(&self) -> Vec<Arc<Instance>> {
        let mut inner = self.lock();
        let cutoff = self.cfg.idle_timeout;
        let mut out = Vec::new();
        for list in inner.idle.values_mut() {
            list.retain(|i| {
                let keep = i.instance.is_alive()
                    && (i.since.elapsed() < cutoff || i.instance.is_provisioned());
                if !keep {
                    out.push(i.instance.clone());
                }
                keep
            });
        }
        inner.idle.retain(|_, l| !l.is_empty());
        inner.total -= out.len();
        drop(inner);
        if !out.is_empty() {
            self.wake();
        }
        out
    }

    /// An instance died while idle: it leaves the pool now (not at the next reaper tick), so its
    /// slot counts against no limit. Returns whether it was idle here.
    pub fn remove_dead(&self, key: &VersionKey, id: &str) -> bool {
        let mut inner = self.lock();
        let Some(list) = inner.idle.get_mut(key) else {
            return false;
        };
        let Some(pos) = list.iter().position(|i| i.instance.id == id) else {
            return false;
        };
        list.remove(pos);
        if list.is_empty() {
            inner.idle.remove(key);
        }
        inner.total -= 1;
        drop(inner);
        self.wake();
        true
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
        drop(inner);
        self.wake();
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
        drop(inner);
        self.wake();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_instances: usize) -> Pool {
        Pool::new(PoolConfig {
            max_instances,
            idle_timeout: Duration::from_secs(300),
            uid_base: 200_000,
            queue_timeout: Duration::from_secs(1),
            spares_per_kind: 0,
        })
    }

    fn key(function: &str) -> VersionKey {
        VersionKey {
            function: function.into(),
            version: "$LATEST".into(),
            revision_id: "r1".into(),
        }
    }

    /// A cold slot for `function`, or why there is none.
    fn cold(p: &Pool, function: &str, reserved: Option<u32>) -> Result<ColdSlot, Throttle> {
        let (lease, discard) = p.acquire(&key(function), reserved, true);
        assert!(discard.is_empty(), "nothing idle to discard in these tests");
        match lease {
            Ok(Lease::Cold(slot)) => Ok(slot),
            Ok(Lease::Warm(_)) => panic!("no instance was ever parked"),
            Err(t) => Err(t),
        }
    }

    #[test]
    fn a_full_node_throttles_without_a_starved_function() {
        let p = pool(2);
        let _a1 = cold(&p, "a", None).expect("first slot");
        let _a2 = cold(&p, "a", None).expect("second slot");
        // Nobody else waits: the node is simply full.
        assert_eq!(cold(&p, "a", None).err(), Some(Throttle::Node(2)));
        assert_eq!(p.counts(), (2, 0));
    }

    #[test]
    fn a_function_at_its_share_yields_to_a_starved_one() {
        let p = pool(2);
        let a1 = cold(&p, "a", None).expect("first slot");
        let _a2 = cold(&p, "a", None).expect("second slot");
        p.set_waiting("b", true);
        // Two functions in play: a's share is 1 and it holds 2, b holds none and waits.
        assert_eq!(cold(&p, "a", None).err(), Some(Throttle::FairShare));
        // b is below its share but the node is full: it must wait for a release...
        assert_eq!(cold(&p, "b", None).err(), Some(Throttle::Node(2)));
        // ...and the capacity a gives back goes to b, not to a.
        p.cold_failed("a", a1);
        assert_eq!(cold(&p, "a", None).err(), Some(Throttle::FairShare));
        let b = cold(&p, "b", None).expect("the freed slot goes to the starved function");
        p.set_waiting("b", false);
        assert!(b.uid >= 200_000);
        assert_eq!(p.counts(), (2, 0));
        assert_eq!(p.busy_total(), 2);
    }

    #[test]
    fn a_waiter_at_its_own_share_does_not_hold_others_back() {
        let p = pool(4);
        let _a = cold(&p, "a", None).expect("a's slot");
        let _b1 = cold(&p, "b", None).expect("b's slot");
        let _b2 = cold(&p, "b", None).expect("b's second slot");
        // b waits for more but already runs its share (2 of 4): nobody yields to it.
        p.set_waiting("b", true);
        assert!(
            cold(&p, "a", None).is_ok(),
            "a, below its share, is not held back"
        );
        // The node is full now, and neither function is starved: plain node throttles.
        assert_eq!(cold(&p, "b", None).err(), Some(Throttle::Node(4)));
        assert_eq!(cold(&p, "a", None).err(), Some(Throttle::Node(4)));
    }

    #[test]
    fn without_a_start_permit_nothing_idle_changes_nothing() {
        let p = pool(4);
        let _a = cold(&p, "a", None).expect("a's slot");
        let before = (p.counts(), p.busy_total());
        let (lease, discard) = p.acquire(&key("a"), None, false);
        assert!(discard.is_empty());
        assert_eq!(lease.err(), Some(Throttle::Starting));
        // No slot, uid or busy count was taken for the start that may not begin.
        assert_eq!((p.counts(), p.busy_total()), before);
        assert!(
            cold(&p, "a", None).is_ok(),
            "with a permit the start goes ahead"
        );
    }

    #[test]
    fn reserved_concurrency_caps_a_function_alone() {
        let p = pool(8);
        let _one = cold(&p, "a", Some(1)).expect("within the reservation");
        assert_eq!(cold(&p, "a", Some(1)).err(), Some(Throttle::Reserved(1)));
        assert!(
            cold(&p, "other", None).is_ok(),
            "others are not limited by a's reservation"
        );
    }

    #[test]
    fn uids_are_distinct_and_come_back() {
        let p = pool(2);
        let a = cold(&p, "a", None).expect("slot");
        let b = cold(&p, "b", None).expect("slot");
        assert_ne!(a.uid, b.uid);
        let uid = a.uid;
        p.cold_failed("a", a);
        let again = cold(&p, "a", None).expect("slot after a failure");
        assert_eq!(again.uid, uid, "a freed uid is handed out again");
    }

    #[test]
    fn an_unknown_dead_instance_changes_nothing() {
        let p = pool(2);
        let _a = cold(&p, "a", None).expect("slot");
        assert!(!p.remove_dead(&key("a"), "no-such-instance"));
        assert_eq!(p.counts(), (1, 0));
    }
}
