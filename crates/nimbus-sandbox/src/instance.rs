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
use tokio::sync::{mpsc, watch};

use crate::cgroup::{InstanceCgroups, Limits};
use crate::launcher::{LaunchFds, Launched, Launcher};
use crate::protocol::{self, Assign, Exec, Report, Request, Start, FDS_ENV};
use crate::{sys, AssignStart, Assignment, InstanceSpec, SandboxConfig, SandboxError, SpareSpec};

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
    /// Host pid of ns-init (forked by the launcher), the executed helper (sandbox without a
    /// launcher) or the program (direct).
    pid: i32,
    /// Shared with [`Init`] when the launched process is ns-init itself.
    pidfd: Option<Arc<OwnedFd>>,
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
    pidfd: Option<Arc<OwnedFd>>,
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
                    init.pidfd.as_deref(),
                    init.pid,
                    self.reaped.load(Ordering::SeqCst),
                );
                if let Some(cg) = &self.cgroups {
                    if init.pid == self.pid {
                        // Launched: no helper above ns-init to spare.
                        cg.kill_all();
                    } else {
                        cg.kill_all_except(Some(self.pid));
                    }
                }
                return;
            }
        }
        sigkill(
            self.pidfd.as_deref(),
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
    /// Host pid of the process that owns the instance: the sandbox's init (forked by the
    /// launcher) or the executed sandbox helper, or the program itself when running without
    /// namespaces.
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

    /// A handle on the instance's memory accounting that outlives borrows of the instance:
    /// the invoke path resets and reads the peak without going through whoever owns it.
    pub fn memory_probe(&self) -> MemoryProbe {
        MemoryProbe(
            self.shared
                .cgroups
                .as_ref()
                .and_then(InstanceCgroups::peak_handle),
        )
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

/// See [`Instance::memory_probe`]: open files of the memory cgroup, nothing that keeps the
/// instance or its cgroups alive.
#[derive(Clone, Debug)]
pub struct MemoryProbe(Option<crate::cgroup::PeakHandle>);

impl MemoryProbe {
    /// Starts a new peak-memory window.
    pub fn reset_peak(&self) {
        if let Some(h) = &self.0 {
            h.reset_peak();
        }
    }

    /// Peak memory since the last reset; `None` without a memory cgroup.
    pub fn peak_bytes(&self) -> Option<u64> {
        self.0.as_ref()?.peak_bytes()
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
    validate_id(&spec.id)?;
    validate_program(&spec.program, &spec.args, &spec.env)
}

fn validate_id(id: &str) -> Result<(), SandboxError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(SandboxError::InvalidSpec(format!(
            "id {id:?} must be 1-64 of [a-z0-9-]"
        )));
    }
    Ok(())
}

fn validate_program(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<(), SandboxError> {
    if !program.is_absolute() {
        return Err(SandboxError::InvalidSpec(format!(
            "program {} is not an absolute path",
            program.display()
        )));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(SandboxError::InvalidSpec(
            "an argument contains a NUL byte".into(),
        ));
    }
    validate_env(env)
}

fn validate_env(env: &[(String, String)]) -> Result<(), SandboxError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SandboxError::InvalidSpec(format!(
                "environment variable {k:?} is malformed"
            )));
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

fn make_cgroups(
    config: &SandboxConfig,
    id: &str,
    limits: Limits,
) -> Result<(Option<InstanceCgroups>, Vec<OwnedFd>), SandboxError> {
    let cgroups = match &config.isolation.cgroups {
        Some(layout) => Some(InstanceCgroups::create(
            layout,
            &config.cgroup_name,
            id,
            limits,
        )?),
        None => None,
    };
    let procs = match &cgroups {
        Some(cg) => cg.open_procs()?,
        None => Vec::new(),
    };
    fs::create_dir_all(&config.scratch_dir)
        .map_err(|e| SandboxError::io("mkdir", &config.scratch_dir, &e))?;
    Ok((cgroups, procs))
}

/// Without namespaces: cgroups and a private tmp dir for the program run directly.
fn prepare_direct(config: &SandboxConfig, spec: &InstanceSpec) -> Result<Prepared, SandboxError> {
    let (cgroups, procs) = make_cgroups(config, &spec.id, limits_of(spec))?;
    let tmp = config.tmp_dir(&spec.id);
    fs::create_dir_all(&tmp).map_err(|e| SandboxError::io("mkdir", &tmp, &e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
        .map_err(|e| SandboxError::io("chmod", &tmp, &e))?;
    if config.isolation.setuid {
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
    Ok(Prepared {
        cgroups,
        procs,
        request: None,
        scratch: Some(tmp),
    })
}

fn limits_of(spec: &InstanceSpec) -> Limits {
    Limits {
        memory_mb: spec.memory_mb,
        cpu_weight_mb: spec.cpu_weight_mb,
        pids_max: spec.pids_max,
    }
}

/// With namespaces: cgroups and the helper's request for a spare sandbox.
fn prepare_spare_request(
    config: &SandboxConfig,
    spec: &SpareSpec,
) -> Result<Prepared, SandboxError> {
    let code_root = canonical(&spec.code_root, "code dir")?;
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
    let limits = Limits {
        memory_mb: spec.memory_mb,
        cpu_weight_mb: spec.cpu_weight_mb,
        pids_max: spec.pids_max,
    };
    let (cgroups, procs) = make_cgroups(config, &spec.id, limits)?;
    let hostname: String = format!("nimbus-{}", spec.id).chars().take(64).collect();
    Ok(Prepared {
        cgroups,
        procs,
        request: Some(Request {
            id: spec.id.clone(),
            hostname,
            root_dir: fs::canonicalize(&config.scratch_dir)
                .map_err(|e| SandboxError::io("stat", &config.scratch_dir, &e))?,
            code_root,
            runtime_dir,
            ro_paths,
            mask_paths,
            tmp_mb: spec.tmp_mb,
            uid: spec.uid,
            gid: spec.gid,
            prestart: spec.prestart.clone().map(exec_of),
            adoptable: spec.adoptable,
        }),
        scratch: None,
    })
}

fn exec_of(p: crate::Program) -> Exec {
    Exec {
        program: p.program,
        args: p.args,
        env: p.env,
    }
}

/// Starts an instance. Returns once the program has been exec'd inside its sandbox, or with
/// the error that prevented it ([`SandboxError::Exec`] when the program itself is missing or
/// not executable).
pub async fn spawn(config: &SandboxConfig, spec: InstanceSpec) -> Result<Instance, SandboxError> {
    validate(&spec)?;
    if !config.isolation.sandbox {
        let config = config.clone();
        let started = tokio::task::spawn_blocking(move || start(&config, &spec))
            .await
            .map_err(join_err)??;
        return started.direct();
    }
    // A sandbox is a spare assigned at once: one path for cold starts with and without spares.
    let code = spec
        .code_dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string);
    let (Some(code), Some(code_root)) = (code, spec.code_dir.parent()) else {
        return Err(SandboxError::InvalidSpec(format!(
            "code dir {} has no parent directory",
            spec.code_dir.display()
        )));
    };
    let spare = prepare_spare(
        config,
        SpareSpec {
            id: spec.id.clone(),
            code_root: code_root.to_path_buf(),
            runtime_dir: spec.runtime_dir.clone(),
            ro_paths: spec.ro_paths.clone(),
            mask_paths: spec.mask_paths.clone(),
            memory_mb: spec.memory_mb,
            cpu_weight_mb: spec.cpu_weight_mb,
            pids_max: spec.pids_max,
            tmp_mb: spec.tmp_mb,
            uid: spec.uid,
            gid: spec.gid,
            prestart: None,
            adoptable: false,
        },
    )
    .await?;
    spare
        .assign(Assignment {
            code,
            memory_mb: spec.memory_mb,
            cpu_weight_mb: spec.cpu_weight_mb,
            pids_max: spec.pids_max,
            tmp_mb: spec.tmp_mb,
            start: AssignStart::Exec(crate::Program {
                program: spec.program,
                args: spec.args,
                env: spec.env,
            }),
        })
        .await
        .map_err(|e| e.error)
}

fn join_err(e: tokio::task::JoinError) -> SandboxError {
    SandboxError::Helper {
        exe: PathBuf::new(),
        reason: format!("spawn task failed: {e}"),
    }
}

/// Builds a sandbox that belongs to no function yet: namespaces, root, cgroups, uid, and the
/// prestarted program if the spec has one. Returns once it is ready for [`Spare::assign`].
pub async fn prepare_spare(config: &SandboxConfig, spec: SpareSpec) -> Result<Spare, SandboxError> {
    validate_spare(config, &spec)?;
    let config = config.clone();
    let started = tokio::task::spawn_blocking(move || {
        let prepared = prepare_spare_request(&config, &spec)?;
        start_prepared(&config, prepared, None)
    })
    .await
    .map_err(join_err)??;
    let mut spare = started.sandboxed()?;
    match spare
        .wait_phase(Phase::Prepared {
            handoff_fd: None,
            exit_fd: None,
        })
        .await
    {
        Ok(Phase::Prepared {
            handoff_fd,
            exit_fd,
        }) => {
            spare.handoff_fd = handoff_fd.zip(exit_fd);
            Ok(spare)
        }
        Ok(Phase::Ready) => Ok(spare),
        Err(f) => Err(spare.fail(f).await.error),
    }
}

fn validate_spare(config: &SandboxConfig, spec: &SpareSpec) -> Result<(), SandboxError> {
    if !config.isolation.sandbox {
        return Err(SandboxError::InvalidSpec(
            "spare sandboxes need namespaces, which this host does not allow".into(),
        ));
    }
    validate_id(&spec.id)?;
    match &spec.prestart {
        Some(p) => validate_program(&p.program, &p.args, &p.env),
        None => Ok(()),
    }
}

/// Which report a spare or instance is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prepared {
        handoff_fd: Option<i32>,
        exit_fd: Option<i32>,
    },
    Ready,
}

/// A sandbox built ahead of need ([`prepare_spare`]): it becomes a function's instance with
/// [`Spare::assign`]. Dropping it kills it.
pub struct Spare {
    instance: Instance,
    phases: mpsc::UnboundedReceiver<Result<Phase, HelperFailure>>,
    /// Adoptable spares: ns-init's fds of the handoff pipe's read end and the exit pipe's
    /// write end.
    handoff_fd: Option<(i32, i32)>,
    /// The adopted program's pid inside the sandbox, once one was forked in.
    adopted: Option<i32>,
    exe: PathBuf,
    uid: u32,
}

impl Spare {
    pub fn id(&self) -> &str {
        &self.instance.id
    }

    /// The uid its processes run as; it is the instance's uid after assignment.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// For an adoptable spare: what a process forked in from outside needs to join it — the
    /// host pid of ns-init (whose `/proc/<pid>/ns/*` are the namespaces and whose fds 1 and 2
    /// are the instance's output), ns-init's fd of the handoff pipe's read end (to open as
    /// `/proc/<pid>/fd/<n>` and use as fd 3), and the `cgroup.procs` files to join.
    pub fn adoption(&self) -> Option<Adoption> {
        let (handoff_fd, exit_fd) = self.handoff_fd?;
        let init_pid = lock(&self.instance.shared.init).as_ref()?.pid;
        let cgroup_procs = self
            .instance
            .cgroup_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect();
        Some(Adoption {
            init_pid,
            handoff_fd,
            exit_fd,
            cgroup_procs,
        })
    }

    /// The process forked in (see [`Spare::adoption`]) is `pid` inside the sandbox's pid
    /// namespace; it becomes the program and gets the environment at assignment.
    pub fn adopt(&mut self, pid: i32) {
        self.adopted = Some(pid);
    }

    /// What the prestarted program prints before its assignment arrives.
    pub fn stdout_mut(&mut self) -> Option<&mut ChildStdout> {
        self.instance.stdout.as_mut()
    }

    /// Still usable: its helper (and prestarted program) have not exited.
    pub fn is_alive(&self) -> bool {
        self.instance.exit.borrow().is_none()
    }

    /// Resolves when the spare has died and its processes are gone.
    pub async fn wait(&mut self) -> ExitInfo {
        self.instance.wait().await
    }

    /// SIGKILLs the spare's whole tree. Idempotent and non-blocking.
    pub fn kill(&mut self) {
        self.instance.kill();
    }

    async fn wait_phase(&mut self, want: Phase) -> Result<Phase, HelperFailure> {
        let got = tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match self.phases.recv().await {
                    Some(Ok(p)) if std::mem::discriminant(&p) == std::mem::discriminant(&want) => {
                        return Ok(p)
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(f)) => return Err(f),
                    None => return Err(HelperFailure::Died("stopped without a report".into())),
                }
            }
        })
        .await;
        match got {
            Ok(r) => r,
            Err(_) => Err(HelperFailure::Died(format!(
                "did not get the sandbox ready within {}s",
                SETUP_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Makes the spare an instance of one function: its code at /var/task, its limits, and its
    /// program started (or, for a prestarted runtime, handed its environment).
    pub async fn assign(mut self, a: Assignment) -> Result<Instance, AssignError> {
        let start = match a.start {
            AssignStart::Handoff { env } => validate_env(&env).map(|()| Start::Handoff { env }),
            AssignStart::Exec(p) => {
                validate_program(&p.program, &p.args, &p.env).map(|()| Start::Exec(exec_of(p)))
            }
        };
        let start = start.and_then(|start| match &self.instance.shared.cgroups {
            Some(cg) => cg
                .set_limits(Limits {
                    memory_mb: a.memory_mb,
                    cpu_weight_mb: a.cpu_weight_mb,
                    pids_max: a.pids_max,
                })
                .map(|()| start),
            None => Ok(start),
        });
        let start = match start {
            Ok(s) => s,
            Err(e) => return Err(self.fail(HelperFailure::Error(e)).await),
        };
        let msg = Assign {
            code: a.code,
            tmp_mb: a.tmp_mb,
            start,
            adopted: self.adopted,
        };
        let sent = {
            let lifeline = lock(&self.instance.shared.lifeline);
            match lifeline.as_ref() {
                Some(fd) => {
                    let mut buf = Vec::new();
                    protocol::write_message(&mut buf, &msg).and_then(|()| write_all_fd(fd, &buf))
                }
                None => Err(std::io::Error::other("the spare was killed")),
            }
        };
        if let Err(e) = sent {
            let exe = self.exe.clone();
            return Err(self
                .fail(HelperFailure::Error(SandboxError::Helper {
                    exe,
                    reason: format!("sending the assignment: {e}"),
                }))
                .await);
        }
        match self.wait_phase(Phase::Ready).await {
            Ok(_) => Ok(self.instance),
            Err(f) => Err(self.fail(f).await),
        }
    }

    /// Tears the sandbox down (so a retry with the same id finds no leftovers) and explains
    /// why it failed.
    async fn fail(mut self, failure: HelperFailure) -> AssignError {
        let mut stderr = self.instance.stderr.take();
        self.instance.kill();
        let reaped = tokio::time::timeout(Duration::from_secs(5), self.instance.wait())
            .await
            .is_ok();
        drop(self.instance);
        let error = match failure {
            HelperFailure::Error(e) => e,
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
                SandboxError::Helper {
                    exe: self.exe,
                    reason,
                }
            }
        };
        AssignError { error, reaped }
    }
}

/// A spare that could not be assigned. It has been killed; `reaped` says whether its processes
/// were seen to end (within a few seconds), so that its uid may serve another sandbox.
#[derive(Debug)]
pub struct AssignError {
    pub error: SandboxError,
    pub reaped: bool,
}

impl std::fmt::Display for AssignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AssignError {}

/// See [`Spare::adoption`].
#[derive(Debug, Clone)]
pub struct Adoption {
    pub init_pid: i32,
    pub handoff_fd: i32,
    /// ns-init's fd of the exit pipe's write end: the forked program's parent (which stays
    /// outside the sandbox's pid namespace) writes `"<code> <signal>\n"` there when it ends.
    pub exit_fd: i32,
    pub cgroup_procs: Vec<PathBuf>,
}

/// Writes all of `buf` to a blocking pipe (messages are far smaller than its buffer).
fn write_all_fd(fd: &OwnedFd, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A started process and what still has to happen on the async side.
struct Started {
    exe: PathBuf,
    id: String,
    uid: u32,
    proc: Proc,
    shared: Arc<Shared>,
    sandbox: Option<ServerEnds>,
}

/// The server's ends of a sandbox's pipes: (status read end, spec write end).
type ServerEnds = (OwnedFd, OwnedFd);

/// The process the server started: its own child (the program, or the executed helper), or
/// ns-init forked by the launcher (whose end the server sees through the pidfd in [`Shared`],
/// and whose program's status ns-init reports).
enum Proc {
    Child(Child),
    Launched {
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    },
}

impl Proc {
    fn take_output(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        match self {
            Proc::Child(c) => (c.stdout.take(), c.stderr.take()),
            Proc::Launched { stdout, stderr } => (stdout.take(), stderr.take()),
        }
    }

    /// Waits for the process to end: its exit status, when it was our child.
    async fn wait(self, shared: &Shared) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Proc::Child(mut c) => c.wait().await.map(Some),
            Proc::Launched { .. } => {
                if let Some(fd) = &shared.pidfd {
                    // A pidfd turns readable when its process has exited.
                    // SAFETY: the AsyncFd holds a reference to the pidfd, which keeps it open
                    // and the same for the AsyncFd's whole life.
                    let fd = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            Arc::clone(fd),
                            tokio::io::Interest::READABLE,
                        )
                    }
                    .map_err(std::io::Error::from)?;
                    let _ = fd.readable().await?;
                }
                Ok(None)
            }
        }
    }
}

