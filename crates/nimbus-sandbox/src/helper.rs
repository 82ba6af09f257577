//! The sandbox helper: a fresh, single-threaded process (the server binary re-executed) that
//! builds the sandbox and starts the program.
//!
//! Process tree, from the server down:
//! ```text
//! server ── helper (host pid ns; joined the instance cgroups before exec)
//!             └─ ns-init (pid 1 of the new pid ns; builds the root, pivot_root, reaps zombies)
//!                  └─ program (no_new_privs, unprivileged uid, fds 0-2 only)
//! ```
//! The server kills an instance by SIGKILLing ns-init (its pid comes in the `Started` report)
//! and closing its end of the spec pipe; when ns-init dies the kernel kills every process of
//! the namespace, and the helper reaps ns-init, reports and exits. Because the helper watches
//! the spec pipe, a server crash takes every instance with it; if the helper itself is
//! killed, PDEATHSIG kills ns-init.

use std::ffi::CString;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, execve, fork, mkdir, pipe2, pivot_root, setgid, setgroups, sethostname, setsid, setuid,
    ForkResult, Gid, Pid, Uid,
};

use crate::protocol::{read_message, Assign, Exec, Report, Request, Start, FDS_ENV};
use crate::{mountinfo, sys, TASK_ROOT};

/// A setup step that failed: which syscall, on what, with which errno.
#[derive(Debug)]
struct SetupError {
    syscall: &'static str,
    path: String,
    errno: Errno,
}

type Setup<T> = Result<T, SetupError>;

fn fail(syscall: &'static str, path: impl Display) -> impl FnOnce(Errno) -> SetupError {
    let path = path.to_string();
    move |errno| SetupError {
        syscall,
        path,
        errno,
    }
}

fn io_fail(syscall: &'static str, path: impl Display) -> impl FnOnce(std::io::Error) -> SetupError {
    let path = path.to_string();
    move |e| SetupError {
        syscall,
        path,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// The write end of the status pipe.
struct Status(File);

impl Status {
    fn send(&self, report: &Report) {
        // A failed write means the server is gone; the lifeline takes care of the rest.
        let _ = (&self.0).write_all(&report.to_line());
    }

    fn setup_failed(&self, e: &SetupError) {
        self.send(&Report::SetupFailed {
            syscall: e.syscall.to_string(),
            path: e.path.clone(),
            errno: e.errno as i32,
        });
    }
}

pub(crate) fn main() -> ! {
    let code = match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("nimbus sandbox helper: {msg}");
            125
        }
    };
    std::process::exit(code)
}

fn run() -> Result<i32, String> {
    let fds = std::env::var(FDS_ENV)
        .map_err(|_| format!("{FDS_ENV} is not set; this entry point is for nimbus-sandbox"))?;
    let (spec_fd, status_fd) = fds
        .split_once(',')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
        .ok_or_else(|| format!("malformed {FDS_ENV}={fds}"))?;
    if spec_fd < 3 || status_fd < 3 || spec_fd == status_fd {
        return Err(format!("malformed {FDS_ENV}={fds}"));
    }
    if thread_count() > 1 {
        return Err("helper_main must run before any other thread is started".into());
    }
    sys::set_cloexec(spec_fd, true);
    sys::set_cloexec(status_fd, true);
    // SAFETY: the server passed these two fds for exactly this purpose and nothing else in this
    // fresh process refers to them.
    let (lifeline, status) = unsafe {
        (
            OwnedFd::from_raw_fd(spec_fd),
            OwnedFd::from_raw_fd(status_fd),
        )
    };
    let Some((req, lifeline, status)) = take_spec(lifeline, status, "helper") else {
        return Ok(125);
    };

    // The OOM killer should pick the program, never the processes that report on it; the
    // program resets this to 0 before exec.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");

    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !unshare_or_report(
        &status,
        flags,
        "CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWUTS",
    ) {
        return Ok(0);
    }
    // SAFETY: this process is single-threaded (checked above), so the child may do anything.
    match unsafe { fork() } {
        // ns-init keeps a copy of the spec pipe: the assignment arrives on it.
        Ok(ForkResult::Child) => ns_init(&req, &status, lifeline),
        Ok(ForkResult::Parent { child }) => {
            status.send(&Report::Started {
                init_pid: child.as_raw(),
            });
            Ok(supervise(child, &lifeline, &status))
        }
        Err(errno) => {
            status.setup_failed(&SetupError {
                syscall: "fork",
                path: "namespace init".into(),
                errno,
            });
            Ok(0)
        }
    }
}

