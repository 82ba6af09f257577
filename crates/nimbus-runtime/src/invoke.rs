//! The invoke flow: lease an instance (warm or cold), hand it the event, wait for the runtime's
//! answer within the function's timeout, and turn every way it can end into Lambda's result.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_core::{FunctionVersion, Limits, Runtime as Lang};
use nimbus_sandbox::{
    AssignStart, Assignment, ExitInfo, InstanceSpec, Isolation, Program, SandboxConfig,
};
use nimbus_store::BlobStore;
use nimbus_telemetry::{
    end_line, log_group_name, log_stream_name, report_line, start_line, utc_timestamp,
    InvocationRecord, LogSink, Metrics, Report,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cpugate::{CpuGate, CpuGateConfig, CpuGateStatus};
use crate::detach::Detached;
use crate::instance::{spawn_monitor, Instance, Job, JobResult, VersionKey};
use crate::interpreters::{Interpreter, Interpreters};
use crate::output::{spawn_capture, Capture, InvocationLog, StreamNames};
use crate::pool::{ColdSlot, Lease, Pool, PoolConfig, Throttle};
use crate::spares::{SpareFactory, SpareKind, Spares};

/// How long a runtime may take from start to its first `invocation/next` (Lambda's init limit).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the runtime needs to know at start-up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory holding the built-in bootstraps (visible to instances at /var/runtime).
    pub runtime_dir: PathBuf,
    /// Host paths no instance may see (the data directory).
    pub mask_paths: Vec<PathBuf>,
    pub pool: PoolConfig,
    pub cpu_gate: CpuGateConfig,
}

/// An invocation of a resolved version.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub version: Arc<FunctionVersion>,
    pub reserved_concurrency: Option<u32>,
    pub payload: Bytes,
    /// The ARN the caller used (with its qualifier), passed to the runtime.
    pub invoked_arn: String,
    pub client_context: Option<String>,
    pub request_id: String,
    /// The caller wants the last 4 KB of the log back (`X-Amz-Log-Type: Tail`); otherwise the
    /// lines are not kept for it.
    pub log_tail: bool,
}

/// How an invocation ended, as the Invoke API reports it.
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    pub request_id: String,
    pub payload: Bytes,
    /// Set when the function failed (X-Amz-Function-Error: Unhandled).
    pub function_error: bool,
    pub executed_version: String,
    /// The last 4 KB of the invocation's log, when the request asked for it (else empty).
    pub log_tail: String,
    pub cold_start: bool,
    pub duration: Duration,
    pub init_duration: Option<Duration>,
}

/// The right to run one cold start now. Invocations waiting for one queue on the semaphore
/// (first come, first served), so a start that ends hands its permit to one waiter rather
/// than waking them all.
type ColdPermit = tokio::sync::OwnedSemaphorePermit;

/// Waiting in the cold-start permit queue.
type PermitWait =
    dyn std::future::Future<Output = Result<ColdPermit, tokio::sync::AcquireError>> + Send;

/// An instance as status reports show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub function: String,
    pub version: String,
    /// Host pid of the instance's sandbox helper.
    pub pid: Option<u32>,
    /// Its cgroup directories; `cgroup.procs` in them lists every process of the instance.
    pub cgroups: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("Rate Exceeded.")]
    Throttled { reason: &'static str },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The execution engine. Cheap to share behind an `Arc`.
pub struct Runtime {
    pub(crate) cfg: RuntimeConfig,
    pub(crate) sandbox: SandboxConfig,
    pub(crate) interpreters: Interpreters,
    pub(crate) blobs: BlobStore,
    pub(crate) logs: LogSink,
    pub(crate) metrics: Metrics,
    pub(crate) pool: Arc<Pool>,
    pub(crate) spares: Spares,
    /// Cold starts in progress at once: beyond this, an invocation waits for a free instance or
    /// a permit rather than adding one more start competing for the same CPUs.
    pub(crate) cold_permits: Arc<tokio::sync::Semaphore>,
    /// How many invocations of CPU-bound functions run at once.
    pub(crate) cpu_gate: CpuGate,
    /// PATH, LANG, TZ: what every runtime process starts with.
    pub(crate) base_env: Vec<(String, String)>,
    /// Host paths every instance sees read-only (the interpreters' prefixes).
    pub(crate) ro_paths: Vec<PathBuf>,
    /// Provisioned concurrency per (function, qualifier).
    pub(crate) provisions: Mutex<HashMap<(String, String), crate::provision::Provision>>,
    /// Every instance that may still be alive, for shutdown.
    pub(crate) all: Mutex<HashMap<String, Weak<Instance>>>,
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// Invocations started, ever: the heap trimmer's sign of activity.
    pub(crate) started: std::sync::atomic::AtomicU64,
}

/// The least time between two heap trims.
const TRIM_GAP: Duration = Duration::from_secs(1);

/// How an invocation on an instance ended.
enum Ending {
    Result(JobResult),
    Timeout,
    Died(ExitInfo),
    InitFailed {
        body: Bytes,
        error_type: Option<String>,
    },
    InitTimeout,
}

/// Why an instance could not be started: Lambda's error type and a sentence.
#[derive(Debug)]
pub(crate) struct StartError {
    pub(crate) error_type: &'static str,
    pub(crate) message: String,
}

impl StartError {
    fn new(error_type: &'static str, message: impl Into<String>) -> StartError {
        StartError {
            error_type,
            message: message.into(),
        }
    }
}

fn error_body(error_type: &str, message: String) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn exit_reason(info: &ExitInfo) -> String {
    match (info.code, info.signal) {
        (_, Some(9)) => "signal: killed".to_string(),
        (_, Some(sig)) => format!("signal: {}", signal_name(sig)),
        (Some(code), None) => format!("exit status {code}"),
        (None, None) => "exited".to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        6 => "aborted".into(),
        11 => "segmentation fault".into(),
        15 => "terminated".into(),
        7 => "bus error".into(),
        4 => "illegal instruction".into(),
        8 => "floating point exception".into(),
        n => format!("{n}"),
    }
}

/// A new request id (a version 4 UUID, as Lambda's are), from the thread's random generator:
/// one is made for every invocation, and the system call behind `Uuid::new_v4` is not needed
/// for an identifier.
pub fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

fn trace_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let r: u128 = rand::random();
    let hexr = format!("{r:032x}");
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &hexr[..24],
        &hexr[16..32]
    )
}

