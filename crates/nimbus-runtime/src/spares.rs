//! Spare sandboxes: built before any function needs them, so a cold start only assigns the
//! function's code, limits and environment. Python and node spares also have their interpreter
//! running with the built-in bootstrap loaded, waiting on fd 3 for the function's environment;
//! bare spares exec the function's program on assignment (`provided`, or a runtime whose
//! environment must be seen at interpreter start).
//!
//! One refill task per kind at a time keeps `per_kind` spares ready; a kind whose spare could
//! not be built is retried after a pause rather than in a loop.
//!
//! A prestarted spare also has its instance's Runtime API endpoint: a loopback listener bound
//! when the spare is built and named in its environment (`AWS_LAMBDA_RUNTIME_API`). The runtime
//! connects to it while it waits, and the instance made from the spare serves that listener, so
//! the first `/next` of a cold start goes out on a connection that is already open.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nimbus_core::{Limits, Runtime as Lang};
use nimbus_sandbox::{Program, SandboxConfig, Spare, SpareSpec};

use crate::interpreters::Interpreters;
use crate::pool::Pool;
use crate::zygote::Zygote;

/// After a spare of a kind failed to build, how long before trying that kind again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A refill waits this long after a spare is taken, so building the next one does not compete
/// for the CPU with the cold start that took it; when none is left it starts at once, since the
/// next cold start would otherwise build its own.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// Limits a spare has until it is assigned (the function's replace them).
const SPARE_MEMORY_MB: u32 = 128;
const SPARE_TMP_MB: u32 = 512;

/// A spare ready for a function: its sandbox and, for a prestarted runtime, the Runtime API
/// listener the runtime has connected to (see the module docs).
pub(crate) struct ReadySpare {
    pub sandbox: Spare,
    pub endpoint: Option<std::net::TcpListener>,
}

/// A loopback listener for an instance's Runtime API, and its `host:port`.
fn runtime_endpoint() -> Result<(std::net::TcpListener, String), String> {
    let open = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        // tokio takes it over on assignment, and only a non-blocking socket works there.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok::<_, std::io::Error>((listener, addr.to_string()))
    };
    open().map_err(|e| format!("could not open a Runtime API port: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SpareKind {
    /// python3 running the built-in bootstrap, waiting for its function.
    Python,
    /// node running the built-in bootstrap, waiting for its function.
    Node,
    /// No program yet: the assignment execs one.
    Bare,
}

impl SpareKind {
    pub const ALL: [SpareKind; 3] = [SpareKind::Python, SpareKind::Node, SpareKind::Bare];

    pub fn name(self) -> &'static str {
        match self {
            SpareKind::Python => "python",
            SpareKind::Node => "node",
            SpareKind::Bare => "bare",
        }
    }

    /// The prestarted kind that can serve a function of `lang` with `env`, if any. A variable
    /// the interpreter reads only at start-up (PYTHONHASHSEED, NODE_OPTIONS, ...) cannot take
    /// effect in an interpreter that is already running, so such functions start fresh.
    pub fn prestarted_for<'a>(
        lang: Lang,
        env: impl IntoIterator<Item = &'a String> + Clone,
    ) -> Option<SpareKind> {
        let startup_var = |prefix: &str, allowed: &[&str]| {
            env.clone()
                .into_iter()
                .any(|k| k.starts_with(prefix) && !allowed.contains(&k.as_str()))
        };
        match lang {
            Lang::Python3 if !startup_var("PYTHON", &["PYTHONPATH"]) => Some(SpareKind::Python),
            Lang::Nodejs if !startup_var("NODE_", &["NODE_ENV"]) && !startup_var("UV_", &[]) => {
                Some(SpareKind::Node)
            }
            _ => None,
        }
    }
}

/// What building a spare needs; fixed for the server's lifetime.
pub(crate) struct SpareFactory {
    pub sandbox: SandboxConfig,
    pub interpreters: Interpreters,
    pub code_root: PathBuf,
    pub runtime_dir: PathBuf,
    pub mask_paths: Vec<PathBuf>,
    pub ro_paths: Vec<PathBuf>,
    /// PATH, LANG, TZ: what every runtime process starts with.
    pub base_env: Vec<(String, String)>,
    pub pool: Arc<Pool>,
    /// The python zygote, started on first use and replaced if it dies.
    pub zygote: tokio::sync::Mutex<Option<Zygote>>,
}