/// Reads the instance spec from the spec pipe: the spec and both pipes ready to use, or `None`
/// after saying on stderr (the instance's) why it could not be read.
fn take_spec(lifeline: OwnedFd, status: OwnedFd, who: &str) -> Option<(Request, File, Status)> {
    let mut lifeline = File::from(lifeline);
    match read_message(&mut lifeline) {
        Ok(req) => Some((req, lifeline, Status(File::from(status)))),
        Err(e) => {
            eprintln!("nimbus sandbox {who}: reading the instance spec: {e}");
            None
        }
    }
}

/// unshare(2) of `flags` (spelled `names` in the report); a failure is reported on the status
/// pipe and returns false.
fn unshare_or_report(status: &Status, flags: CloneFlags, names: &str) -> bool {
    match unshare(flags) {
        Ok(()) => true,
        Err(errno) => {
            status.setup_failed(&SetupError {
                syscall: "unshare",
                path: names.into(),
                errno,
            });
            false
        }
    }
}

pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Outer helper: waits for ns-init, or kills it when the server goes away.
fn supervise(init: Pid, lifeline: &File, status: &Status) -> i32 {
    let pidfd = sys::pidfd_open(init.as_raw());
    loop {
        // No POLLIN: the assignment that arrives on this pipe is ns-init's to read; a hang-up
        // (always reported) means the server is gone.
        let mut fds = vec![PollFd::new(lifeline.as_fd(), PollFlags::empty())];
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        // Without a pidfd, poll the child's state every 50 ms.
        let timeout = if pidfd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(50u16)
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
        let server_gone = fds[0].revents().is_some_and(|r| !r.is_empty());
        if server_gone {
            // Killed (or dropped) by the server: take the namespace down and reap ns-init here,
            // so it does not linger as an orphan zombie of the host's init.
            let _ = kill(init, Signal::SIGKILL);
            if let Ok(WaitStatus::Exited(_, 0)) = waitpid(init, None) {
                return 0;
            }
            status.send(&Report::Exited {
                code: None,
                signal: Some(libc::SIGKILL),
            });
            return 0;
        }
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => continue,
            // ns-init exits 0 only after it has sent its final report itself.
            Ok(WaitStatus::Exited(_, 0)) => return 0,
            Ok(WaitStatus::Exited(_, code)) => {
                status.send(&Report::Exited {
                    code: Some(code),
                    signal: None,
                });
                return 0;
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                status.send(&Report::Exited {
                    code: None,
                    signal: Some(sig as i32),
                });
                return 0;
            }
            Ok(_) => continue,
            Err(_) => return 0,
        }
    }
}

/// ns-init forked by the launcher straight into a new pid namespace, with no helper above it:
/// it joins the remaining namespaces itself and carries on as [`ns_init`]. The launcher reaps
/// it; the server learns how it ended from its reports, or from its pidfd when it was killed.
pub(crate) fn launched_init(lifeline: OwnedFd, status: OwnedFd) -> i32 {
    let Some((req, lifeline, status)) = take_spec(lifeline, status, "init") else {
        return 125;
    };
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if !unshare_or_report(&status, flags, "CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS") {
        return 0;
    }
    ns_init(&req, &status, lifeline)
}