/// Blocking part of a direct `spawn`.
fn start(config: &SandboxConfig, spec: &InstanceSpec) -> Result<Started, SandboxError> {
    let prepared = prepare_direct(config, spec)?;
    start_prepared(config, prepared, Some(spec))
}

/// ns-init, forked by the launcher: pipes for its spec, status and output.
fn start_launched(
    launcher: &Launcher,
    procs: &[OwnedFd],
) -> Result<(Launched, Proc, ServerEnds), String> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"));
    let (spec_r, spec_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Ready before the launch, so nothing can fail once a sandbox init exists.
    let output = |e: std::io::Error| format!("instance output pipe: {e}");
    let proc = Proc::Launched {
        stdout: Some(
            ChildStdout::from_std(std::process::ChildStdout::from(out_r)).map_err(output)?,
        ),
        stderr: Some(
            ChildStderr::from_std(std::process::ChildStderr::from(err_r)).map_err(output)?,
        ),
    };
    let launched = launcher.launch(&LaunchFds {
        spec: spec_r.as_fd(),
        status: status_w.as_fd(),
        stdout: out_w.as_fd(),
        stderr: err_w.as_fd(),
        procs: procs.iter().map(|f| f.as_fd()).collect(),
    })?;
    Ok((launched, proc, (status_r, spec_w)))
}

