//! CPU slots: how many invocations of CPU-bound functions run at once.
//!
//! Lambda gives every concurrent request its own instance, and each instance its own share of
//! a CPU. On a machine with a handful of cores, 64 concurrent invocations of a function that
//! only computes would be 64 runnable processes taking turns on two CPUs: every invocation
//! waits behind the others in the kernel's run queue, each process's caches and JIT stay cold,
//! and the node serves fewer invocations per second than it would with a few at a time.
//!
//! So an invocation of a function that is known to be CPU-bound first takes one of a fixed
//! number of slots (`--cpu-slots`, by default four per CPU) and holds it until its result is
//! in; while every slot is held it waits in line (first come, first served) for the next one
//! to free, and only then leases an instance, so a function's work runs on the few instances
//! the CPUs can keep busy rather than on one per request. An invocation waits for as long as
//! the line moves; when no slot has been freed for `--cpu-slot-wait` (every holder is a long
//! invocation, or is itself waiting on another function) it runs without a slot, as it would
//! without the gate, so a stalled line never holds anyone up for longer than that. However the
//! line moves, no invocation waits in it longer than `--queue-timeout`, the bound of every other
//! wait for capacity; past it, it too runs without a slot.
//!
//! Whether a function is CPU-bound is measured, not declared. Around some of its warm
//! invocations the server reads the runtime process's `/proc/<pid>/schedstat` (time on a CPU,
//! time waiting in the run queue, times put on a CPU): a process that spent most of the
//! invocation running or runnable, or that was put on a CPU only once (woken by its event, it
//! ran until it had answered), is CPU-bound; one that slept (on a database, a downstream call,
//! a timer) is not, and is never gated. A function with no measurement yet is not gated
//! either, so a new function scales out exactly as on Lambda until the node knows better.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A function's invocations take a slot when its runtime was running or runnable for at least
/// this share of them (per mille)...
const CPU_BOUND_PER_MILLE: u32 = 500;
/// ...or when it slept (blocked on anything but a CPU) for at most this long in each: then a
/// slot is handed on within a millisecond or so, and waiting for one costs next to nothing.
const SHORT_SLEEP_US: u32 = 1000;

/// Every invocation of a function is measured until it has this many samples; after that,
/// one in [`SAMPLE_EVERY`].
const FIRST_SAMPLES: u32 = 8;
const SAMPLE_EVERY: u32 = 8;

/// No measurement yet.
const UNKNOWN: u32 = u32::MAX;

/// The gate's settings.
#[derive(Debug, Clone, Copy)]
pub struct CpuGateConfig {
    /// Invocations of CPU-bound functions that run at once; 0 turns the gate off.
    pub slots: usize,
    /// How long the line may go without a slot being freed before an invocation waiting in
    /// it runs without one.
    pub max_wait: Duration,
    /// The longest an invocation waits in line in all, however the line moves (the node's
    /// `--queue-timeout`); past it, it runs without a slot.
    pub max_line: Duration,
}

impl CpuGateConfig {
    /// Four slots per CPU: enough that a CPU is never idle while an invocation waits for the
    /// server or the network, few enough that the run queue stays short.
    pub fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() * 4)
            .unwrap_or(8)
    }
}

/// What the node has measured of one function's invocations.
#[derive(Debug)]
pub(crate) struct Demand {
    /// Share of the invocation the runtime was running or runnable, per mille, as a moving
    /// average; [`UNKNOWN`] before the first sample.
    per_mille: AtomicU32,
    /// Time the runtime slept during the invocation, in microseconds, as a moving average.
    sleep_us: AtomicU32,
    /// Invocations seen, for choosing which to sample.
    seen: AtomicU32,
}

impl Demand {
    fn new() -> Demand {
        Demand {
            per_mille: AtomicU32::new(UNKNOWN),
            sleep_us: AtomicU32::new(UNKNOWN),
            seen: AtomicU32::new(0),
        }
    }

    /// Whether the function's invocations take a CPU slot: it is measured, and its runtime
    /// mostly computes or hardly sleeps. A function that waits on the network, a disk or a
    /// timer for more than a millisecond or so is never held back.
    pub fn gated(&self) -> bool {
        match (self.per_mille(), self.sleep_us()) {
            (Some(p), Some(s)) => p >= CPU_BOUND_PER_MILLE || s <= SHORT_SLEEP_US,
            _ => false,
        }
    }