/// PID 1 of the new pid namespace. Exits 0 after reporting; its exit ends the namespace.
fn ns_init(req: &Request, status: &Status, mut spec: File) -> ! {
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    umask(Mode::from_bits_truncate(0o022));
    if let Err(e) = ns_init_inner(req, status, &mut spec) {
        status.setup_failed(&e);
    }
    std::process::exit(0)
}

/// A started program, or the report that says why it could not start.
enum Launch {
    Running(Pid),
    Failed(Report),
}

fn ns_init_inner(req: &Request, status: &Status, spec: &mut File) -> Setup<()> {
    setup_root(req)?;
    sethostname(&req.hostname).map_err(fail("sethostname", &req.hostname))?;

    // The prestarted program waits on fd 3 (the read end of this pipe) for its environment.
    let mut prestarted: Option<(Pid, File)> = None;
    // Adoptable: the pipe waits for a program forked in from outside, which opens the read end
    // through /proc/<ns-init>/fd/<n>; ns-init keeps both ends until the assignment.
    let mut adopt_pipe: Option<(OwnedFd, File)> = None;
    // ...and whatever forked it in stays outside as its parent and reports its end here.
    let mut exit_pipe: Option<(File, OwnedFd)> = None;
    if req.adoptable && req.prestart.is_none() {
        let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("pipe2", "handoff"))?;
        adopt_pipe = Some((r, File::from(w)));
        let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("pipe2", "exit"))?;
        exit_pipe = Some((File::from(r), w));
    }
    if let Some(exec) = &req.prestart {
        let (handoff_r, handoff_w) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("pipe2", "handoff"))?;
        match start_program(req, exec, "/", Some(handoff_r))? {
            Launch::Running(pid) => prestarted = Some((pid, File::from(handoff_w))),
            Launch::Failed(report) => {
                status.send(&report);
                return Ok(());
            }
        }
    }
    status.send(&Report::Prepared {
        handoff_fd: adopt_pipe.as_ref().map(|(r, _)| r.as_raw_fd()),
        exit_fd: exit_pipe.as_ref().map(|(_, w)| w.as_raw_fd()),
    });

    // EOF: the server let the spare go (or died); returning ends the namespace.
    let Ok(assign) = read_message::<Assign>(&mut *spec) else {
        return Ok(());
    };
    let mut adopted_exit = None;
    if let (Some(pid), Some((read_end, w))) = (assign.adopted, adopt_pipe.take()) {
        drop(read_end);
        prestarted = Some((Pid::from_raw(pid), w));
        if let Some((r, w)) = exit_pipe.take() {
            // Only the adopted program's parent may hold the write end now: EOF means it died.
            drop(w);
            adopted_exit = Some(r);
        }
    }
    if let (Start::Handoff { env }, Some((_, w))) = (&assign.start, prestarted.as_mut()) {
        // The environment goes before the code is mounted, so the runtime takes it in while
        // the mounts below are made (see `handoff_block`). A program that died meanwhile makes
        // the write fail (EPIPE); its exit is reaped and reported below like any other. A
        // handoff without a prestarted program is refused below.
        let _ = w.write_all(&handoff_block(env));
    }
    // A failure here drops the handoff pipe before its last byte: the runtime exits.
    assign_code(req, &assign)?;
    let program = match assign.start {
        Start::Handoff { .. } => {
            let Some((pid, mut w)) = prestarted.take() else {
                return Err(fail("handoff", "no prestarted program")(Errno::EINVAL));
            };
            // Ready first: the server then sets up the instance's endpoint while the runtime
            // loads its function, instead of after it (on two cores, whichever is woken second
            // can wait for a CPU).
            status.send(&Report::Ready);
            let _ = w.write_all(&[CODE_READY]);
            drop(w);
            return reap_program(status, pid, adopted_exit);
        }
        Start::Exec(exec) => {
            if let Some((pid, w)) = prestarted.take() {
                drop(w);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            match start_program(req, &exec, TASK_ROOT, None)? {
                Launch::Running(pid) => pid,
                Launch::Failed(report) => {
                    status.send(&report);
                    return Ok(());
                }
            }
        }
    };
    status.send(&Report::Ready);
    reap_program(status, program, adopted_exit)
}