impl SpareFactory {
    async fn make(&self, kind: SpareKind) -> Result<ReadySpare, String> {
        if kind == SpareKind::Python {
            match self.make_forked().await {
                Ok(spare) => return Ok(spare),
                Err(e) => {
                    tracing::warn!(error = %e, "python zygote unavailable; starting the interpreter in the spare instead")
                }
            }
        }
        self.make_started(kind).await
    }

    /// A python spare whose runtime is forked into it by the zygote.
    async fn make_forked(&self) -> Result<ReadySpare, String> {
        let python = self
            .interpreters
            .python
            .as_ref()
            .map_err(|e| e.to_string())?;
        let uid = self
            .pool
            .take_uid()
            .ok_or_else(|| "no free instance uid".to_string())?;
        let spec = SpareSpec {
            prestart: None,
            adoptable: true,
            ..self.spec(uid)
        };
        let mut spare = match nimbus_sandbox::prepare_spare(&self.sandbox, spec).await {
            Ok(s) => s,
            Err(e) => {
                self.pool.free_uid(uid);
                return Err(e.to_string());
            }
        };
        let (endpoint, api) = match runtime_endpoint() {
            Ok(e) => e,
            Err(e) => {
                scrap(spare, &self.pool).await;
                return Err(e);
            }
        };
        let mut env = self.base_env.clone();
        env.push(("NIMBUS_HANDOFF_FD".into(), "3".into()));
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), api));
        let forked = match spare.adoption() {
            None => Err("the spare did not offer a handoff pipe".to_string()),
            Some(adoption) => {
                let mut z = self.zygote.lock().await;
                if !z.as_mut().is_some_and(Zygote::is_alive) {
                    *z = Some(Zygote::start(
                        &python.executable,
                        &self.runtime_dir,
                        &self.base_env,
                    )?);
                }
                let result = match z.as_mut() {
                    Some(zygote) => zygote.fork(&adoption, uid, &env).await,
                    None => Err("no zygote".to_string()),
                };
                if result.is_err() {
                    // Start a fresh one next time.
                    *z = None;
                }
                result
            }
        };
        match forked {
            Ok(pid) => {
                spare.adopt(pid);
                Ok(ReadySpare {
                    sandbox: spare,
                    endpoint: Some(endpoint),
                })
            }
            Err(e) => {
                scrap(spare, &self.pool).await;
                Err(e)
            }
        }
    }

    fn spec(&self, uid: u32) -> SpareSpec {
        SpareSpec {
            id: format!("spare-{}", uuid::Uuid::new_v4().simple()),
            code_root: self.code_root.clone(),
            runtime_dir: Some(self.runtime_dir.clone()),
            ro_paths: self.ro_paths.clone(),
            mask_paths: self.mask_paths.clone(),
            memory_mb: SPARE_MEMORY_MB,
            cpu_weight_mb: SPARE_MEMORY_MB,
            pids_max: Limits::PIDS_PER_INSTANCE,
            tmp_mb: SPARE_TMP_MB,
            uid,
            gid: uid,
            prestart: None,
            adoptable: false,
        }
    }

    /// A spare whose interpreter (if any) is started in it.
    async fn make_started(&self, kind: SpareKind) -> Result<ReadySpare, String> {
        let runtime_root = self.sandbox.runtime_root(&self.runtime_dir);
        let mut endpoint = None;
        let prestart = match kind {
            SpareKind::Bare => None,
            SpareKind::Python | SpareKind::Node => {
                let (interp, file) = match kind {
                    SpareKind::Python => {
                        (&self.interpreters.python, crate::bootstraps::PYTHON_FILE)
                    }
                    _ => (&self.interpreters.node, crate::bootstraps::NODE_FILE),
                };
                let interp = interp.as_ref().map_err(|e| e.to_string())?;
                let (listener, api) = runtime_endpoint()?;
                endpoint = Some(listener);
                let mut env = self.base_env.clone();
                env.push(("NIMBUS_HANDOFF_FD".into(), "3".into()));
                env.push(("NIMBUS_READY_LINE".into(), READY_LINE.into()));
                env.push(("AWS_LAMBDA_RUNTIME_API".into(), api));
                Some(Program {
                    program: interp.executable.clone(),
                    args: vec![runtime_root.join(file).display().to_string()],
                    env,
                })
            }
        };
        let uid = self
            .pool
            .take_uid()
            .ok_or_else(|| "no free instance uid".to_string())?;
        let spec = SpareSpec {
            prestart,
            ..self.spec(uid)
        };
        let waits = spec.prestart.is_some();
        let mut spare = match nimbus_sandbox::prepare_spare(&self.sandbox, spec).await {
            Ok(spare) => spare,
            Err(e) => {
                // prepare_spare tore the sandbox down before returning.
                self.pool.free_uid(uid);
                return Err(e.to_string());
            }
        };
        if waits {
            if let Err(e) = ready_line(&mut spare).await {
                scrap(spare, &self.pool).await;
                return Err(format!("the {} runtime in a spare {e}", kind.name()));
            }
        }
        Ok(ReadySpare {
            sandbox: spare,
            endpoint,
        })
    }
}