    /// The measured share, per mille, if any.
    pub fn per_mille(&self) -> Option<u32> {
        match self.per_mille.load(Ordering::Relaxed) {
            UNKNOWN => None,
            p => Some(p),
        }
    }

    /// The measured sleep per invocation, in microseconds, if any.
    pub fn sleep_us(&self) -> Option<u32> {
        match self.sleep_us.load(Ordering::Relaxed) {
            UNKNOWN => None,
            s => Some(s),
        }
    }

    /// Whether to measure this invocation.
    pub fn should_sample(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        n < FIRST_SAMPLES || n.is_multiple_of(SAMPLE_EVERY)
    }

    /// Folds one invocation's measurement into the averages (a quarter of the weight to the
    /// new one, so a function that changes its ways is re-classified within a few samples).
    pub fn record(&self, sample: Sample) {
        fold(&self.per_mille, sample.per_mille.min(1000));
        fold(&self.sleep_us, sample.sleep_us.min(UNKNOWN - 1));
    }
}

fn fold(avg: &AtomicU32, new: u32) {
    let _ = avg.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == UNKNOWN {
            new
        } else {
            ((u64::from(old) * 3 + u64::from(new)) / 4) as u32
        })
    });
}

/// What one measured invocation's runtime did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Share of the invocation spent running or runnable, per mille.
    pub per_mille: u32,
    /// Time spent blocked on anything else, in microseconds.
    pub sleep_us: u32,
}

/// The node's CPU slots and what it knows of each function.
pub(crate) struct CpuGate {
    cfg: CpuGateConfig,
    slots: Arc<Semaphore>,
    /// When a slot was last handed back: a waiter that sees none for `max_wait` knows the line
    /// has stalled.
    last_freed: Arc<LastFreed>,
    demand: Mutex<HashMap<String, Arc<Demand>>>,
    /// Invocations that waited for a slot, and those of them that gave up and ran without.
    waited: AtomicU64,
    bypassed: AtomicU64,
}

/// A held slot (or none: the function is not CPU-bound, the gate is off, or the line stalled).
pub(crate) type Slot = Option<HeldSlot>;

/// One CPU slot, handed back (and its time noted) when dropped.
#[derive(Debug)]
pub(crate) struct HeldSlot {
    _permit: OwnedSemaphorePermit,
    last_freed: Arc<LastFreed>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.last_freed.mark();
    }
}

/// The time a slot was last handed back, on the async runtime's clock (so tests can pause it).
#[derive(Debug)]
struct LastFreed {
    base: tokio::time::Instant,
    /// Nanoseconds after `base`; 0 until the first slot is handed back.
    ns: AtomicU64,
}