/// Init duty once the program runs: reap everything reparented to us until the program exits,
/// and report how it ended (for an adopted program, its parent outside reports that).
fn reap_program(status: &Status, program: Pid, adopted_exit: Option<File>) -> Setup<()> {
    if let Some(exit) = adopted_exit {
        // The program is not our child: its parent outside reports how it ended.
        return watch_adopted(status, exit);
    }
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == program => {
                status.send(&Report::Exited {
                    code: Some(code),
                    signal: None,
                });
                return Ok(());
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == program => {
                status.send(&Report::Exited {
                    code: None,
                    signal: Some(sig as i32),
                });
                return Ok(());
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return Ok(()),
        }
    }
}

/// Reaps orphans until the adopted program's parent reports its end (`"<code> <signal>\n"`,
/// -1 for "none") or goes away (EOF: the end is unknown).
fn watch_adopted(status: &Status, mut exit: File) -> Setup<()> {
    let mut buf = Vec::new();
    loop {
        let mut fds = [PollFd::new(exit.as_fd(), PollFlags::POLLIN)];
        let ready = matches!(poll(&mut fds, PollTimeout::from(200u16)), Ok(n) if n > 0);
        while let Ok(ws) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if matches!(ws, WaitStatus::StillAlive) {
                break;
            }
        }
        if !ready {
            continue;
        }
        let mut chunk = [0u8; 64];
        match exit.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.split_whitespace().map(|p| p.parse::<i32>().ok());
    let code = parts.next().flatten().filter(|c| *c >= 0);
    let signal = parts.next().flatten().filter(|s| *s > 0);
    status.send(&Report::Exited { code, signal });
    Ok(())
}

/// The byte a handoff ends with once `/var/task` is mounted.
const CODE_READY: u8 = 0;

