//! The server side: prepares cgroups, starts the helper (or the program directly), and
//! supervises the instance until it is gone.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{pipe2, Pid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use crate::cgroup::{InstanceCgroups, Limits};
use crate::protocol::{self, Report, Request, FDS_ENV};
use crate::{sys, InstanceSpec, SandboxConfig, SandboxError};

/// Directories the sandbox provides itself; a host path under one of them cannot be shown.
/// (`/tmp` is the sandbox's own too, but host paths under it are bound read-only inside it;
/// only `/tmp` itself is refused, below.)
const SANDBOX_OWNED: [&str; 4] = ["/dev", "/proc", crate::TASK_ROOT, crate::RUNTIME_ROOT];

/// How long the helper may take to build the sandbox and exec the program.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How an instance ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when the program exited on its own.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed (9 for `kill()` and for the OOM killer).
    pub signal: Option<i32>,
    /// The memory cgroup recorded an OOM kill.
    pub oom: bool,
    /// The sandbox failed after `spawn` returned (the helper died unexpectedly).
    pub setup_error: Option<String>,
}

/// A running (or finished) function instance. Dropping it kills the whole tree; its cgroups
/// and scratch directory are removed once every process is gone.
pub struct Instance {
    id: String,
    pid: u32,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    shared: Arc<Shared>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

/// State shared with the supervisor task; the last owner cleans up.
struct Shared {
    /// Host pid of the helper (sandbox) or the program (direct).
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// Direct mode: the program leads its own process group.
    process_group: bool,
    /// The helper/program has been reaped; the pid must not be signalled any more.
    reaped: AtomicBool,
    killed: AtomicBool,
    cgroups: Option<InstanceCgroups>,
    /// Direct mode: the per-instance tmp dir to remove.
    scratch: Option<PathBuf>,
    /// Sandbox mode: ns-init, once the helper has reported it.
    init: Mutex<Option<Init>>,
    /// Sandbox mode: the server's end of the spec pipe; closing it tells the helper to kill
    /// ns-init, reap it and exit.
    lifeline: Mutex<Option<OwnedFd>>,
}

/// ns-init as seen from the server.
struct Init {
    pid: i32,
    pidfd: Option<OwnedFd>,
}

impl Shared {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if !self.process_group {
            drop(lock(&self.lifeline).take());
            let init = lock(&self.init);
            if let Some(init) = init.as_ref() {
                // Killing ns-init ends the pid namespace; the helper stays to reap it (killing
                // the helper instead would leave ns-init an orphan zombie of the host's init).
                sigkill(
                    init.pidfd.as_ref(),
                    init.pid,
                    self.reaped.load(Ordering::SeqCst),
                );
                if let Some(cg) = &self.cgroups {
                    cg.kill_all_except(Some(self.pid));
                }
                return;
            }
        }
        sigkill(
            self.pidfd.as_ref(),
            self.pid,
            self.reaped.load(Ordering::SeqCst),
        );
        if self.process_group {
            // Members keep the group id alive, so this cannot hit a reused pid while any of
            // the instance's processes remain.
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        if let Some(cg) = &self.cgroups {
            cg.kill_all();
        }
    }