impl LastFreed {
    fn new() -> LastFreed {
        LastFreed {
            base: tokio::time::Instant::now(),
            ns: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn at(&self) -> tokio::time::Instant {
        self.base + Duration::from_nanos(self.ns.load(Ordering::Relaxed))
    }
}

/// The gate's counters, for the status endpoint.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuGateStatus {
    pub slots: usize,
    pub in_use: usize,
    /// Invocations that had to wait for a slot, ever.
    pub waited: u64,
    /// Of those, the ones that ran without a slot: the line stalled (no slot freed for
    /// `max_wait`), or they had waited `max_line`.
    pub bypassed: u64,
    /// What the node measured of each function it has run.
    pub functions: Vec<FunctionDemand>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDemand {
    pub function: String,
    /// The share of an invocation its runtime was on a CPU or waiting for one, per mille.
    pub cpu_per_mille: u32,
    /// How long its runtime slept (blocked on anything but a CPU) per invocation.
    pub sleep_micros: u32,
    /// Whether its invocations take a CPU slot.
    pub gated: bool,
}

impl CpuGate {
    pub fn new(mut cfg: CpuGateConfig) -> CpuGate {
        cfg.slots = cfg.slots.min(Semaphore::MAX_PERMITS);
        CpuGate {
            cfg,
            slots: Arc::new(Semaphore::new(cfg.slots)),
            last_freed: Arc::new(LastFreed::new()),
            demand: Mutex::new(HashMap::new()),
            waited: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    /// What is known of `function` (created empty on first use).
    pub fn demand(&self, function: &str) -> Arc<Demand> {
        let mut map = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(function) {
            return d.clone();
        }
        let d = Arc::new(Demand::new());
        map.insert(function.to_string(), d.clone());
        d
    }

    /// A function that was deleted: what was measured of it goes too.
    pub fn forget(&self, function: &str) {
        self.demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
    }

    /// Takes a slot for an invocation of a CPU-bound function, waiting in line (first come,
    /// first served) for as long as slots keep being freed. When none has been freed for
    /// `max_wait` since the invocation joined the line, the line has stalled and it runs
    /// without one; so it does once it has waited `max_line` in all. Anything else passes at
    /// once without a slot.
    pub async fn admit(&self, demand: &Demand) -> Slot {
        if self.cfg.slots == 0 || !demand.gated() {
            return None;
        }
        let held = |permit| HeldSlot {
            _permit: permit,
            last_freed: self.last_freed.clone(),
        };
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(held(p));
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        let joined = tokio::time::Instant::now();
        let give_up = joined + self.cfg.max_line;
        let stalls_at = || self.last_freed.at().max(joined) + self.cfg.max_wait;
        // One acquire for the whole wait, so the invocation keeps its place in the line.
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            match tokio::time::timeout_at(stalls_at().min(give_up), &mut acquire).await {
                Ok(p) => return p.ok().map(held),
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    // A slot freed while this one slept moves the stall further off.
                    if now >= give_up || now >= stalls_at() {
                        self.bypassed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        }
    }

    pub fn status(&self) -> CpuGateStatus {
        let mut functions: Vec<FunctionDemand> = self
            .demand
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(f, d)| {
                Some(FunctionDemand {
                    function: f.clone(),
                    cpu_per_mille: d.per_mille()?,
                    sleep_micros: d.sleep_us()?,
                    gated: d.gated(),
                })
            })
            .collect();
        functions.sort_by(|a, b| a.function.cmp(&b.function));
        CpuGateStatus {
            slots: self.cfg.slots,
            in_use: self.cfg.slots - self.slots.available_permits().min(self.cfg.slots),
            waited: self.waited.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            functions,
        }
    }
}

/// Reads a runtime process's scheduler statistics: the three fields of `/proc/<pid>/schedstat`
/// are nanoseconds spent on a CPU, nanoseconds spent runnable in a run queue, and the number of
/// times the process was put on a CPU. The file is opened once per instance and read again in
/// place.
#[derive(Debug)]
pub(crate) struct SchedProbe {
    file: File,
}

/// One reading of a [`SchedProbe`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedReading {
    at: Instant,
    /// Running plus runnable, in nanoseconds.
    busy_ns: u64,
    /// Times put on a CPU.
    slices: u64,
}

impl SchedProbe {
    /// The probe of the instance's runtime process: the first process in the instance's cgroup
    /// (or, without one, in the tree under the instance's own process, nearest first) that is
    /// not the platform's own sandbox helper. It reads that process's main thread, where the
    /// built-in runtimes run the handler. `None` when there is no such process (then the
    /// function is never gated).
    pub fn open(pid: Option<u32>, cgroup: Option<&Path>) -> Option<SchedProbe> {
        let candidates: Vec<u32> = match cgroup {
            Some(dir) => std::fs::read_to_string(dir.join("cgroup.procs"))
                .ok()?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            None => descendants(pid?),
        };
        // A process's name (comm) is its executable's name cut to 15 bytes.
        let helper = std::env::current_exe().ok().and_then(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some(
                name.chars()
                    .scan(0, |len, c| {
                        *len += c.len_utf8();
                        (*len <= 15).then_some(c)
                    })
                    .collect::<String>(),
            )
        });
        let runtime = candidates.into_iter().find(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            Some(comm.trim_end()) != helper.as_deref()
        })?;
        let file = File::open(format!("/proc/{runtime}/schedstat")).ok()?;
        Some(SchedProbe { file })
    }

    pub fn read(&self) -> Option<SchedReading> {
        let mut buf = [0u8; 96];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        let (busy_ns, slices) = parse_schedstat(buf.get(..n)?)?;
        Some(SchedReading {
            at: Instant::now(),
            busy_ns,
            slices,
        })
    }
}

/// `pid` and the processes under it, breadth first (a sandbox's runtime is a grandchild of its
/// helper), at most [`MAX_TREE`] of them.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < MAX_TREE {
        let p = out[i];
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        out.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .take(MAX_TREE),
        );
        i += 1;
    }
    out.truncate(MAX_TREE);
    out
}

/// The most processes looked at for an instance's runtime.
const MAX_TREE: usize = 64;