/// What a prestarted runtime reads on fd 3 before its code is mounted: the function's
/// environment as `KEY=value\0` entries, then an empty entry (one more NUL) that ends it. Once
/// the code is at `/var/task`, [`CODE_READY`] follows and the pipe closes. A runtime that reads
/// to the end and skips empty entries needs no more than that; one that applies the environment
/// at the empty entry overlaps its work with the mounts. End of file before `CODE_READY`: the
/// spare was let go or its assignment failed, and the runtime should exit.
fn handoff_block(env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in env {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

/// Forks and execs `exec` as the instance's uid, with `cwd` as its working directory and,
/// when given, `handoff` as its fd 3. Waits only for the exec to succeed or fail.
fn start_program(
    req: &Request,
    exec: &Exec,
    cwd: &'static str,
    handoff: Option<OwnedFd>,
) -> Setup<Launch> {
    let args = ExecArgs::new(exec)?;
    let (err_r, err_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail("pipe2", "exec status"))?;
    // SAFETY: ns-init is single-threaded (it is the only thread of the forked helper).
    let program = match unsafe { fork() }.map_err(fail("fork", exec.program.display()))? {
        ForkResult::Child => {
            drop(err_r);
            exec_program(req, &args, cwd, handoff.as_ref(), err_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    drop(handoff);

    // The pipe closes without data when execve succeeds (CLOEXEC); otherwise it carries
    // [step, errno].
    let mut buf = [0u8; 5];
    let mut got = 0;
    let mut pipe = File::from(err_r);
    while got < buf.len() {
        match pipe.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == buf.len() {
        let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let _ = waitpid(program, None);
        return Ok(Launch::Failed(
            ExecStep::from(buf[0]).report(req, exec, cwd, errno),
        ));
    }
    Ok(Launch::Running(program))
}

/// The fd on which a prestarted program receives its function's environment.
const HANDOFF_FD: i32 = 3;

/// Where the host's code directory is bound until the assignment picks one function's code.
const STAGING: &str = "/.nimbus-code";

/// Shows the assigned code at /var/task (read-only), removes the staging bind, and sizes /tmp.
fn assign_code(req: &Request, a: &Assign) -> Setup<()> {
    let host = req.code_root.join(&a.code);
    let name = format!("{TASK_ROOT} (bind {})", host.display());
    let mut comps = Path::new(&a.code).components();
    if !matches!(
        (comps.next(), comps.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return Err(fail("mount", name)(Errno::EINVAL));
    }
    let src = Path::new(STAGING).join(&a.code);
    mount(
        Some(&src),
        TASK_ROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail("mount", &name))?;
    remount_ro(
        Path::new(TASK_ROOT),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        TASK_ROOT,
    )?;
    umount2(STAGING, MntFlags::MNT_DETACH).map_err(fail("umount2", STAGING))?;
    // The empty mount point goes too, so the function sees a root with nothing of ours left.
    let root_flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, "/", None::<&str>, root_flags, None::<&str>)
        .map_err(fail("mount", "/ (remount read-write)"))?;
    std::fs::remove_dir(STAGING).map_err(io_fail("rmdir", STAGING))?;
    remount_ro(Path::new("/"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "/")?;
    if a.tmp_mb != req.tmp_mb {
        let opts = format!("size={}m,mode=1777", a.tmp_mb.max(1));
        for dir in ["/tmp", "/dev/shm"] {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(fail("mount", format!("{dir} (resize: {opts})")))?;
        }
    }
    Ok(())
}

/// argv and envp, converted before forking so the child only makes syscalls.
struct ExecArgs {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecArgs {
    fn new(req: &Exec) -> Setup<Self> {
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| Errno::EINVAL);
        let program = cstr(req.program.as_os_str().as_bytes())
            .map_err(fail("execve", req.program.display()))?;
        let mut argv = vec![program.clone()];
        for a in &req.args {
            argv.push(cstr(a.as_bytes()).map_err(fail("execve", "argument with NUL"))?);
        }
        let mut envp = Vec::with_capacity(req.env.len());
        for (k, v) in &req.env {
            envp.push(
                cstr(format!("{k}={v}").as_bytes())
                    .map_err(fail("execve", "environment with NUL"))?,
            );
        }
        Ok(ExecArgs {
            program,
            argv,
            envp,
        })
    }
}

/// Which step of `exec_program` failed; sent as the first byte on the exec status pipe.
#[derive(Clone, Copy)]
enum ExecStep {
    Exec = 0,
    NoNewPrivs = 1,
    Setgroups = 2,
    Setgid = 3,
    Setuid = 4,
    Chdir = 5,
}

impl From<u8> for ExecStep {
    fn from(b: u8) -> Self {
        match b {
            1 => ExecStep::NoNewPrivs,
            2 => ExecStep::Setgroups,
            3 => ExecStep::Setgid,
            4 => ExecStep::Setuid,
            5 => ExecStep::Chdir,
            _ => ExecStep::Exec,
        }
    }
}

impl ExecStep {
    fn report(self, req: &Request, exec: &Exec, cwd: &str, errno: i32) -> Report {
        let (syscall, path) = match self {
            ExecStep::Exec => {
                return Report::ExecFailed {
                    program: exec.program.clone(),
                    errno,
                }
            }
            ExecStep::NoNewPrivs => ("prctl", "PR_SET_NO_NEW_PRIVS".to_string()),
            ExecStep::Setgroups => ("setgroups", "[]".to_string()),
            ExecStep::Setgid => ("setgid", req.gid.to_string()),
            ExecStep::Setuid => ("setuid", req.uid.to_string()),
            ExecStep::Chdir => ("chdir", format!("{cwd} (as uid {})", req.uid)),
        };
        Report::SetupFailed {
            syscall: syscall.into(),
            path,
            errno,
        }
    }
}

/// The program's process: drop everything, then execve. Never returns.
fn exec_program(
    req: &Request,
    exec: &ExecArgs,
    cwd: &str,
    handoff: Option<&OwnedFd>,
    err_w: OwnedFd,
) -> ! {
    let die = |step: ExecStep, errno: Errno| -> ! {
        let mut buf = [0u8; 5];
        buf[0] = step as u8;
        buf[1..].copy_from_slice(&(errno as i32).to_le_bytes());
        let _ = nix::unistd::write(&err_w, &buf);
        // SAFETY: _exit is always safe; it skips atexit handlers that belong to the helper.
        unsafe { libc::_exit(127) }
    };
    // Rust's runtime ignores SIGPIPE and the helper may have blocked signals: undo both so the
    // program starts with default dispositions, like any process started by a shell.
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL does not run any code in this process.
            let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = setsid();
    let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    if let Err(e) = prctl::set_no_new_privs() {
        die(ExecStep::NoNewPrivs, e);
    }
    if let Err(e) = setgroups(&[]) {
        die(ExecStep::Setgroups, e);
    }
    if let Err(e) = setgid(Gid::from_raw(req.gid)) {
        die(ExecStep::Setgid, e);
    }
    if let Err(e) = setuid(Uid::from_raw(req.uid)) {
        die(ExecStep::Setuid, e);
    }
    if let Err(e) = chdir(cwd) {
        die(ExecStep::Chdir, e);
    }
    let first_closed = match handoff {
        Some(fd) => {
            // dup2 clears close-on-exec on the copy; fd 3 itself only needs the flag cleared.
            let raw = fd.as_raw_fd();
            if raw == HANDOFF_FD {
                sys::set_cloexec(raw, false);
            } else {
                // SAFETY: dup2 onto fd 3 in the child that is about to exec; whatever fd 3 was
                // (a pipe of the helper's) is not used by this process again.
                if unsafe { libc::dup2(raw, HANDOFF_FD) } < 0 {
                    die(ExecStep::Exec, Errno::last());
                }
            }
            HANDOFF_FD + 1
        }
        None => 3,
    };
    sys::cloexec_from(first_closed);
    let e = match execve(&exec.program, &exec.argv, &exec.envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    die(ExecStep::Exec, e)
}

/// Host directories that are the sandbox's operating system, bound read-only at their own path
/// (or recreated as the same symlink when they are one, as with merged /usr).
const SYSTEM_DIRS: [&str; 8] = [
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32",
];

/// Device nodes the program gets, bound from the host's /dev.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Builds the new root on a tmpfs over `req.root_dir` and pivots into it.
fn setup_root(req: &Request) -> Setup<()> {
    let root = req.root_dir.as_path();
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("mount", "/ (make private)"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0755"),
    )
    .map_err(fail(
        "mount",
        format!("{} (tmpfs for the new root)", root.display()),
    ))?;

    // Host paths bound at their own path; anything under one of them is already visible.
    let mut same_path: Vec<PathBuf> = Vec::new();
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let inside = root.join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(&host).map_err(io_fail("readlink", host.display()))?;
                std::os::unix::fs::symlink(&target, &inside).map_err(io_fail(
                    "symlink",
                    format!("/{name} -> {}", target.display()),
                ))?;
            }
            Ok(m) if m.is_dir() => {
                mkdir(&inside, Mode::from_bits_truncate(0o755))
                    .map_err(fail("mkdir", host.display()))?;
                bind(&host, &inside, &host)?;
                same_path.push(host);
            }
            _ => {}
        }
    }

    // /var/task stays an empty mount point until the assignment; every function's code is
    // staged (read-only) where the assignment can bind it from after pivot_root.
    mountpoint(root, Path::new(TASK_ROOT), true)?;
    let staging = mountpoint(root, Path::new(STAGING), true)?;
    bind(&req.code_root, &staging, Path::new(STAGING))?;
    if let Some(runtime) = &req.runtime_dir {
        let inside = mountpoint(root, Path::new(crate::RUNTIME_ROOT), true)?;
        bind(runtime, &inside, Path::new(crate::RUNTIME_ROOT))?;
    }

    // Writable scratch space, mounted before the read-only paths so that host paths under /tmp
    // (an interpreter unpacked there, say) can be bound read-only inside it.
    let tmp = root.join("tmp");
    mkdir(&tmp, Mode::from_bits_truncate(0o755)).map_err(fail("mkdir", "/tmp"))?;
    let tmp_opts = format!("size={}m,mode=1777", req.tmp_mb.max(1));
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(tmp_opts.as_str()),
    )
    .map_err(fail("mount", format!("/tmp (tmpfs {tmp_opts})")))?;

    let mut ro_paths = req.ro_paths.clone();
    ro_paths.sort();
    for p in ro_paths {
        if !p.is_absolute() || same_path.iter().any(|b| p.starts_with(b)) {
            continue;
        }
        let is_dir = std::fs::metadata(&p)
            .map(|m| m.is_dir())
            .map_err(io_fail("stat", p.display()))?;
        let inside = mountpoint(root, &p, is_dir)?;
        bind(&p, &inside, &p)?;
        same_path.push(p);
    }

    // Everything bound so far, submounts included, becomes read-only, nosuid and nodev; only
    // the /tmp tmpfs itself stays writable.
    let mounts = mountinfo::read_self().map_err(io_fail("read", "/proc/self/mountinfo"))?;
    for m in mounts.iter().filter(|m| {
        m.mount_point.starts_with(root) && m.mount_point != root && m.mount_point != tmp
    }) {
        let mut flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        if m.has_mount_option("noexec") {
            flags |= MsFlags::MS_NOEXEC;
        }
        mount(
            None::<&str>,
            &m.mount_point,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(fail(
            "mount",
            format!("{} (remount read-only)", inside_name(root, &m.mount_point)),
        ))?;
    }

    // Masks go on top of the read-only binds.
    for m in &req.mask_paths {
        for inside in visible_at(root, req, &same_path, m) {
            mask(&inside, &inside_name(root, &inside))?;
        }
    }

    setup_dev(root, &tmp_opts)?;

    let proc_dir = root.join("proc");
    mkdir(&proc_dir, Mode::from_bits_truncate(0o555)).map_err(fail("mkdir", "/proc"))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(fail("mount", "/proc (proc)"))?;

    remount_ro(root, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "/")?;

    chdir(root).map_err(fail("chdir", root.display()))?;
    pivot_root(".", ".").map_err(fail("pivot_root", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("umount2", "old root"))?;
    chdir("/").map_err(fail("chdir", "/"))?;
    Ok(())
}

fn setup_dev(root: &Path, shm_opts: &str) -> Setup<()> {
    let dev = root.join("dev");
    mkdir(&dev, Mode::from_bits_truncate(0o755)).map_err(fail("mkdir", "/dev"))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .map_err(fail("mount", "/dev (tmpfs)"))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let inside = dev.join(name);
        File::create(&inside).map_err(io_fail("create", inside_name(root, &inside)))?;
        mount(
            Some(&host),
            &inside,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail(
            "mount",
            format!("/dev/{name} (bind {})", host.display()),
        ))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, Mode::from_bits_truncate(0o755)).map_err(fail("mkdir", "/dev/shm"))?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(shm_opts),
    )
    .map_err(fail("mount", format!("/dev/shm (tmpfs {shm_opts})")))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(io_fail("symlink", format!("/dev/{link} -> {target}")))?;
    }
    remount_ro(&dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "/dev")
}

fn remount_ro(path: &Path, extra: MsFlags, name: &str) -> Setup<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(fail("mount", format!("{name} (remount read-only)")))
}

/// Recursive bind; made read-only by the pass over mountinfo that follows.
fn bind(src: &Path, dst: &Path, name: &Path) -> Setup<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail(
        "mount",
        format!("{} (bind {})", name.display(), src.display()),
    ))
}