    fn oom_killed(&self, signal: Option<i32>) -> bool {
        let Some(cg) = &self.cgroups else {
            return false;
        };
        match cg.oom_kills() {
            Some(n) => n > 0,
            // Kernels without the oom_kill counter: the limit was hit and something was
            // SIGKILLed that we did not kill.
            None => {
                cg.memory_failcnt().unwrap_or(0) > 0
                    && signal == Some(libc::SIGKILL)
                    && !self.killed.load(Ordering::SeqCst)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(mut cg) = self.cgroups.take() {
            cg.destroy();
        }
        if let Some(dir) = &self.scratch {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Instance {
    /// Host pid of the process that owns the instance: the sandbox helper, or the program
    /// itself when running without namespaces.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Resolves when the program and every process it started are gone. Cancel-safe.
    pub async fn wait(&mut self) -> ExitInfo {
        match self.exit.wait_for(|e| e.is_some()).await {
            Ok(e) => e.clone().unwrap_or_default(),
            Err(_) => ExitInfo {
                setup_error: Some("instance supervisor stopped (runtime shutting down)".into()),
                ..ExitInfo::default()
            },
        }
    }

    /// SIGKILLs the whole tree now. Idempotent and non-blocking.
    pub fn kill(&mut self) {
        self.shared.kill();
    }

    /// Starts a new peak-memory window.
    pub fn reset_peak_memory(&self) {
        if let Some(cg) = &self.shared.cgroups {
            cg.reset_peak();
        }
    }

    /// Peak memory since the last reset; `None` without a memory cgroup.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        self.shared.cgroups.as_ref()?.peak_bytes()
    }

    /// The kernel OOM-killed a process of this instance.
    pub fn oom_killed(&self) -> bool {
        let signal = self.exit.borrow().as_ref().and_then(|e| e.signal);
        self.shared.oom_killed(signal)
    }

    /// The instance's cgroup directories (for diagnostics and tests).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.shared
            .cgroups
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Reaping and cgroup removal happen in the supervisor task once the helper has exited
        // (or here, via Shared's drop, if that task is already gone).
        self.shared.kill();
    }
}

fn validate(spec: &InstanceSpec) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::InvalidSpec(m));
    if spec.id.is_empty()
        || spec.id.len() > 64
        || !spec
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad(format!("id {:?} must be 1-64 of [a-z0-9-]", spec.id));
    }
    if !spec.program.is_absolute() {
        return bad(format!(
            "program {} is not an absolute path",
            spec.program.display()
        ));
    }
    let has_nul = |s: &str| s.contains('\0');
    if spec.args.iter().any(|a| has_nul(a)) {
        return bad("an argument contains a NUL byte".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || has_nul(k) || has_nul(v) {
            return bad(format!("environment variable {k:?} is malformed"));
        }
    }
    Ok(())
}

fn canonical(p: &Path, what: &str) -> Result<PathBuf, SandboxError> {
    fs::canonicalize(p).map_err(|e| {
        let mut err = SandboxError::io("stat", p, &e);
        if let SandboxError::Syscall { path, .. } = &mut err {
            *path = format!("{} ({what})", p.display());
        }
        err
    })
}

/// Everything made before the process starts; owned by the Instance afterwards.
struct Prepared {
    cgroups: Option<InstanceCgroups>,
    procs: Vec<OwnedFd>,
    request: Option<Request>,
    scratch: Option<PathBuf>,
}

fn prepare(config: &SandboxConfig, spec: &InstanceSpec) -> Result<Prepared, SandboxError> {
    let iso = &config.isolation;
    let cgroups = match &iso.cgroups {
        Some(layout) => Some(InstanceCgroups::create(
            layout,
            &config.cgroup_name,
            &spec.id,
            Limits {
                memory_mb: spec.memory_mb,
                cpu_weight_mb: spec.cpu_weight_mb,
                pids_max: spec.pids_max,
            },
        )?),
        None => None,
    };
    let procs = match &cgroups {
        Some(cg) => cg.open_procs()?,
        None => Vec::new(),
    };
    fs::create_dir_all(&config.scratch_dir)
        .map_err(|e| SandboxError::io("mkdir", &config.scratch_dir, &e))?;
    if !iso.sandbox {
        let tmp = config.tmp_dir(&spec.id);
        fs::create_dir_all(&tmp).map_err(|e| SandboxError::io("mkdir", &tmp, &e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(|e| SandboxError::io("chmod", &tmp, &e))?;
        if iso.setuid {
            nix::unistd::chown(
                &tmp,
                Some(nix::unistd::Uid::from_raw(spec.uid)),
                Some(nix::unistd::Gid::from_raw(spec.gid)),
            )
            .map_err(|errno| SandboxError::Syscall {
                syscall: "chown".into(),
                path: tmp.display().to_string(),
                errno,
            })?;
        }
        return Ok(Prepared {
            cgroups,
            procs,
            request: None,
            scratch: Some(tmp),
        });
    }
    let code_dir = canonical(&spec.code_dir, "code dir")?;
    let runtime_dir = match &spec.runtime_dir {
        Some(d) => Some(canonical(d, "runtime dir")?),
        None => None,
    };
    let ro_paths = spec
        .ro_paths
        .iter()
        .filter_map(|p| match fs::canonicalize(p) {
            Ok(c) if c == Path::new("/tmp") || SANDBOX_OWNED.iter().any(|own| c.starts_with(own)) => {
                tracing::warn!(path = %c.display(), "skipping read-only path: the sandbox has its own there");
                None
            }
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "skipping read-only path");
                None
            }
        })
        .collect();
    let mask_paths = spec
        .mask_paths
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    let hostname: String = format!("nimbus-{}", spec.id).chars().take(64).collect();
    Ok(Prepared {
        cgroups,
        procs,
        request: Some(Request {
            id: spec.id.clone(),
            hostname,
            root_dir: fs::canonicalize(&config.scratch_dir)
                .map_err(|e| SandboxError::io("stat", &config.scratch_dir, &e))?,
            program: spec.program.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            code_dir,
            runtime_dir,
            ro_paths,
            mask_paths,
            tmp_mb: spec.tmp_mb,
            uid: spec.uid,
            gid: spec.gid,
        }),
        scratch: None,
    })
}

/// Starts an instance. Returns once the program has been exec'd inside its sandbox, or with
/// the error that prevented it ([`SandboxError::Exec`] when the program itself is missing or
/// not executable).
pub async fn spawn(config: &SandboxConfig, spec: InstanceSpec) -> Result<Instance, SandboxError> {
    validate(&spec)?;
    let config = config.clone();
    let started = tokio::task::spawn_blocking(move || start(&config, &spec))
        .await
        .map_err(|e| SandboxError::Helper {
            exe: PathBuf::new(),
            reason: format!("spawn task failed: {e}"),
        })??;
    started.finish().await
}

/// A started process and what still has to happen on the async side.
struct Started {
    exe: PathBuf,
    id: String,
    child: Child,
    shared: Arc<Shared>,
    sandbox: Option<(OwnedFd, OwnedFd)>, // (status read end, spec write end)
}

/// Blocking part of `spawn`: cgroups, pipes, fork/exec, and sending the spec.
fn start(config: &SandboxConfig, spec: &InstanceSpec) -> Result<Started, SandboxError> {
    let prepared = prepare(config, spec)?;
    let procs_raw: Vec<i32> = prepared.procs.iter().map(|f| f.as_raw_fd()).collect();
    let mut pending = PendingCleanup {
        cgroups: prepared.cgroups,
        scratch: prepared.scratch,
    };

    let (mut cmd, pipes, exe) = match &prepared.request {
        Some(_) => {
            let (spec_r, spec_w) = pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
            let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
            let mut cmd = Command::new(&config.helper_exe);
            cmd.args(&config.helper_args)
                .env_clear()
                .env(
                    FDS_ENV,
                    format!("{},{}", spec_r.as_raw_fd(), status_w.as_raw_fd()),
                )
                .current_dir("/");
            let keep = [spec_r.as_raw_fd(), status_w.as_raw_fd()];
            let procs = procs_raw.clone();
            // SAFETY: the closure runs between fork and exec in a copy of a multi-threaded
            // process, so it only makes async-signal-safe syscalls (write, fcntl) on fds it
            // was handed and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    join_cgroups(&procs)?;
                    for fd in keep {
                        if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            (
                cmd,
                Some((spec_r, spec_w, status_r, status_w)),
                config.helper_exe.clone(),
            )
        }
        None => {
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.code_dir);
            let ids = config.isolation.setuid.then_some((spec.uid, spec.gid));
            let procs = procs_raw.clone();
            // SAFETY: as above: only async-signal-safe syscalls (setsid, write, setrlimit,
            // setgroups/setgid/setuid) in the forked child, no allocation. The cgroups are
            // joined before dropping root so the write is permitted.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    join_cgroups(&procs)?;
                    let zero = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::setrlimit(libc::RLIMIT_CORE, &zero);
                    if let Some((uid, gid)) = ids {
                        if libc::setgroups(0, std::ptr::null()) < 0
                            || libc::setgid(gid) < 0
                            || libc::setuid(uid) < 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            (cmd, None, spec.program.clone())
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if pipes.is_none() => {
            return Err(SandboxError::Exec {
                program: spec.program.clone(),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        }
        Err(e) => {
            return Err(SandboxError::Helper {
                exe,
                reason: format!("could not start it: {e}"),
            })
        }
    };
    drop(cmd);
    drop(prepared.procs);
    let pid = child.id().unwrap_or(0) as i32;
    let shared = Arc::new(Shared {
        pid,
        // The child cannot be reaped before the supervisor starts, so the pid is still ours.
        pidfd: sys::pidfd_open(pid),
        process_group: pipes.is_none(),
        reaped: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        cgroups: pending.cgroups.take(),
        scratch: pending.scratch.take(),
        init: Mutex::new(None),
        lifeline: Mutex::new(None),
    });

    let sandbox = match (pipes, &prepared.request) {
        (Some((spec_r, spec_w, status_r, status_w)), Some(req)) => {
            drop(spec_r);
            drop(status_w);
            let mut w = fs::File::from(spec_w);
            if let Err(e) = protocol::write_request(&mut w, req) {
                shared.kill();
                return Err(SandboxError::Helper {
                    exe,
                    reason: format!("sending the instance spec: {e}"),
                });
            }
            Some((status_r, OwnedFd::from(w)))
        }
        _ => None,
    };
    Ok(Started {
        exe,
        id: spec.id.clone(),
        child,
        shared,
        sandbox,
    })
}

/// Cgroups and scratch made before the process exists; removed if starting it fails.
struct PendingCleanup {
    cgroups: Option<InstanceCgroups>,
    scratch: Option<PathBuf>,
}

impl Drop for PendingCleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn pipe_err(errno: Errno) -> SandboxError {
    SandboxError::Syscall {
        syscall: "pipe2".into(),
        path: "sandbox helper pipes".into(),
        errno,
    }
}

/// Writes "0" (meaning "the writing process") to each pre-opened cgroup.procs.
///
/// # Safety
/// Called between fork and exec: it only calls write(2).
unsafe fn join_cgroups(procs: &[i32]) -> std::io::Result<()> {
    for fd in procs {
        // SAFETY: writing one byte from a static buffer to an fd the parent opened.
        if unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Started {
    async fn finish(self) -> Result<Instance, SandboxError> {
        let Started {
            exe,
            id,
            mut child,
            shared,
            sandbox,
        } = self;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (exit_tx, exit_rx) = watch::channel(None);
        let pid = shared.pid as u32;

        let Some((status_r, spec_w)) = sandbox else {
            tokio::spawn(supervise_direct(child, shared.clone(), exit_tx));
            return Ok(Instance {
                id,
                pid,
                stdout,
                stderr,
                shared,
                exit: exit_rx,
            });
        };

        *lock(&shared.lifeline) = Some(spec_w);
        let status = pipe::Receiver::from_owned_fd(status_r).map_err(|e| SandboxError::Helper {
            exe: exe.clone(),
            reason: format!("status pipe: {e}"),
        })?;
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(supervise_sandbox(
            child,
            status,
            shared.clone(),
            ready_tx,
            exit_tx,
        ));
        let instance = Instance {
            id,
            pid,
            stdout,
            stderr: None,
            shared,
            exit: exit_rx,
        };
        let ready = match tokio::time::timeout(SETUP_TIMEOUT, ready_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HelperFailure::Died("stopped without a report".into())),
            Err(_) => Err(HelperFailure::Died(format!(
                "did not start the program within {}s",
                SETUP_TIMEOUT.as_secs()
            ))),
        };
        let mut instance = instance;
        let failure = match ready {
            Ok(()) => {
                instance.stderr = stderr;
                return Ok(instance);
            }
            Err(f) => f,
        };
        // Tear down before returning, so a retry with the same id finds no leftovers.
        instance.kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), instance.wait()).await;
        drop(instance);
        match failure {
            HelperFailure::Error(e) => Err(e),
            HelperFailure::Died(reason) => {
                // Whatever the helper printed explains more than its exit status.
                let mut text = String::new();
                if let Some(err) = stderr.as_mut() {
                    let mut buf = vec![0u8; 4096];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(500), err.read(&mut buf)).await
                    {
                        text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                    }
                }
                let reason = if text.is_empty() {
                    reason
                } else {
                    format!("{reason}: {text}")
                };
                Err(SandboxError::Helper { exe, reason })
            }
        }
    }
}

enum HelperFailure {
    Error(SandboxError),
    Died(String),
}

async fn supervise_sandbox(
    mut child: Child,
    status: pipe::Receiver,
    shared: Arc<Shared>,
    ready: oneshot::Sender<Result<(), HelperFailure>>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    let mut ready = Some(ready);
    let mut exited: Option<(Option<i32>, Option<i32>)> = None;
    let mut setup_error: Option<String> = None;
    let mut lines = BufReader::new(status).lines();
    // EOF on the status pipe means the helper and ns-init are both gone, and with ns-init the
    // whole pid namespace.
    while let Ok(Some(line)) = lines.next_line().await {
        let report = match serde_json::from_str::<Report>(&line) {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(%line, "unintelligible report from the sandbox helper");
                continue;
            }
        };
        let failure = match report {
            Report::Started { init_pid } => {
                *lock(&shared.init) = Some(Init {
                    pid: init_pid,
                    pidfd: sys::pidfd_open(init_pid),
                });
                if shared.killed.load(Ordering::SeqCst) {
                    shared.kill();
                }
                continue;
            }
            Report::Ready => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                continue;
            }
            Report::Exited { code, signal } => {
                exited = Some((code, signal));
                continue;
            }
            Report::ExecFailed { program, errno } => SandboxError::Exec {
                program,
                errno: Errno::from_raw(errno),
            },
            Report::SetupFailed {
                syscall,
                path,
                errno,
            } => SandboxError::Syscall {
                syscall,
                path,
                errno: Errno::from_raw(errno),
            },
        };
        setup_error = Some(failure.to_string());
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(HelperFailure::Error(failure)));
        }
    }
    let status = child.wait().await;
    shared.reaped.store(true, Ordering::SeqCst);
    let (code, signal) = match (exited, &status) {
        (Some(e), _) => e,
        (None, Ok(s)) => (s.code(), s.signal()),
        (None, Err(_)) => (None, None),
    };
    if let Some(tx) = ready.take() {
        let why = match &status {
            Ok(s) => format!("exited ({}) before starting the program", describe(s)),
            Err(e) => format!("could not be waited for: {e}"),
        };
        setup_error.get_or_insert_with(|| why.clone());
        let _ = tx.send(Err(HelperFailure::Died(why)));
    }
    let oom = shared.oom_killed(signal);
    // Let go of the cgroups before announcing the exit: once `wait()` resolves, the Instance
    // is their only owner and dropping it removes them on the spot.
    drop(shared);
    let _ = exit_tx.send(Some(ExitInfo {
        code,
        signal,
        oom,
        setup_error,
    }));
}

async fn supervise_direct(
    mut child: Child,
    shared: Arc<Shared>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    let status = child.wait().await;
    shared.reaped.store(true, Ordering::SeqCst);
    // The program's exit ends the instance, as it does in the sandbox where ns-init's exit
    // takes the pid namespace down: kill what it left behind in its group.
    let _ = killpg(Pid::from_raw(shared.pid), Signal::SIGKILL);
    if let Some(cg) = &shared.cgroups {
        cg.kill_all();
    }
    let (code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    };
    let oom = shared.oom_killed(signal);
    drop(shared);
    let _ = exit_tx.send(Some(ExitInfo {
        code,
        signal,
        oom,
        setup_error: status.err().map(|e| format!("wait: {e}")),
    }));
}

fn describe(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("code {c}"),
        (_, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// SIGKILL through the pidfd when there is one (immune to pid reuse), else by pid unless the
/// process was already reaped (its pid may belong to someone else by now).
fn sigkill(pidfd: Option<&OwnedFd>, pid: i32, reaped: bool) {
    match pidfd {
        Some(fd) => {
            let _ = sys::pidfd_kill(fd.as_fd(), libc::SIGKILL);
        }
        None if !reaped => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        None => {}
    }
}