impl Runtime {
    /// Builds the engine. Nothing starts until the first invocation.
    pub fn new(
        cfg: RuntimeConfig,
        sandbox: SandboxConfig,
        interpreters: Interpreters,
        blobs: BlobStore,
        logs: LogSink,
        metrics: Metrics,
    ) -> Arc<Runtime> {
        let pool = Arc::new(Pool::new(cfg.pool.clone()));
        // Every instance can reach the host's interpreters (read-only), so `provided`
        // bootstraps may run `python3 -m awslambdaric` or `node` as well as the built-in
        // runtimes do.
        let mut path = String::new();
        let mut ro_paths = Vec::new();
        for i in [
            interpreters.python.as_ref().ok(),
            interpreters.node.as_ref().ok(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(dir) = i.executable.parent() {
                let dir = format!("{}:", dir.display());
                if !path.contains(&dir) {
                    path.push_str(&dir);
                }
            }
            for p in &i.ro_paths {
                if !ro_paths.contains(p) {
                    ro_paths.push(p.clone());
                }
            }
        }
        path.push_str("/usr/local/bin:/usr/bin:/bin:/opt/bin");
        let base_env = vec![
            ("PATH".to_string(), path),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("TZ".into(), ":UTC".into()),
        ];
        let spares = Spares::new(
            SpareFactory {
                sandbox: sandbox.clone(),
                interpreters: interpreters.clone(),
                code_root: blobs.code_root(),
                runtime_dir: cfg.runtime_dir.clone(),
                mask_paths: cfg.mask_paths.clone(),
                ro_paths: ro_paths.clone(),
                base_env: base_env.clone(),
                pool: pool.clone(),
                zygote: tokio::sync::Mutex::new(None),
            },
            cfg.pool.spares_per_kind,
        );
        Arc::new(Runtime {
            sandbox,
            interpreters,
            blobs,
            logs,
            metrics,
            pool,
            spares,
            cold_permits: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get() * 2)
                    .unwrap_or(4)
                    .max(4),
            )),
            cpu_gate: CpuGate::new(cfg.cpu_gate),
            cfg,
            base_env,
            ro_paths,
            provisions: Mutex::new(HashMap::new()),
            all: Mutex::new(HashMap::new()),
            shutting_down: Default::default(),
            started: Default::default(),
        })
    }

    pub fn isolation(&self) -> &Isolation {
        &self.sandbox.isolation
    }

    /// The uids sandboxed instances run as, when the sandbox switches uids.
    pub fn instance_uids(&self) -> Option<std::ops::Range<u32>> {
        let base = self.cfg.pool.uid_base;
        self.sandbox
            .isolation
            .mounts()
            .then(|| base..base + Pool::uid_count(&self.cfg.pool))
    }

    pub fn interpreters(&self) -> &Interpreters {
        &self.interpreters
    }

    /// The node-wide instance limit.
    pub fn max_instances(&self) -> usize {
        self.cfg.pool.max_instances
    }

    /// Every instance alive now.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<InstanceInfo> = all
            .values()
            .filter_map(Weak::upgrade)
            .filter(|i| i.is_alive())
            .map(|i| InstanceInfo {
                id: i.id.clone(),
                function: i.key.function.clone(),
                version: i.key.version.clone(),
                pid: i.pid,
                cgroups: i.cgroups.clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.function, &a.id).cmp(&(&b.function, &b.id)));
        out
    }

    /// Spare sandboxes ready per kind (python, node, bare).
    pub fn spare_counts(&self) -> Vec<(&'static str, usize)> {
        self.spares.counts()
    }

    /// Reaps idle instances every second until the runtime is dropped, and keeps the spares
    /// topped up.
    pub fn start_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(rt) = weak.upgrade() else { break };
                rt.reconcile_provisions();
                // Refills that stopped on a failure (no free uid, a helper that died) resume.
                rt.spares.start();
                for inst in rt.pool.reap() {
                    tracing::debug!(instance = %inst.id, function = %inst.key.function, "reaping idle instance");
                    inst.kill();
                }
            }
        });
    }

    /// Once the server has gone quiet after activity (no invocation started and no instance
    /// or spare come or gone for a whole tick), hands the memory the allocator kept from it back
    /// to the kernel, so a burst of cold starts does not leave its high-water mark resident.
    /// Ticks every 250 ms until the runtime is dropped; trims at most once per [`TRIM_GAP`]
    /// (sparse traffic goes quiet after every request), and under steady load not at all.
    pub fn start_heap_trimmer(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            let mut dirty = false;
            let mut trimmed: Option<Instant> = None;
            loop {
                tick.tick().await;
                let Some(rt) = weak.upgrade() else { break };
                let spares: usize = rt.spares.counts().iter().map(|(_, n)| n).sum();
                let now = (
                    rt.started.load(std::sync::atomic::Ordering::Relaxed),
                    rt.pool.counts(),
                    spares,
                );
                drop(rt);
                if last != Some(now) {
                    dirty = last.is_some();
                    last = Some(now);
                } else if dirty && trimmed.is_none_or(|t| t.elapsed() >= TRIM_GAP) {
                    dirty = false;
                    trimmed = Some(Instant::now());
                    let released = tokio::task::spawn_blocking(nimbus_sandbox::release_free_heap)
                        .await
                        .unwrap_or(false);
                    tracing::trace!(released, "quiet: returned free heap to the kernel");
                }
            }
        });
    }

    /// (instances alive or starting, idle instances)
    pub fn instance_counts(&self) -> (usize, usize) {
        self.pool.counts()
    }

    /// The function's code or configuration changed, or it was deleted: stop reusing its instances.
    pub fn retire(&self, function: &str) {
        for inst in self.pool.retire(function) {
            inst.kill();
        }
    }

    /// The function's code changed or it was deleted: what the node measured of its CPU use
    /// no longer holds.
    pub fn forget_cpu_demand(&self, function: &str) {
        self.cpu_gate.forget(function);
    }

    /// The CPU slots in use and what is known of each function's CPU use.
    pub fn cpu_gate_status(&self) -> CpuGateStatus {
        self.cpu_gate.status()
    }

    /// Runs one invocation to its end.
    ///
    /// A caller that goes away (a client hanging up) does not cut the invocation short: it is
    /// [`Detached`], run in the caller's task and moved to a task of its own if the caller is
    /// dropped, so its instance is always released or killed, and it runs to its end as it would
    /// on Lambda.
    pub async fn invoke(
        self: &Arc<Self>,
        req: InvokeRequest,
    ) -> Result<InvokeOutcome, InvokeError> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rt = self.clone();
        Detached::new(async move { rt.invoke_attached(req).await })
            .await
            .unwrap_or(Err(InvokeError::ShuttingDown))
    }

    /// A warm instance can die between being leased and taking the event (its runtime exited
    /// after answering the previous one). The function never saw the event, so it is handed to
    /// another instance, a bounded number of times.
    async fn invoke_attached(&self, req: InvokeRequest) -> Result<InvokeOutcome, InvokeError> {
        for _ in 0..4 {
            if let Some(outcome) = self.invoke_once(&req).await? {
                return Ok(outcome);
            }
        }
        Ok(self.start_failure(
            &req,
            StartError::new(
                "Runtime.ExitError",
                "every instance tried exited before taking the event",
            ),
        ))
    }

    /// One attempt; `None` when a warm instance died before it took the event.
    async fn invoke_once(&self, req: &InvokeRequest) -> Result<Option<InvokeOutcome>, InvokeError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(InvokeError::ShuttingDown);
        }
        let v = &req.version;
        let key = VersionKey {
            function: v.function.clone(),
            version: v.version.to_string(),
            revision_id: v.revision_id.clone(),
        };
        // A CPU-bound function's invocation waits for a CPU slot before it takes an instance,
        // so its work runs on as few instances as the CPUs can keep busy; it holds the slot
        // until its result is in. One that its reserved concurrency throttles is throttled at
        // once, without the wait.
        let demand = self.cpu_gate.demand(&key.function);
        let _slot = if self
            .pool
            .at_reserved(&key.function, req.reserved_concurrency)
        {
            None
        } else {
            self.cpu_gate.admit(&demand).await
        };
        let (lease, permit) = self.lease(&key, req.reserved_concurrency).await?;
        let (instance, generation, cold) = match lease {
            Lease::Warm(i) => {
                let generation = i.generation;
                (i, generation, false)
            }
            Lease::Cold(slot) => {
                let generation = slot.generation;
                let started = self.start_instance(&key, v, &slot, false).await;
                drop(permit);
                match started {
                    Ok(i) => (i, generation, true),
                    Err(message) => {
                        self.pool.cold_failed(&key.function, slot);
                        let outcome = self.start_failure(req, message);
                        self.record(&key, &outcome, false);
                        return Ok(Some(outcome));
                    }
                }
            }
        };
        instance
            .serving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.metrics.concurrency_add(&key.function, &key.version, 1);
        let ran = self.run_on(&instance, req, cold).await;
        self.metrics
            .concurrency_add(&key.function, &key.version, -1);
        instance
            .serving
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some((outcome, _)) = &ran {
            self.record(&key, outcome, instance.is_provisioned());
        }
        let reusable = ran.as_ref().is_some_and(|(_, reusable)| *reusable);
        if let Some(dead) = self.pool.release(instance, generation, reusable) {
            dead.kill();
        }
        Ok(ran.map(|(outcome, _)| outcome))
    }

    fn record(&self, key: &VersionKey, o: &InvokeOutcome, provisioned: bool) {
        self.metrics.invocation(
            &key.function,
            &key.version,
            &InvocationRecord {
                duration: o.duration,
                error: o.function_error,
                cold_start: o.cold_start,
                init_duration: o.init_duration,
                provisioned,
            },
        );
    }

    /// Takes an instance or the right to start one. A full node makes the caller wait (up to
    /// the queue timeout) for capacity rather than fail, as a burst does while instances start;
    /// a function at its reserved concurrency is throttled at once, as Lambda does.
    async fn lease(
        &self,
        key: &VersionKey,
        reserved: Option<u32>,
    ) -> Result<(Lease, Option<ColdPermit>), InvokeError> {
        // The common case first: an idle instance, taken without setting up a wait or touching
        // the cold-start permits. Anything else goes through the loop below, which asks again.
        let (lease, discard) = self.pool.acquire(key, reserved, false);
        for d in discard {
            d.kill();
        }
        if let Ok(Lease::Warm(i)) = lease {
            return Ok((Lease::Warm(i), None));
        }
        let deadline = tokio::time::Instant::now() + self.cfg.pool.queue_timeout;
        let mut waiting = false;
        // A cold-start permit, taken before the pool is asked so that asking changes nothing
        // when no start may begin. Held only while the pool may hand out a start.
        let mut permit: Option<ColdPermit> = None;
        // A place in the permit queue, kept across rounds: a freed instance wakes every waiter
        // to look at the pool again, and none of them loses its place by looking.
        let mut queued: Option<Pin<Box<PermitWait>>> = None;
        let result = loop {
            let notified = self.pool.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if permit.is_none() && queued.is_none() {
                permit = self.cold_permits.clone().try_acquire_owned().ok();
            }
            let (lease, discard) = self.pool.acquire(key, reserved, permit.is_some());
            for d in discard {
                d.kill();
            }
            // Whether to wait for a cold-start permit as well as for capacity.
            let for_permit = match lease {
                Ok(Lease::Cold(slot)) => break Ok((Lease::Cold(slot), permit.take())),
                // A warm instance: a permit held goes back to the next in line.
                Ok(l) => break Ok((l, None)),
                Err(Throttle::Node(0)) => break Err(InvokeError::ShuttingDown),
                Err(Throttle::Reserved(_)) => {
                    self.metrics.throttle(&key.function, &key.version);
                    break Err(InvokeError::Throttled {
                        reason: "ReservedFunctionConcurrentInvocationLimitExceeded",
                    });
                }
                // Enough starts are under way: wait for one of them to end (its permit) or
                // for any instance to come free, whichever is first.
                Err(Throttle::Starting) => true,
                // Waiting for capacity, not for a start: a permit held now would only keep
                // another function's start from beginning.
                Err(Throttle::Node(_) | Throttle::FairShare) => {
                    permit = None;
                    queued = None;
                    false
                }
            };
            if !waiting {
                self.pool.set_waiting(&key.function, true);
                waiting = true;
            }
            // Some(permit) when the wait ended with a permit (None if the semaphore closed).
            let waited = tokio::time::timeout_at(deadline, async {
                if for_permit {
                    let wait = queued
                        .get_or_insert_with(|| Box::pin(self.cold_permits.clone().acquire_owned()));
                    tokio::select! {
                        p = wait.as_mut() => Some(p.ok()),
                        _ = notified => None,
                    }
                } else {
                    notified.await;
                    None
                }
            })
            .await;
            let woke = match waited {
                Ok(Some(p)) => {
                    permit = p;
                    queued = None;
                    true
                }
                Ok(None) => true,
                Err(_) => false,
            };
            if !woke {
                self.metrics.throttle(&key.function, &key.version);
                break Err(InvokeError::Throttled {
                    reason: "ConcurrentInvocationLimitExceeded",
                });
            }
        };
        if waiting {
            self.pool.set_waiting(&key.function, false);
        }
        result
    }

    /// An instance could not even be started (missing interpreter, missing bootstrap, ...).
    fn start_failure(&self, req: &InvokeRequest, e: StartError) -> InvokeOutcome {
        let v = &req.version;
        let error_type = e.error_type;
        let full = format!("RequestId: {} Error: {}", req.request_id, e.message);
        let stream = log_stream_name(
            &v.version.to_string(),
            "start-failed",
            nimbus_store::now_ms(),
        );
        let log = InvocationLog::new(&req.request_id, req.log_tail);
        let names = StreamNames {
            function: v.function.as_str().into(),
            stream: stream.into(),
        };
        log.platform(
            &self.logs,
            &names,
            start_line(&req.request_id, &v.version.to_string()),
        );
        log.platform(&self.logs, &names, format!("{full}\n{error_type}"));
        self.close_log(
            &log,
            &names,
            &Report {
                request_id: &req.request_id,
                duration_ms: 0.0,
                memory_mb: v.config.memory_mb,
                max_memory_used_mb: None,
                init_duration_ms: None,
                status: Some("error"),
                error_type: Some(error_type),
            },
        );
        InvokeOutcome {
            request_id: req.request_id.clone(),
            payload: error_body(error_type, full),
            function_error: true,
            executed_version: v.version.to_string(),
            log_tail: log.tail(),
            cold_start: true,
            duration: Duration::ZERO,
            init_duration: None,
        }
    }

    fn interpreter(&self, lang: Lang) -> Result<Option<&Interpreter>, StartError> {
        let found = match lang {
            Lang::Python3 => &self.interpreters.python,
            Lang::Nodejs => &self.interpreters.node,
            Lang::Provided => return Ok(None),
        };
        found.as_ref().map(Some).map_err(|e| {
            StartError::new(
                "Runtime.Unavailable",
                format!("the {lang} runtime is not available on this server: {e}"),
            )
        })
    }

    /// Starts a sandboxed instance for `v`: on a spare when one is ready, else from scratch.
    pub(crate) async fn start_instance(
        &self,
        key: &VersionKey,
        v: &FunctionVersion,
        slot: &ColdSlot,
        provisioned: bool,
    ) -> Result<Arc<Instance>, StartError> {
        let generation = slot.generation;
        let lang = v
            .config
            .runtime()
            .map_err(|e| StartError::new("Runtime.Unknown", e.to_string()))?;
        let interp = self.interpreter(lang)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let code_dir = self.blobs.code_dir(&v.code_sha256);
        if !code_dir.is_dir() {
            return Err(StartError::new(
                "Runtime.Unknown",
                format!(
                    "the code of this version ({}) is missing from the data directory",
                    v.code_sha256
                ),
            ));
        }
        let task_root = self.sandbox.task_root(&code_dir);
        let runtime_root = self.sandbox.runtime_root(&self.cfg.runtime_dir);
        let (program, args) = match (lang, interp) {
            (Lang::Python3, Some(i)) => (
                i.executable.clone(),
                vec![runtime_root
                    .join(crate::bootstraps::PYTHON_FILE)
                    .display()
                    .to_string()],
            ),
            (Lang::Nodejs, Some(i)) => (
                i.executable.clone(),
                vec![runtime_root
                    .join(crate::bootstraps::NODE_FILE)
                    .display()
                    .to_string()],
            ),
            _ => (task_root.join("bootstrap"), vec![]),
        };
        // A spare of the prestarted kind takes the environment and carries on; a bare one
        // execs the program.
        let prestarted = SpareKind::prestarted_for(lang, v.config.environment.keys());
        let picked = Instant::now();
        let mut spare = prestarted
            .and_then(|k| self.spares.take(k))
            .map(|s| (s, true));
        let mut source = match (&spare, prestarted) {
            (Some(_), Some(k)) => k.name(),
            _ => "none",
        };
        if spare.is_none() && prestarted == Some(SpareKind::Python) {
            // None ready (a burst): a python runtime forked by the zygote into a sandbox built
            // now beats starting an interpreter, on a bare spare or not.
            spare = self
                .spares
                .make_now(SpareKind::Python)
                .await
                .map(|s| (s, true));
            if spare.is_some() {
                source = "python, built now";
            }
        }
        if spare.is_none() {
            spare = self.spares.take(SpareKind::Bare).map(|s| (s, false));
            if spare.is_some() {
                source = "bare";
            }
        }
        let waited = picked.elapsed();
        // A prestarted spare's runtime has (normally) connected to the listener it came with
        // while it waited.
        let endpoint = spare.as_mut().and_then(|(s, _)| s.endpoint.take());
        let bound = match endpoint {
            Some(l) => tokio::net::TcpListener::from_std(l),
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await,
        };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                if let Some((s, _)) = spare {
                    self.spares.discard(s);
                }
                return Err(StartError::new(
                    "Runtime.Unknown",
                    format!("could not open a Runtime API port: {e}"),
                ));
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let version_label = v.version.to_string();
        let stream = log_stream_name(&version_label, &id, nimbus_store::now_ms());

        let mut env = self.base_env.clone();
        for (k, val) in &v.config.environment {
            if let Some(slot) = env.iter_mut().find(|(ek, _)| ek == k) {
                slot.1 = val.clone();
            } else {
                env.push((k.clone(), val.clone()));
            }
        }
        env.extend([
            (
                "AWS_LAMBDA_RUNTIME_API".to_string(),
                format!("127.0.0.1:{port}"),
            ),
            ("_HANDLER".into(), v.config.handler.clone()),
            ("LAMBDA_TASK_ROOT".into(), task_root.display().to_string()),
            (
                "LAMBDA_RUNTIME_DIR".into(),
                runtime_root.display().to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), v.function.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), version_label.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                v.config.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".into(),
                log_group_name(&v.function),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME".into(), stream.clone()),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
                if provisioned {
                    "provisioned-concurrency"
                } else {
                    "on-demand"
                }
                .into(),
            ),
            (
                "AWS_EXECUTION_ENV".into(),
                format!("AWS_Lambda_{}", v.config.runtime_name),
            ),
            ("AWS_REGION".into(), nimbus_core::REGION.into()),
            ("AWS_DEFAULT_REGION".into(), nimbus_core::REGION.into()),
        ]);
        // On a spare the instance runs as the spare's uid. The slot's (never used by any
        // process) goes back only once the assignment worked: on failure the caller returns the
        // slot, uid included.
        let spare_uid = spare.as_ref().map(|(s, _)| s.sandbox.uid());
        let uid = spare_uid.unwrap_or(slot.uid);
        let spawned = Instant::now();
        let started = match spare {
            Some((spare, prestarted)) => {
                let start = if prestarted {
                    AssignStart::Handoff { env }
                } else {
                    AssignStart::Exec(Program { program, args, env })
                };
                spare
                    .sandbox
                    .assign(Assignment {
                        code: v.code_sha256.clone(),
                        memory_mb: v.config.memory_mb,
                        cpu_weight_mb: v.config.memory_mb,
                        pids_max: Limits::PIDS_PER_INSTANCE,
                        tmp_mb: v.config.ephemeral_mb,
                        start,
                    })
                    .await
                    .map_err(|failed| {
                        // The spare's uid is free again only once its processes are gone.
                        if failed.reaped {
                            self.pool.free_uid(uid);
                        } else {
                            tracing::warn!(uid, error = %failed.error, "a spare that could not be assigned was not seen to end; its uid stays out of use");
                        }
                        failed.error
                    })
            }
            None => {
                let spec = InstanceSpec {
                    id: id.clone(),
                    program,
                    args,
                    env,
                    code_dir,
                    runtime_dir: Some(self.cfg.runtime_dir.clone()),
                    ro_paths: self.ro_paths.clone(),
                    mask_paths: self.cfg.mask_paths.clone(),
                    memory_mb: v.config.memory_mb,
                    cpu_weight_mb: v.config.memory_mb,
                    pids_max: Limits::PIDS_PER_INSTANCE,
                    tmp_mb: v.config.ephemeral_mb,
                    uid,
                    gid: uid,
                };
                nimbus_sandbox::spawn(&self.sandbox, spec).await
            }
        };
        tracing::debug!(
            function = %v.function,
            spare = source,
            spare_us = waited.as_micros() as u64,
            assign_us = spawned.elapsed().as_micros() as u64,
            "instance sandbox ready"
        );
        let mut sandbox = started.map_err(|e| {
            if e.is_exec_error() {
                StartError::new("Runtime.InvalidEntrypoint", e.to_string())
            } else {
                StartError::new(
                    "Runtime.Unknown",
                    format!("could not start the sandbox: {e}"),
                )
            }
        })?;
        if spare_uid.is_some() {
            self.pool.free_uid(slot.uid);
        }
        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let capture = Arc::new(Capture::new(
            StreamNames {
                function: v.function.as_str().into(),
                stream: stream.into(),
            },
            self.logs.clone(),
            sandbox.take_stdout(),
            sandbox.take_stderr(),
        ));
        spawn_capture(capture.clone());
        let pid = sandbox.pid();
        let cgroups = sandbox.cgroup_dirs();
        let memory = sandbox.memory_probe();
        spawn_monitor(sandbox, control_rx, exit_tx);
        let instance = Arc::new(Instance {
            id: id.clone(),
            key: key.clone(),
            pid,
            cgroups,
            provisioned: std::sync::atomic::AtomicBool::new(false),
            serving: std::sync::atomic::AtomicBool::new(false),
            spawned,
            generation,
            jobs_tx,
            jobs_rx: tokio::sync::Mutex::new(jobs_rx),
            inflight: Mutex::new(None),
            capture,
            init_done: OnceLock::new(),
            init_error: Mutex::new(None),
            exit: exit_rx,
            control: control_tx,
            memory,
            sched: OnceLock::new(),
            demand: self.cpu_gate.demand(&key.function),
        });
        // A sandboxed instance runs under its own uid: only its processes may use its endpoint.
        let rule = match self.sandbox.isolation.mounts() {
            true => crate::peer::PeerRule::Only(uid),
            false => crate::peer::PeerRule::Anyone,
        };
        let listener =
            crate::peer::PeerFilter::new(listener, rule, format!("Runtime API of instance {id}"));
        let server = tokio::spawn(crate::runtime_api::serve(listener, instance.clone()));
        // Tear the endpoint down when the tree is gone, which also drops its hold on the instance.
        let weak = Arc::downgrade(&instance);
        let mut exit_watch = instance.exit.clone();
        let abort = server.abort_handle();
        let pool = self.pool.clone();
        let (key_of, id_of) = (key.clone(), id.clone());
        tokio::spawn(async move {
            while exit_watch.borrow_and_update().is_none() {
                if exit_watch.changed().await.is_err() {
                    break;
                }
            }
            abort.abort();
            drop(weak);
            // Died idle: out of the pool at once (a busy one is dropped when its invoke ends).
            pool.remove_dead(&key_of, &id_of);
            // Only now, with every process of the tree gone, may another instance run as `uid`.
            pool.free_uid(uid);
        });
        if let Ok(mut all) = self.all.lock() {
            all.retain(|_, w| w.strong_count() > 0);
            all.insert(id, Arc::downgrade(&instance));
        }
        Ok(instance)
    }

    /// Hands the job to the instance and waits for its end. Returns the outcome and whether the
    /// instance may serve again.
    async fn run_on(
        &self,
        inst: &Arc<Instance>,
        req: &InvokeRequest,
        cold: bool,
    ) -> Option<(InvokeOutcome, bool)> {
        let v = &req.version;
        let version_label = v.version.to_string();
        let log = InvocationLog::new(&req.request_id, req.log_tail);
        let names = &inst.capture.names;
        let timeout = Duration::from_secs(v.config.timeout_s as u64);
        let (picked_tx, picked_rx) = oneshot::channel();
        let (result_tx, result_rx) = oneshot::channel();
        let job = Job {
            request_id: req.request_id.clone(),
            payload: req.payload.clone(),
            timeout,
            invoked_arn: req.invoked_arn.clone(),
            client_context: req.client_context.clone(),
            trace_id: trace_id(),
            // Written by the Runtime API when the runtime takes the event, so it precedes
            // anything the function prints for it.
            start: start_line(&req.request_id, &version_label),
            log: log.clone(),
            picked: picked_tx,
            result: result_tx,
        };
        let _ = inst.jobs_tx.try_send(Box::new(job));

        let mut picked_at = None;
        let ending = tokio::select! {
            picked = picked_rx => match picked {
                Ok(at) => {
                    picked_at = Some(at);
                    let deadline = tokio::time::Instant::from_std(at + timeout);
                    tokio::select! {
                        // A result that is ready wins over a deadline or an exit at the same moment.
                        biased;
                        r = result_rx => match r {
                            Ok(res) => Ending::Result(res),
                            Err(_) => Ending::Died(inst.exited().await),
                        },
                        info = inst.exited() => Ending::Died(info),
                        _ = tokio::time::sleep_until(deadline) => Ending::Timeout,
                    }
                }
                Err(_) => self.before_start(inst, inst.exited().await),
            },
            info = inst.exited() => self.before_start(inst, info),
            _ = tokio::time::sleep(INIT_TIMEOUT) => {
                // A runtime that reported an init error but did not exit.
                match inst.init_error.lock().ok().and_then(|mut e| e.take()) {
                    Some((body, error_type)) => Ending::InitFailed { body, error_type },
                    None => Ending::InitTimeout,
                }
            }
        };
        if picked_at.is_none() {
            if !cold && matches!(ending, Ending::Died(_)) {
                // The warm instance died before taking the event: nothing ran, nothing to log.
                return None;
            }
            log.platform(
                &self.logs,
                names,
                start_line(&req.request_id, &version_label),
            );
        }
        let duration = picked_at.map(|p| p.elapsed()).unwrap_or_default();
        let init_duration = if cold {
            inst.init_done.get().map(|p| *p - inst.spawned)
        } else {
            None
        };

        let mut reusable = true;
        let (payload, function_error, status, error_type): (
            Bytes,
            bool,
            Option<&str>,
            Option<String>,
        ) = match ending {
            Ending::Result(JobResult::Response(body)) => (body, false, None, None),
            Ending::Result(JobResult::Error { body, error_type }) => {
                let et = error_type.or_else(|| error_type_of(&body));
                (body, true, None, et)
            }
            Ending::Result(JobResult::TooLarge(n)) => {
                let msg = format!(
                    "Response payload size ({n} bytes) exceeded maximum allowed payload size ({} bytes).",
                    Limits::SYNC_PAYLOAD_BYTES
                );
                log.platform(&self.logs, names, msg.clone());
                (
                    error_body("Function.ResponseSizeTooLarge", msg),
                    true,
                    Some("error"),
                    Some("Function.ResponseSizeTooLarge".into()),
                )
            }
            Ending::Timeout => {
                reusable = false;
                inst.kill_and_wait().await;
                let msg = format!("Task timed out after {}.00 seconds", v.config.timeout_s);
                log.platform(
                    &self.logs,
                    names,
                    format!(
                        "{} {} {msg}",
                        utc_timestamp(nimbus_store::now_ms(), "Z"),
                        req.request_id
                    ),
                );
                (
                    error_body(
                        "Sandbox.Timedout",
                        format!("RequestId: {} Error: {msg}", req.request_id),
                    ),
                    true,
                    Some("timeout"),
                    None,
                )
            }
            Ending::InitTimeout => {
                reusable = false;
                inst.kill_and_wait().await;
                let msg = format!(
                    "the runtime did not ask for an invocation (GET /2018-06-01/runtime/invocation/next) within {}.00 seconds of starting",
                    INIT_TIMEOUT.as_secs()
                );
                log.platform(
                    &self.logs,
                    names,
                    format!("RequestId: {} Error: {msg}", req.request_id),
                );
                (
                    error_body(
                        "Sandbox.Timedout",
                        format!("RequestId: {} Error: {msg}", req.request_id),
                    ),
                    true,
                    Some("timeout"),
                    Some("Sandbox.Timedout".into()),
                )
            }
            Ending::Died(info) => {
                reusable = false;
                let (et, msg) = died_error(&info);
                let text = format!("RequestId: {} Error: {msg}", req.request_id);
                log.platform(&self.logs, names, format!("{text}\n{et}"));
                (
                    error_body(et, text),
                    true,
                    Some("error"),
                    Some(et.to_string()),
                )
            }
            Ending::InitFailed { body, error_type } => {
                reusable = false;
                let et = error_type
                    .or_else(|| error_type_of(&body))
                    .unwrap_or_else(|| "Runtime.Unknown".into());
                (body, true, Some("error"), Some(et))
            }
        };

        inst.capture.flush();
        let dropped = log.dropped_bytes();
        if dropped > 0 {
            log.platform(
                &self.logs,
                names,
                format!(
                    "[nimbus] {dropped} bytes of output were dropped: one invocation may print at most {} bytes",
                    Limits::LOG_BYTES_PER_INVOCATION
                ),
            );
        }
        let peak = inst.peak_memory();
        if let Ok(mut current) = inst.capture.current.lock() {
            *current = None;
        }
        self.close_log(
            &log,
            names,
            &Report {
                request_id: &req.request_id,
                duration_ms: duration.as_secs_f64() * 1000.0,
                memory_mb: v.config.memory_mb,
                max_memory_used_mb: peak.map(|b| b.div_ceil(1024 * 1024)),
                init_duration_ms: init_duration.map(|d| d.as_secs_f64() * 1000.0),
                status,
                error_type: error_type.as_deref().filter(|_| status.is_some()),
            },
        );
        // A cold start's tail begins with what the runtime printed while it initialised (an init
        // error's trace, module-level prints), as Lambda's does.
        let log_tail = if !req.log_tail {
            String::new()
        } else if cold {
            InvocationLog::tail_of(&[&inst.capture.init, &log])
        } else {
            log.tail()
        };
        let outcome = InvokeOutcome {
            request_id: req.request_id.clone(),
            payload,
            function_error,
            executed_version: version_label,
            log_tail,
            cold_start: cold,
            duration,
            init_duration,
        };
        Some((outcome, reusable && inst.is_alive()))
    }

    /// Ends an invocation's log with Lambda's END and REPORT lines.
    fn close_log(&self, log: &InvocationLog, names: &StreamNames, report: &Report) {
        log.platform(&self.logs, names, end_line(report.request_id));
        log.platform(&self.logs, names, report_line(report));
    }

    /// The instance ended before taking the invocation: an init error, or a crash.
    fn before_start(&self, inst: &Instance, info: ExitInfo) -> Ending {
        if let Some((body, error_type)) = inst.init_error.lock().ok().and_then(|mut e| e.take()) {
            return Ending::InitFailed { body, error_type };
        }
        if let Some(setup) = &info.setup_error {
            return Ending::InitFailed {
                body: error_body("Runtime.InvalidEntrypoint", setup.clone()),
                error_type: Some("Runtime.InvalidEntrypoint".into()),
            };
        }
        Ending::Died(info)
    }

    /// Stops taking invocations, lets running ones finish for up to `grace`, then kills every
    /// instance (callers of invocations still running get an error result).
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.spares.stop().await;
        for inst in self.pool.shut_down() {
            inst.kill();
        }
        let until = Instant::now() + grace;
        while self.pool.busy_total() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.pool.busy_total();
        if left > 0 {
            tracing::warn!(
                invocations = left,
                "shutting down with invocations still running; they are reported as failed"
            );
        }
        let all: Vec<Arc<Instance>> = self
            .all
            .lock()
            .map(|m| m.values().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for inst in &all {
            inst.kill();
        }
        for inst in &all {
            let _ = tokio::time::timeout(Duration::from_secs(5), inst.exited()).await;
        }
        // Every process of every instance gone (a zygote-forked runtime's reporting parent
        // lives outside the sandbox and ends just after it), then the zygote itself.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && all.iter().any(|i| cgroups_busy(&i.cgroups)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.spares.stop_zygote().await;
        // Invocations whose instances were just killed still write END and REPORT before they
        // release them; wait (bounded) so those lines are queued before the logs are flushed.
        let until = Instant::now() + Duration::from_secs(5);
        while self.pool.busy_total() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Last, this server's parent cgroup, once the instances' own are removed.
        drop(all);
        let until = Instant::now() + Duration::from_secs(3);
        while !self.sandbox.remove_parent_cgroup() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether any of these cgroups still has a process in it.
fn cgroups_busy(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    })
}