/// Where `host` appears inside the new root: at its own path when under a same-path bind, and
/// under /var/task or /var/runtime when inside the code or runtime dir.
fn visible_at(root: &Path, req: &Request, same_path: &[PathBuf], host: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if same_path.iter().any(|b| host.starts_with(b)) {
        if let Ok(rel) = host.strip_prefix("/") {
            out.push(root.join(rel));
        }
    }
    let mut under = |dir: &Path, at: &str| {
        if let Ok(rel) = host.strip_prefix(dir) {
            out.push(root.join(at.trim_start_matches('/')).join(rel));
        }
    };
    under(&req.code_root, STAGING);
    if let Some(rt) = &req.runtime_dir {
        under(rt, crate::RUNTIME_ROOT);
    }
    out
}

/// Hides whatever is at `inside`: an empty read-only tmpfs over a directory, /dev/null over a
/// file. Paths that do not exist inside the root need no mask.
fn mask(inside: &Path, name: &str) -> Setup<()> {
    match std::fs::symlink_metadata(inside) {
        Ok(m) if m.is_dir() => mount(
            Some("tmpfs"),
            inside,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=0755"),
        )
        .map_err(fail("mount", format!("{name} (mask)"))),
        Ok(m) if m.is_file() => {
            mount(
                Some("/dev/null"),
                inside,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(fail("mount", format!("{name} (mask)")))?;
            remount_ro(inside, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, name)
        }
        _ => Ok(()),
    }
}

/// Creates the mount point for `path` inside `root` (parents 0755, so an unprivileged uid can
/// walk to it even when the host's parents are 0700). Refuses to follow symlinks, which could
/// otherwise lead the mkdir out of the tmpfs and into a host directory.
fn mountpoint(root: &Path, path: &Path, is_dir: bool) -> Setup<PathBuf> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let last = i + 1 == comps.len();
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() && (is_dir || !last) => {}
            Ok(m) if m.is_file() && last && !is_dir => {}
            Ok(_) => return Err(fail("mkdir", path.display())(Errno::ENOTDIR)),
            Err(_) if last && !is_dir => {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&cur)
                    .map_err(io_fail("create", cur.display()))?;
            }
            Err(_) => mkdir(&cur, Mode::from_bits_truncate(0o755))
                .map_err(fail("mkdir", cur.display()))?,
        }
    }
    Ok(cur)
}