/// Cgroups, pipes, fork/exec, and sending the spec. `direct` is the program to run without a
/// sandbox; with one, the helper gets `prepared.request`: forked by the launcher when there is
/// one, else the server binary re-executed.
fn start_prepared(
    config: &SandboxConfig,
    prepared: Prepared,
    direct: Option<&InstanceSpec>,
) -> Result<Started, SandboxError> {
    let procs_raw: Vec<i32> = prepared.procs.iter().map(|f| f.as_raw_fd()).collect();
    let mut pending = PendingCleanup {
        cgroups: prepared.cgroups,
        scratch: prepared.scratch,
    };

    let launched = match (&prepared.request, &config.launcher) {
        (Some(_), Some(launcher)) if launcher.disabled().is_none() => {
            match start_launched(launcher, &prepared.procs) {
                Ok(l) => Some(l),
                Err(reason) => {
                    tracing::warn!(%reason, "the sandbox launcher failed; re-executing the helper instead");
                    None
                }
            }
        }
        _ => None,
    };
    let (pid, pidfd, proc, pipes, exe) = match launched {
        Some((l, proc, pipes)) => (
            l.pid,
            Some(Arc::new(l.pidfd)),
            proc,
            Some(pipes),
            config.helper_exe.clone(),
        ),
        None => {
            let (child, pipes, exe) = spawn_child(config, &prepared.request, direct, &procs_raw)?;
            let pid = child.id().unwrap_or(0) as i32;
            // The child cannot be reaped before the supervisor starts, so the pid is still ours.
            (
                pid,
                sys::pidfd_open(pid).map(Arc::new),
                Proc::Child(child),
                pipes,
                exe,
            )
        }
    };
    drop(prepared.procs);
    // A launched process is ns-init itself; an executed helper reports ns-init once it forks it.
    // A launched one is signalled only through a pidfd: the launcher reaps it on its own time,
    // so its pid may name another process by then.
    let init = match (&proc, &pidfd) {
        (Proc::Launched { .. }, Some(fd)) => Some(Init {
            pid,
            pidfd: Some(Arc::clone(fd)),
        }),
        _ => None,
    };
    let shared = Arc::new(Shared {
        pid,
        pidfd,
        process_group: pipes.is_none(),
        reaped: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        cgroups: pending.cgroups.take(),
        scratch: pending.scratch.take(),
        init: Mutex::new(init),
        lifeline: Mutex::new(None),
    });

    let sandbox = match (pipes, &prepared.request) {
        (Some((status_r, spec_w)), Some(req)) => {
            let mut w = fs::File::from(spec_w);
            if let Err(e) = protocol::write_message(&mut w, req) {
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
    let id = match (&prepared.request, direct) {
        (Some(req), _) => req.id.clone(),
        (None, Some(spec)) => spec.id.clone(),
        (None, None) => String::new(),
    };
    Ok(Started {
        exe,
        id,
        uid: prepared.request.as_ref().map(|r| r.uid).unwrap_or(0),
        proc,
        shared,
        sandbox,
    })
}

/// Starts a child of the server: the re-executed helper (`request`), or the program itself
/// (`direct`). Returns it with, for the helper, the server's ends of its pipes (status read
/// end, spec write end).
fn spawn_child(
    config: &SandboxConfig,
    request: &Option<Request>,
    direct: Option<&InstanceSpec>,
    procs_raw: &[i32],
) -> Result<(Child, Option<ServerEnds>, PathBuf), SandboxError> {
    let (mut cmd, pipes, exe) = match (request, direct) {
        (Some(_), _) => {
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
            let procs = procs_raw.to_vec();
            // SAFETY: the closure runs between fork and exec in a copy of a multi-threaded
            // process, so it only makes async-signal-safe syscalls (write, fcntl) on fds it
            // was handed and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    join_cgroups(&procs)?;
                    sys::keep_across_exec(&keep)
                });
            }
            (
                cmd,
                Some((spec_r, spec_w, status_r, status_w)),
                config.helper_exe.clone(),
            )
        }
        (None, None) => {
            return Err(SandboxError::InvalidSpec(
                "neither a sandbox request nor a program to run".into(),
            ))
        }
        (None, Some(spec)) => {
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .current_dir(&spec.code_dir);
            let ids = config.isolation.setuid.then_some((spec.uid, spec.gid));
            let procs = procs_raw.to_vec();
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
                program: exe,
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
    let pipes = pipes.map(|(spec_r, spec_w, status_r, status_w)| {
        drop(spec_r);
        drop(status_w);
        (status_r, spec_w)
    });
    Ok((child, pipes, exe))
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
    /// The program runs directly: supervise it.
    fn direct(self) -> Result<Instance, SandboxError> {
        let Started {
            id,
            proc: Proc::Child(mut child),
            shared,
            ..
        } = self
        else {
            return Err(SandboxError::InvalidSpec(
                "a program run directly must be the server's child".into(),
            ));
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let pid = shared.pid as u32;
        tokio::spawn(supervise_direct(child, shared.clone(), exit_tx));
        Ok(Instance {
            id,
            pid,
            stdout,
            stderr,
            shared,
            exit: exit_rx,
        })
    }

    /// The helper runs: supervise it and hand back a spare whose phases can be awaited.
    fn sandboxed(self) -> Result<Spare, SandboxError> {
        let Started {
            exe,
            id,
            uid,
            mut proc,
            shared,
            sandbox,
        } = self;
        let Some((status_r, spec_w)) = sandbox else {
            return Err(SandboxError::InvalidSpec(
                "no sandbox helper was started".into(),
            ));
        };
        let (stdout, stderr) = proc.take_output();
        let (exit_tx, exit_rx) = watch::channel(None);
        let pid = shared.pid as u32;
        *lock(&shared.lifeline) = Some(spec_w);
        let status = pipe::Receiver::from_owned_fd(status_r).map_err(|e| SandboxError::Helper {
            exe: exe.clone(),
            reason: format!("status pipe: {e}"),
        })?;
        let (phase_tx, phases) = mpsc::unbounded_channel();
        tokio::spawn(supervise_sandbox(
            proc,
            status,
            shared.clone(),
            phase_tx,
            exit_tx,
        ));
        Ok(Spare {
            handoff_fd: None,
            adopted: None,
            instance: Instance {
                id,
                pid,
                stdout,
                stderr,
                shared,
                exit: exit_rx,
            },
            phases,
            exe,
            uid,
        })
    }
}

enum HelperFailure {
    Error(SandboxError),
    Died(String),
}

async fn supervise_sandbox(
    proc: Proc,
    status: pipe::Receiver,
    shared: Arc<Shared>,
    phases: mpsc::UnboundedSender<Result<Phase, HelperFailure>>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
) {
    let mut ready = false;
    let mut exited: Option<(Option<i32>, Option<i32>)> = None;
    let mut setup_error: Option<String> = None;
    // Reports are short lines, a few per instance: a small buffer (8 KB by default) keeps an
    // idle instance cheap.
    let mut lines = BufReader::with_capacity(512, status).lines();
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
                    pidfd: sys::pidfd_open(init_pid).map(Arc::new),
                });
                if shared.killed.load(Ordering::SeqCst) {
                    shared.kill();
                }
                continue;
            }
            Report::Prepared {
                handoff_fd,
                exit_fd,
            } => {
                let _ = phases.send(Ok(Phase::Prepared {
                    handoff_fd,
                    exit_fd,
                }));
                continue;
            }
            Report::Ready => {
                ready = true;
                let _ = phases.send(Ok(Phase::Ready));
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
        if !ready {
            let _ = phases.send(Err(HelperFailure::Error(failure)));
        }
    }
    let status = proc.wait(&shared).await;
    shared.reaped.store(true, Ordering::SeqCst);
    let (code, signal) = match (exited, &status) {
        (Some(e), _) => e,
        (None, Ok(Some(s))) => (s.code(), s.signal()),
        // Launched ns-init ended without a report: killed by us, or by something else.
        (None, Ok(None)) if shared.killed.load(Ordering::SeqCst) => (None, Some(libc::SIGKILL)),
        (None, Ok(None)) => {
            setup_error.get_or_insert_with(|| {
                "the sandbox's init ended without reporting how (killed from outside, or its \
                 launcher died)"
                    .to_string()
            });
            (None, None)
        }
        (None, Err(_)) => (None, None),
    };
    if !ready {
        let why = match &status {
            Ok(Some(s)) => format!("exited ({}) before starting the program", describe(s)),
            Ok(None) => "exited before starting the program".to_string(),
            Err(e) => format!("could not be waited for: {e}"),
        };
        setup_error.get_or_insert_with(|| why.clone());
        let _ = phases.send(Err(HelperFailure::Died(why)));
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