fn died_error(info: &ExitInfo) -> (&'static str, String) {
    if info.oom {
        (
            "Runtime.OutOfMemory",
            format!(
                "Runtime exited with error: {} (out of memory)",
                exit_reason(info)
            ),
        )
    } else if info.code == Some(0) && info.signal.is_none() {
        // Lambda's wording for a runtime that ended cleanly in the middle of an invocation
        // (`sys.exit()`, `process.exit()`).
        (
            "Runtime.ExitError",
            "Runtime exited without providing a reason".to_string(),
        )
    } else {
        (
            "Runtime.ExitError",
            format!("Runtime exited with error: {}", exit_reason(info)),
        )
    }
}

fn error_type_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("errorType")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let a = new_request_id();
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a, parsed.hyphenated().to_string(), "lower-case, hyphenated");
        assert_ne!(a, new_request_id());
    }

    fn exit(code: Option<i32>, signal: Option<i32>, oom: bool) -> ExitInfo {
        ExitInfo {
            code,
            signal,
            oom,
            ..ExitInfo::default()
        }
    }

    #[test]
    fn died_errors_use_lambdas_wording() {
        let table = [
            (
                exit(Some(1), None, false),
                "Runtime.ExitError",
                "Runtime exited with error: exit status 1",
            ),
            (
                exit(Some(0), None, false),
                "Runtime.ExitError",
                "Runtime exited without providing a reason",
            ),
            (
                exit(None, Some(11), false),
                "Runtime.ExitError",
                "Runtime exited with error: signal: segmentation fault",
            ),
            (
                exit(None, Some(9), true),
                "Runtime.OutOfMemory",
                "Runtime exited with error: signal: killed (out of memory)",
            ),
        ];
        for (info, error_type, message) in table {
            assert_eq!(died_error(&info), (error_type, message.to_string()));
        }
    }
}
