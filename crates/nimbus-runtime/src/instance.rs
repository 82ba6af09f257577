//! One instance: a sandboxed process tree running one function version, its Runtime API
//! endpoint, its output capture, and the task that owns the sandbox and watches it exit.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_sandbox::ExitInfo;
use tokio::sync::{mpsc, oneshot, watch};

use crate::cpugate::{Demand, SchedProbe, SchedReading};
use crate::output::{Capture, InvocationLog};

/// Identifies the configuration an instance runs: instances are only reused for the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VersionKey {
    pub function: String,
    pub version: String,
    pub revision_id: String,
}

/// An invocation handed to an instance.
pub(crate) struct Job {
    pub request_id: String,
    pub payload: Bytes,
    pub timeout: Duration,
    pub invoked_arn: String,
    pub client_context: Option<String>,
    pub trace_id: String,
    /// The START line, written when the runtime takes the event.
    pub start: String,
    pub log: Arc<InvocationLog>,
    pub picked: oneshot::Sender<Instant>,
    pub result: oneshot::Sender<JobResult>,
}

/// What the runtime reported for an invocation.
#[derive(Debug)]
pub(crate) enum JobResult {
    Response(Bytes),
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
    /// The runtime sent a response larger than Lambda allows.
    TooLarge(usize),
}

/// The invocation the instance is serving.
pub(crate) struct Inflight {
    pub request_id: String,
    pub result: oneshot::Sender<JobResult>,
    /// The runtime's scheduler statistics when it took the event, if this one is measured.
    pub sched: Option<SchedReading>,
}

/// Commands to the task that owns the sandbox.
pub(crate) enum Control {
    Kill,
}

pub(crate) struct Instance {
    pub id: String,
    pub key: VersionKey,
    /// Host pid of the sandbox helper (or of the program, without a sandbox).
    pub pid: Option<u32>,
    /// The instance's cgroup directories: every process of the instance is in them.
    pub cgroups: Vec<std::path::PathBuf>,
    /// Kept initialised for provisioned concurrency: never reaped or evicted while set.
    pub provisioned: std::sync::atomic::AtomicBool,
    /// Serving an invocation now.
    pub serving: std::sync::atomic::AtomicBool,
    pub spawned: Instant,
    /// The pool generation of its function when it started.
    pub generation: u64,
    /// Boxed: a channel allocates its slots in blocks of 32, and a block of `Job`s would be
    /// ~6 KB of every warm instance.
    pub jobs_tx: mpsc::Sender<Box<Job>>,
    pub jobs_rx: tokio::sync::Mutex<mpsc::Receiver<Box<Job>>>,
    pub inflight: Mutex<Option<Inflight>>,
    pub capture: Arc<Capture>,
    /// When the runtime first asked for work: the end of init.
    pub init_done: OnceLock<Instant>,
    /// What the runtime posted to /init/error, if anything.
    pub init_error: Mutex<Option<(Bytes, Option<String>)>>,
    pub exit: watch::Receiver<Option<ExitInfo>>,
    pub control: mpsc::UnboundedSender<Control>,
    /// The memory cgroup's peak window, read and reset around each invocation.
    pub memory: nimbus_sandbox::MemoryProbe,
    /// The runtime process's scheduler statistics, opened once its first invocation is answered.
    pub sched: OnceLock<Option<SchedProbe>>,
    /// What the node measures of its function's CPU use, fed by this instance's invocations.
    pub demand: Arc<Demand>,
}

impl Instance {
    pub fn is_provisioned(&self) -> bool {
        self.provisioned.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Resolves when the process tree is gone.
    pub async fn exited(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            if rx.changed().await.is_err() {
                return ExitInfo::default();
            }
        }
    }

    /// Kills the whole tree (idempotent) and waits for it to be gone.
    pub async fn kill_and_wait(&self) -> ExitInfo {
        let _ = self.control.send(Control::Kill);
        self.exited().await
    }

    pub fn kill(&self) {
        let _ = self.control.send(Control::Kill);
    }

    /// Opens the probe of the runtime process's CPU use, once. It is done after an answer has
    /// gone to its caller, so a cold start never waits for it (and its first invocation is
    /// never measured: much of what it runs is loading).
    pub fn sched_prepare(&self) {
        self.sched
            .get_or_init(|| SchedProbe::open(self.pid, self.cgroups.first().map(|p| p.as_path())));
    }

    fn sched_probe(&self) -> Option<&SchedProbe> {
        self.sched.get()?.as_ref()
    }

    /// Starts measuring an invocation's CPU use, if this one is to be measured.
    pub fn sched_start(&self) -> Option<SchedReading> {
        let probe = self.sched_probe()?;
        if !self.demand.should_sample() {
            return None;
        }
        probe.read()
    }

    /// Ends a measurement begun by [`Instance::sched_start`] and adds it to what is known of
    /// the function.
    pub fn sched_end(&self, start: Option<SchedReading>) {
        let Some(start) = start else { return };
        if let Some(sample) = self
            .sched_probe()
            .and_then(SchedProbe::read)
            .and_then(|end| start.until(&end))
        {
            self.demand.record(sample);
        }
    }

    pub fn reset_peak_memory(&self) {
        self.memory.reset_peak();
    }

    /// Peak memory since the last reset (read directly from the memory cgroup).
    pub fn peak_memory(&self) -> Option<u64> {
        self.memory.peak_bytes()
    }
}

/// Owns the sandbox: answers control commands until the tree exits, then publishes how.
pub(crate) fn spawn_monitor(
    mut sandbox: nimbus_sandbox::Instance,
    mut control: mpsc::UnboundedReceiver<Control>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    tokio::spawn(async move {
        let mut control_open = true;
        let info = loop {
            tokio::select! {
                info = sandbox.wait() => break info,
                cmd = control.recv(), if control_open => match cmd {
                    Some(Control::Kill) => sandbox.kill(),
                    // Every handle is gone: nobody can use this instance any more.
                    None => { control_open = false; sandbox.kill(); }
                },
            }
        };
        let oom = info.oom || sandbox.oom_killed();
        let _ = exit_tx.send(Some(ExitInfo { oom, ..info }));
        // Keep the cgroups (and with them what the memory probe reads: the peak of a run that
        // ended in a crash or an OOM kill) until nobody holds the instance any more.
        while control.recv().await.is_some() {}
        // Removing the cgroups waits for them to empty: not on the reactor.
        let _ = tokio::task::spawn_blocking(move || drop(sandbox)).await;
    });
}