/// Running plus runnable nanoseconds, and the times put on a CPU, from a schedstat line
/// ("<run> <wait> <slices>").
fn parse_schedstat(line: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let run: u64 = fields.next()?.parse().ok()?;
    let wait: u64 = fields.next()?.parse().ok()?;
    let slices: u64 = fields.next()?.parse().ok()?;
    Some((run.saturating_add(wait), slices))
}

impl SchedReading {
    /// What the process did between `self` and `later`: the share of the time it was running
    /// or runnable, per mille, and how long it slept. (The kernel's clock and ours differ a
    /// little at the edges, so the share is capped at 1000 and the sleep at no less than 0.)
    ///
    /// The readings are taken when the runtime is handed its event and when the server reads
    /// its result, so the window also holds the time the result waited for a busy server to
    /// read it, with the runtime already asleep on its next request. That wait grows with the
    /// server's load and is no sleep of the function's. A runtime put on a CPU exactly once in
    /// the window (woken by its event, it ran without a break until it had answered) never
    /// slept inside the handler, so all of that wait is the server's and the sample's sleep is
    /// 0. One that slept on anything (a database, a timer) was woken a second time, and one
    /// preempted was put on a CPU again; both are measured as before.
    pub fn until(&self, later: &SchedReading) -> Option<Sample> {
        let wall = later.at.checked_duration_since(self.at)?.as_nanos();
        if wall == 0 {
            return None;
        }
        let busy = u128::from(later.busy_ns.checked_sub(self.busy_ns)?);
        let slices = later.slices.checked_sub(self.slices)?;
        let sleep_ns = if slices == 1 {
            0
        } else {
            wall.saturating_sub(busy)
        };
        Some(Sample {
            per_mille: (busy * 1000 / wall).min(1000) as u32,
            sleep_us: u32::try_from(sleep_ns / 1000).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPUTES: Sample = Sample {
        per_mille: 1000,
        sleep_us: 0,
    };
    const SLEEPS: Sample = Sample {
        per_mille: 20,
        sleep_us: 50_000,
    };

    fn gate(slots: usize, max_wait_ms: u64) -> CpuGate {
        gate_with_line(slots, max_wait_ms, 10_000)
    }

    fn gate_with_line(slots: usize, max_wait_ms: u64, max_line_ms: u64) -> CpuGate {
        CpuGate::new(CpuGateConfig {
            slots,
            max_wait: Duration::from_millis(max_wait_ms),
            max_line: Duration::from_millis(max_line_ms),
        })
    }

    #[test]
    fn schedstat_lines_parse_to_running_plus_runnable() {
        assert_eq!(parse_schedstat(b"838298 78057 1\n"), Some((916_355, 1)));
        assert_eq!(parse_schedstat(b"5 7 2"), Some((12, 2)));
        assert_eq!(parse_schedstat(b"5 7"), None);
        assert_eq!(parse_schedstat(b"5"), None);
        assert_eq!(parse_schedstat(b"x 1 1"), None);
        assert_eq!(parse_schedstat(b""), None);
    }

    fn reading(at: Instant, busy_ns: u64, slices: u64) -> SchedReading {
        SchedReading {
            at,
            busy_ns,
            slices,
        }
    }

    #[test]
    fn a_share_is_busy_time_over_wall_time() {
        let at = Instant::now();
        let a = reading(at, 1_000, 7);
        // Put on a CPU twice: it slept inside the window, for the time it was not busy.
        let b = reading(at + Duration::from_micros(10), 6_000, 9);
        assert_eq!(
            a.until(&b),
            Some(Sample {
                per_mille: 500,
                sleep_us: 5
            })
        );
        // Readings out of order give nothing rather than nonsense.
        assert_eq!(b.until(&a), None);
        let c = reading(at + Duration::from_micros(1), 1_000_000, 8);
        assert_eq!(
            a.until(&c),
            Some(Sample {
                per_mille: 1000,
                sleep_us: 0
            })
        );
    }

    #[test]
    fn a_runtime_woken_once_did_not_sleep_whatever_the_server_took_to_read_its_answer() {
        let at = Instant::now();
        let a = reading(at, 0, 40);
        // 100 µs of work, then its answer waited 2 ms for the server: put on a CPU once.
        let once = reading(at + Duration::from_micros(2_100), 100_000, 41);
        assert_eq!(
            a.until(&once),
            Some(Sample {
                per_mille: 47,
                sleep_us: 0
            })
        );
        // The same times with a second wake-up: it slept inside the handler.
        let twice = reading(at + Duration::from_micros(2_100), 100_000, 42);
        assert_eq!(
            a.until(&twice),
            Some(Sample {
                per_mille: 47,
                sleep_us: 2_000
            })
        );
        // Never put on a CPU: asleep throughout.
        let never = reading(at + Duration::from_micros(2_100), 0, 40);
        assert_eq!(a.until(&never).map(|s| s.sleep_us), Some(2_100));
        // A counter that went backwards (another process behind a reused pid) gives nothing.
        let other = reading(at + Duration::from_micros(2_100), 100_000, 39);
        assert_eq!(a.until(&other), None);
    }

    /// The state letter of a process (`R`, `S`, ...) from `/proc/<pid>/stat`.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    /// Measures a child process for 50 ms, once it has started (and, if `settle` is set, once
    /// it is in that state).
    fn measure(program: &str, args: &[&str], settle: Option<char>) -> Sample {
        let mut child = std::process::Command::new(program)
            .args(args)
            .spawn()
            .expect("the child starts");
        let begun = Instant::now();
        while let Some(want) = settle {
            if state(child.id()) == Some(want) || begun.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let probe = SchedProbe::open(Some(child.id()), None);
        let sample = probe.and_then(|p| {
            let a = p.read()?;
            std::thread::sleep(Duration::from_millis(50));
            a.until(&p.read()?)
        });
        let _ = child.kill();
        let _ = child.wait();
        sample.expect("two readings of the child")
    }

    #[test]
    fn the_probe_tells_a_computing_process_from_a_sleeping_one() {
        let spins = measure("sh", &["-c", "while :; do :; done"], None);
        // It spun throughout, so it was on a CPU or waiting for one all along (the kernel
        // accounts run time at ticks and switches, so allow some slack).
        assert!(spins.per_mille >= 500, "spinning measured as {spins:?}");
        let sleeps = measure("sleep", &["10"], Some('S'));
        assert!(sleeps.per_mille < 100, "sleeping measured as {sleeps:?}");
        assert!(sleeps.sleep_us >= 25_000, "sleeping measured as {sleeps:?}");
    }

    #[test]
    fn demand_is_unknown_until_measured_and_follows_the_samples() {
        let d = Demand::new();
        assert!(!d.gated());
        assert_eq!((d.per_mille(), d.sleep_us()), (None, None));
        d.record(COMPUTES);
        assert!(d.gated());
        for _ in 0..6 {
            d.record(SLEEPS);
        }
        assert!(
            !d.gated(),
            "a function that now sleeps is no longer held back"
        );
        assert!(d.per_mille().is_some_and(|p| p < 500));
        assert!(d.sleep_us().is_some_and(|s| s > 40_000));
    }

    #[test]
    fn short_invocations_are_gated_even_when_the_server_is_most_of_them() {
        // A hello function: its runtime computes for a fifth of the invocation and waits on
        // the server for the rest, 150 microseconds.
        let d = Demand::new();
        d.record(Sample {
            per_mille: 200,
            sleep_us: 150,
        });
        assert!(d.gated());
        // The same share with a 2 ms wait on a database is not.
        let d = Demand::new();
        d.record(Sample {
            per_mille: 200,
            sleep_us: 2_000,
        });
        assert!(!d.gated());
    }

    #[test]
    fn the_first_invocations_are_all_sampled_then_one_in_eight() {
        let d = Demand::new();
        let sampled = (0..FIRST_SAMPLES + 64)
            .filter(|_| d.should_sample())
            .count();
        assert_eq!(sampled as u32, FIRST_SAMPLES + 64 / SAMPLE_EVERY);
    }

    #[tokio::test]
    async fn functions_not_measured_or_sleeping_pass_without_a_slot() {
        let g = gate(1, 1000);
        let unknown = g.demand("f");
        let held = g.admit(&g.demand("busy")).await;
        assert!(held.is_none(), "unknown functions take no slot");
        assert!(g.admit(&unknown).await.is_none());
        g.demand("sleepy").record(SLEEPS);
        assert!(g.admit(&g.demand("sleepy")).await.is_none());
        assert_eq!(g.status().waited, 0);
    }

    #[tokio::test]
    async fn gated_invocations_wait_for_a_freed_slot() {
        let g = Arc::new(gate(2, 10_000));
        g.demand("busy").record(COMPUTES);
        let d = g.demand("busy");
        let a = g.admit(&d).await.expect("a first slot");
        let _b = g.admit(&d).await.expect("a second slot");
        assert_eq!(g.status().in_use, 2);
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            let d = g2.demand("busy");
            g2.admit(&d).await.is_some()
        });
        // The third waits until a slot is handed back, and then holds it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "a third invocation ran with both slots held"
        );
        drop(a);
        assert!(waiter.await.expect("the waiter"));
        let s = g.status();
        assert_eq!((s.waited, s.bypassed), (1, 0));
    }

    // On the runtime's paused clock, so the timeline below is exact on any machine.
    #[tokio::test(start_paused = true)]
    async fn a_line_that_moves_is_waited_in_past_the_bound() {
        // One slot, a bound of 30 ms, and holders that hand the slot on after 20 ms: the
        // third in line waits 40 ms, longer than the bound, and still gets a slot, because a
        // slot was freed within every 30 ms of its wait.
        let g = Arc::new(gate(1, 30));
        g.demand("busy").record(COMPUTES);
        let first = g.admit(&g.demand("busy")).await.expect("the only slot");
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let g = g.clone();
            waiters.push(tokio::spawn(async move {
                let slot = g.admit(&g.demand("busy")).await;
                let got = slot.is_some();
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(slot);
                got
            }));
            // In this order in the line.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        for w in waiters {
            assert!(w.await.expect("the waiter"), "a waiter ran without a slot");
        }
        let s = g.status();
        assert_eq!((s.waited, s.bypassed), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_is_longer_than_the_line_bound_however_the_line_moves() {
        // One slot, slots handed on every 20 ms (so the line never stalls at 30 ms), and a
        // bound of 50 ms in all: the first two waiters get a slot at 20 and 40 ms, the third
        // would at 60 ms and runs without one at 50 ms.
        let g = Arc::new(gate_with_line(1, 30, 50));
        g.demand("busy").record(COMPUTES);
        let first = g.admit(&g.demand("busy")).await.expect("the only slot");
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let g = g.clone();
            waiters.push(tokio::spawn(async move {
                let joined = tokio::time::Instant::now();
                let slot = g.admit(&g.demand("busy")).await;
                let (got, waited) = (slot.is_some(), joined.elapsed());
                if got {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                drop(slot);
                (got, waited)
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let mut outcomes = Vec::new();
        for w in waiters {
            outcomes.push(w.await.expect("the waiter"));
        }
        let ms = |d: Duration| d.as_millis();
        assert!(outcomes[0].0 && outcomes[1].0, "{outcomes:?}");
        assert_eq!(ms(outcomes[1].1), 40, "{outcomes:?}");
        assert!(
            !outcomes[2].0,
            "the third waited past the bound: {outcomes:?}"
        );
        assert_eq!(ms(outcomes[2].1), 50, "{outcomes:?}");
        let s = g.status();
        assert_eq!((s.waited, s.bypassed), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_that_stops_moving_lets_its_waiters_go() {
        // Slots handed on at 20 ms, then held: the waiter that did not get one leaves 30 ms
        // after the last slot was freed (at 50 ms), not 30 ms after it joined.
        let g = Arc::new(gate(1, 30));
        g.demand("busy").record(COMPUTES);
        let first = g.admit(&g.demand("busy")).await.expect("the only slot");
        let g1 = g.clone();
        let holder = tokio::spawn(async move {
            let slot = g1.admit(&g1.demand("busy")).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            slot.is_some()
        });
        tokio::task::yield_now().await;
        let g2 = g.clone();
        let stuck = tokio::spawn(async move {
            let joined = tokio::time::Instant::now();
            let slot = g2.admit(&g2.demand("busy")).await;
            (slot.is_some(), joined.elapsed())
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let (got, waited) = stuck.await.expect("the waiter");
        assert!(!got, "no slot was free");
        assert_eq!(waited.as_millis(), 50);
        assert!(holder.await.expect("the holder"));
        assert_eq!(g.status().bypassed, 1);
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_runs_without_a_slot() {
        let g = gate(1, 5);
        g.demand("busy").record(COMPUTES);
        let d = g.demand("busy");
        let _held = g.admit(&d).await.expect("the only slot");
        assert!(g.admit(&d).await.is_none(), "ran without a slot");
        let s = g.status();
        assert_eq!((s.waited, s.bypassed), (1, 1));
    }

    #[tokio::test]
    async fn no_slots_means_no_gate() {
        let g = gate(0, 1000);
        g.demand("busy").record(COMPUTES);
        assert!(g.admit(&g.demand("busy")).await.is_none());
        assert_eq!(g.status().waited, 0);
        g.forget("busy");
        assert!(g.status().functions.is_empty());
    }
}