/// The path a mount point under `root` has inside the sandbox, for error messages.
fn inside_name(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            id: "x".into(),
            hostname: "h".into(),
            root_dir: "/scratch".into(),
            code_root: "/data/code".into(),
            runtime_dir: Some("/data/runtimes/py".into()),
            ro_paths: vec![],
            mask_paths: vec![],
            tmp_mb: 16,
            uid: 1,
            gid: 1,
            prestart: None,
            adoptable: false,
        }
    }

    #[test]
    fn masks_follow_every_place_a_path_is_visible() {
        let r = req();
        let same = vec![PathBuf::from("/usr"), PathBuf::from("/data")];
        let root = Path::new("/scratch");
        assert_eq!(
            visible_at(root, &r, &same, Path::new("/data/code/abc/secret")),
            vec![
                PathBuf::from("/scratch/data/code/abc/secret"),
                PathBuf::from("/scratch/.nimbus-code/abc/secret")
            ]
        );
        assert_eq!(
            visible_at(root, &r, &same[..1], Path::new("/data")),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            visible_at(root, &r, &same[..1], Path::new("/data/runtimes/py/x")),
            vec![PathBuf::from("/scratch/var/runtime/x")]
        );
    }

    #[test]
    fn inside_names_are_sandbox_paths() {
        assert_eq!(
            inside_name(Path::new("/s"), Path::new("/s/var/task")),
            "/var/task"
        );
        assert_eq!(
            inside_name(Path::new("/s"), Path::new("/elsewhere")),
            "/elsewhere"
        );
    }
}