/// Kills a spare and, once its processes are gone, frees its uid for another instance.
async fn scrap(mut spare: Spare, pool: &Pool) {
    let uid = spare.uid();
    spare.kill();
    let _ = spare.wait().await;
    drop(spare);
    pool.free_uid(uid);
}

/// What a started runtime prints, once loaded and waiting for its function, to say so.
const READY_LINE: &str = "nimbus: spare ready";

/// How long a started runtime may take to load.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for the spare's runtime to print [`READY_LINE`]: until then it is still starting (node
/// takes tens of milliseconds), and a cold start on it would wait for that. Reads byte by byte,
/// so nothing after the line (the function's own output) is taken from the instance.
async fn ready_line(spare: &mut Spare) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let Some(out) = spare.stdout_mut() else {
        return Err("has no stdout".into());
    };
    let mut line = Vec::with_capacity(READY_LINE.len() + 1);
    let read = async {
        loop {
            match out.read_u8().await {
                Ok(b'\n') => return Ok(()),
                Ok(b) if line.len() < READY_LINE.len() => line.push(b),
                Ok(_) => {
                    return Err(format!(
                        "printed {:?}... before its ready line",
                        String::from_utf8_lossy(&line)
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err("closed its stdout before saying it was ready (it exited?)".into())
                }
                Err(e) => return Err(format!("reading its stdout: {e}")),
            }
        }
    };
    match tokio::time::timeout(READY_TIMEOUT, read).await {
        Ok(Ok(())) if line == READY_LINE.as_bytes() => Ok(()),
        Ok(Ok(())) => Err(format!(
            "printed {:?} instead of its ready line",
            String::from_utf8_lossy(&line)
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("did not start within {}s", READY_TIMEOUT.as_secs())),
    }
}

#[derive(Default)]
struct State {
    ready: HashMap<SpareKind, VecDeque<ReadySpare>>,
    filling: HashMap<SpareKind, bool>,
    failed_at: HashMap<SpareKind, Instant>,
}

struct Inner {
    factory: SpareFactory,
    per_kind: usize,
    kinds: Vec<SpareKind>,
    state: Mutex<State>,
    stopped: AtomicBool,
}

/// The spares kept ready. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Spares {
    inner: Arc<Inner>,
}

impl Spares {
    /// `per_kind` spares of each kind the host can build (0 disables spares).
    pub fn new(factory: SpareFactory, per_kind: usize) -> Spares {
        let mut kinds = Vec::new();
        if factory.sandbox.isolation.mounts() && per_kind > 0 {
            kinds.push(SpareKind::Bare);
            if factory.interpreters.python.is_ok() {
                kinds.push(SpareKind::Python);
            }
            if factory.interpreters.node.is_ok() {
                kinds.push(SpareKind::Node);
            }
        }
        Spares {
            inner: Arc::new(Inner {
                factory,
                per_kind,
                kinds,
                state: Mutex::new(State::default()),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts filling every kind.
    pub fn start(&self) {
        for kind in self.inner.kinds.clone() {
            self.refill(kind);
        }
    }

    /// A ready spare of `kind`, if there is one; a refill starts either way.
    pub fn take(&self, kind: SpareKind) -> Option<ReadySpare> {
        if !self.inner.kinds.contains(&kind) {
            return None;
        }
        let mut dead = Vec::new();
        let found = {
            let mut st = self.lock();
            let queue = st.ready.entry(kind).or_default();
            let mut found = None;
            while let Some(s) = queue.pop_front() {
                if s.sandbox.is_alive() {
                    found = Some(s);
                    break;
                }
                dead.push(s);
            }
            found
        };
        for s in dead {
            self.discard(s);
        }
        self.refill(kind);
        found
    }

    /// Builds a spare of `kind` now, for a cold start that found none ready.
    pub async fn make_now(&self, kind: SpareKind) -> Option<ReadySpare> {
        if !self.inner.kinds.contains(&kind) {
            return None;
        }
        match self.inner.factory.make(kind).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(kind = kind.name(), error = %e, "could not build a spare on demand");
                None
            }
        }
    }

    /// Ready spares per kind, for status reports.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let st = self.lock();
        self.inner
            .kinds
            .iter()
            .map(|k| (k.name(), st.ready.get(k).map_or(0, VecDeque::len)))
            .collect()
    }

    /// Stops refilling, kills every ready spare, and waits (bounded) until their processes are
    /// gone.
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let all: Vec<Spare> = self
            .lock()
            .ready
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|s| s.sandbox))
            .collect();
        let mut all = all;
        for s in &mut all {
            s.kill();
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        for s in &mut all {
            let _ = tokio::time::timeout_at(until, s.wait()).await;
        }
    }

    /// Kills the python zygote (after the instances it forked runtimes for are gone, so their
    /// reporting parents end with them rather than outliving it).
    pub async fn stop_zygote(&self) {
        if let Some(mut z) = self.inner.factory.zygote.lock().await.take() {
            z.stop().await;
        }
    }

    /// Kills a spare; its uid returns once its processes are gone.
    pub fn discard(&self, spare: ReadySpare) {
        let pool = self.inner.factory.pool.clone();
        tokio::spawn(async move { scrap(spare.sandbox, &pool).await });
    }

    fn refill(&self, kind: SpareKind) {
        let have = {
            let mut st = self.lock();
            let have = st.ready.get(&kind).map_or(0, VecDeque::len);
            let busy = st.filling.get(&kind).copied().unwrap_or(false);
            let resting = st
                .failed_at
                .get(&kind)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if busy
                || resting
                || have >= self.inner.per_kind
                || self.inner.stopped.load(Ordering::SeqCst)
            {
                return;
            }
            st.filling.insert(kind, true);
            have
        };
        let me = self.clone();
        tokio::spawn(async move {
            if have > 0 {
                tokio::time::sleep(REFILL_DELAY).await;
            }
            loop {
                let started = Instant::now();
                let made = me.inner.factory.make(kind).await;
                tracing::debug!(
                    kind = kind.name(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    ok = made.is_ok(),
                    "spare built"
                );
                let mut st = me.lock();
                match made {
                    Ok(spare) => {
                        if me.inner.stopped.load(Ordering::SeqCst) {
                            st.filling.insert(kind, false);
                            drop(st);
                            me.discard(spare);
                            return;
                        }
                        st.failed_at.remove(&kind);
                        let queue = st.ready.entry(kind).or_default();
                        queue.push_back(spare);
                        if queue.len() >= me.inner.per_kind {
                            st.filling.insert(kind, false);
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(kind = kind.name(), error = %e, "could not build a spare sandbox; cold starts of this kind start from scratch for now");
                        st.failed_at.insert(kind, Instant::now());
                        st.filling.insert(kind, false);
                        return;
                    }
                }
            }
        });
    }
}
