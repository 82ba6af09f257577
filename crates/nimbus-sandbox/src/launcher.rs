//! The launcher: a fork server for sandboxes.
//!
//! Re-executing the server binary for every sandbox costs an exec, the dynamic loader and the
//! relocation of a large position-independent image (a few hundred KB of private memory per
//! process, a few milliseconds per start), and the re-executed helper then forks the
//! namespace's init, so every instance held two such processes. The launcher is that image
//! made once: a single-threaded `nimbus` process started with the server that does nothing but
//! fork. Each child is born as pid 1 of a new pid namespace and carries on as the sandbox's
//! init ([`crate::helper::launched_init`]) with the pipes the server sent, sharing the
//! launcher's already-relocated pages copy-on-write: one small process per instance.
//!
//! ```text
//! server ══ socket ══ launcher ── ns-init ── program     (one ns-init per instance)
//! ```
//! Protocol (a `SOCK_SEQPACKET` pair, so each message is one datagram): the server sends
//! [`REQUEST_MAGIC`], the number of cgroup fds (u32 LE), and the fds
//! `[spec read end, status write end, stdout write end, stderr write end, cgroup.procs...]`;
//! the launcher forks and answers with the child's host pid (i32 LE, or minus an errno), the
//! [`Step`] that failed (u32 LE), and the child's pidfd. The launcher reaps its children; the server watches them through the pidfd and their
//! status pipe. Only the server holds the other end of the socket, so nothing else can ask for
//! a fork. When the server goes away the socket hangs up and the launcher exits, and its
//! children, whose parent-death signal is SIGKILL, end with it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, ForkResult};

use crate::sys;

/// Name of the one environment variable the launcher is started with: its socket's fd.
pub(crate) const LAUNCHER_ENV: &str = "NIMBUS_SANDBOX_LAUNCHER_FD";

/// First bytes of a request.
const REQUEST_MAGIC: &[u8; 4] = b"NLx1";

/// Fds of a request besides the cgroup.procs files.
const FIXED_FDS: usize = 4;

/// At most this many cgroup.procs fds (one per v1 hierarchy; v1 hosts have about a dozen).
const MAX_PROCS_FDS: usize = 28;

/// What the server passes for one helper.
pub(crate) struct LaunchFds<'a> {
    /// Read end of the spec pipe (the helper's lifeline).
    pub spec: BorrowedFd<'a>,
    /// Write end of the status pipe.
    pub status: BorrowedFd<'a>,
    /// The instance's stdout and stderr pipes (write ends).
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// Opened `cgroup.procs` files the helper joins before anything else.
    pub procs: Vec<BorrowedFd<'a>>,
}

/// A sandbox init the launcher forked (host pid and pidfd).
pub(crate) struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// The server's handle on its launcher. Cloning shares it; requests are serialised.
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

struct Inner {
    exe: PathBuf,
    args: Vec<String>,
    conn: Mutex<Option<Conn>>,
    /// Set when the host refuses what the launcher needs (a new pid namespace): every
    /// sandbox then starts through the executed helper, without asking again.
    disabled: std::sync::OnceLock<String>,
}

/// How long the server waits on the launcher for one answer before giving up on it.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which step of a launch failed, as the launcher reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Launched = 0,
    /// The request was not one the launcher understands.
    Request = 1,
    Unshare = 2,
    Fork = 3,
    PidfdOpen = 4,
}

impl Step {
    fn from_u32(n: u32) -> Option<Step> {
        [
            Step::Launched,
            Step::Request,
            Step::Unshare,
            Step::Fork,
            Step::PidfdOpen,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }

    fn describe(self, errno: Errno) -> String {
        match self {
            Step::Launched => "launched".into(),
            Step::Request => format!("the launcher refused the request as malformed ({errno})"),
            Step::Unshare => format!("unshare CLONE_NEWPID (in the launcher): {errno}"),
            Step::Fork => format!("fork (in the launcher): {errno}"),
            Step::PidfdOpen => format!("pidfd_open of the new sandbox init: {errno}"),
        }
    }
}

/// A running launcher process and the server's end of its socket.
struct Conn {
    sock: OwnedFd,
    child: Child,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closing the socket alone ends it; the kill is for a launcher stuck in a fork.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("exe", &self.inner.exe)
            .field("args", &self.inner.args)
            .finish()
    }
}

impl Launcher {
    /// Starts `exe args...` (which must call [`crate::launcher_main`]) as the launcher.
    pub fn start(exe: &Path, args: &[String]) -> std::io::Result<Launcher> {
        let conn = Conn::start(exe, args)?;
        Ok(Launcher {
            inner: Arc::new(Inner {
                exe: exe.to_path_buf(),
                args: args.to_vec(),
                conn: Mutex::new(Some(conn)),
                disabled: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The launcher's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.as_ref().map(|c| c.child.id())
    }

    /// Why the launcher is no longer used, if the host refused it.
    pub fn disabled(&self) -> Option<&str> {
        self.inner.disabled.get().map(String::as_str)
    }

    /// Forks a sandbox init with these fds. A launcher that died or stopped answering is
    /// replaced (which ends the sandboxes it forked, as their parent-death signal is SIGKILL);
    /// an error means the caller should start the sandbox helper itself.
    pub(crate) fn launch(&self, fds: &LaunchFds<'_>) -> Result<Launched, String> {
        if let Some(why) = self.disabled() {
            return Err(format!("the launcher is off: {why}"));
        }
        let mut conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            *conn = Some(
                Conn::start(&self.inner.exe, &self.inner.args)
                    .map_err(|e| format!("restarting the launcher: {e}"))?,
            );
        }
        let Some(c) = conn.as_ref() else {
            return Err("no launcher".into());
        };
        match c.request(fds) {
            Ok(launched) => Ok(launched),
            Err(Failure::Launcher(e)) => {
                // The launcher is gone or confused: replace it next time.
                *conn = None;
                Err(e)
            }
            Err(Failure::Refused(e)) => {
                let _ = self.inner.disabled.set(e.clone());
                Err(format!("{e}; the launcher is off from now on"))
            }
            Err(Failure::Fork(e)) => Err(e),
        }
    }
}

enum Failure {
    /// The conversation with the launcher failed.
    Launcher(String),
    /// The host refuses what the launcher does (a new pid namespace).
    Refused(String),
    /// This one launch failed; the launcher is fine.
    Fork(String),
}

impl Conn {
    fn start(exe: &Path, args: &[String]) -> std::io::Result<Conn> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let keep = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env_clear()
            .env(LAUNCHER_ENV, keep.to_string())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: runs between fork and exec; keep_across_exec only calls fcntl (async-signal-
        // safe) on an fd we own and allocates nothing.
        unsafe {
            cmd.pre_exec(move || sys::keep_across_exec(&[keep]));
        }
        let child = cmd.spawn()?;
        drop(theirs);
        // A launcher that stops answering (stopped, or stuck in a fork) must not hold every
        // later start behind this connection's lock.
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &timeout)?;
        setsockopt(&ours, sockopt::SendTimeout, &timeout)?;
        Ok(Conn { sock: ours, child })
    }

    fn request(&self, fds: &LaunchFds<'_>) -> Result<Launched, Failure> {
        let lost = |what: &str, e: Errno| Failure::Launcher(format!("{what} the launcher: {e}"));
        let mut raw: Vec<RawFd> = vec![
            fds.spec.as_raw_fd(),
            fds.status.as_raw_fd(),
            fds.stdout.as_raw_fd(),
            fds.stderr.as_raw_fd(),
        ];
        raw.extend(fds.procs.iter().map(|f| f.as_raw_fd()));
        if fds.procs.len() > MAX_PROCS_FDS {
            return Err(Failure::Fork(format!(
                "{} cgroup hierarchies, the launcher takes at most {MAX_PROCS_FDS}",
                fds.procs.len()
            )));
        }
        let request = frame(*REQUEST_MAGIC, fds.procs.len() as u32);
        send_datagram(&self.sock, &request, &raw).map_err(|e| lost("writing to", e))?;
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let reply = match receive_datagram(&self.sock, &mut space) {
            Ok(r) => r,
            Err(Errno::EAGAIN) => {
                return Err(Failure::Launcher(format!(
                    "the launcher did not answer within {}s",
                    ANSWER_TIMEOUT.as_secs()
                )))
            }
            Err(e) => return Err(lost("reading from", e)),
        };
        if reply.len != FRAME {
            return Err(Failure::Launcher(format!(
                "the launcher answered {} bytes instead of {FRAME} (it exited?)",
                reply.len
            )));
        }
        let truncated = reply.fds_dropped;
        let (pid, step) = unframe(&reply.bytes);
        let (pid, step) = (i32::from_le_bytes(pid), Step::from_u32(step));
        let pidfd = reply.fds.into_iter().next();
        match (step, pidfd) {
            (Some(Step::Launched), Some(pidfd)) if pid > 0 => Ok(Launched { pid, pidfd }),
            // The child exists but its pidfd did not reach us (this process is out of fds):
            // it ends by itself when the spec pipe closes, as the caller's error path does.
            (Some(Step::Launched), None) if truncated => Err(Failure::Fork(format!(
                "the new sandbox init's pidfd was dropped on the way (out of file descriptors?): pid {pid}"
            ))),
            (Some(Step::Unshare), _) if matches!(Errno::from_raw(-pid), Errno::EPERM | Errno::EINVAL | Errno::ENOSYS) => {
                Err(Failure::Refused(Step::Unshare.describe(Errno::from_raw(-pid))))
            }
            (Some(step), _) if step != Step::Launched && pid < 0 => {
                Err(Failure::Fork(step.describe(Errno::from_raw(-pid))))
            }
            _ => Err(Failure::Launcher(format!(
                "the launcher answered pid {pid}, step {step:?}, {} pidfd",
                if truncated { "a truncated" } else { "no" }
            ))),
        }
    }
}

/// Takes ownership of every fd a message carried (so none leaks, whatever else it holds).
fn received_fds<S>(m: &nix::sys::socket::RecvMsg<'_, '_, S>) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    if let Ok(cmsgs) = m.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; nothing else
                    // knows it.
                    out.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    out
}

/// Every message of the protocol is this many bytes (two little-endian 32-bit fields) plus fds.
const FRAME: usize = 8;

fn frame(first: [u8; 4], second: u32) -> [u8; FRAME] {
    let mut bytes = [0u8; FRAME];
    bytes[..4].copy_from_slice(&first);
    bytes[4..].copy_from_slice(&second.to_le_bytes());
    bytes
}

fn unframe(bytes: &[u8; FRAME]) -> ([u8; 4], u32) {
    let [a, b, c, d, e, f, g, h] = *bytes;
    ([a, b, c, d], u32::from_le_bytes([e, f, g, h]))
}

/// Sends one message and its fds (none: no control message), retrying on EINTR.
fn send_datagram(sock: &OwnedFd, bytes: &[u8; FRAME], fds: &[RawFd]) -> nix::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// One message as received.
struct Received {
    /// Bytes received (0: the other end closed the socket).
    len: usize,
    bytes: [u8; FRAME],
    /// The message was longer than a frame.
    truncated: bool,
    /// Some of its fds did not fit in the control buffer (or in this process's fd table).
    fds_dropped: bool,
    fds: Vec<OwnedFd>,
}

/// Receives one message, taking ownership of its fds (close-on-exec), retrying on EINTR.
fn receive_datagram(sock: &OwnedFd, space: &mut [u8]) -> nix::Result<Received> {
    let mut bytes = [0u8; FRAME];
    let (len, truncated, fds_dropped, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut bytes)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut *space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                break (
                    m.bytes,
                    m.flags.contains(MsgFlags::MSG_TRUNC),
                    m.flags.contains(MsgFlags::MSG_CTRUNC),
                    received_fds(&m),
                )
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    };
    Ok(Received {
        len,
        bytes,
        truncated,
        fds_dropped,
        fds,
    })
}

/// Entry point of the launcher process. See [`crate::launcher_main`].
pub(crate) fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("nimbus sandbox launcher: {msg}");
            125
        }
    };
    std::process::exit(code)
}

fn serve() -> Result<(), String> {
    let var = std::env::var(LAUNCHER_ENV).map_err(|_| {
        format!("{LAUNCHER_ENV} is not set; this entry point is for nimbus-sandbox")
    })?;
    let fd: RawFd = var
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("malformed {LAUNCHER_ENV}={var}"))?;
    if crate::helper::thread_count() > 1 {
        return Err("launcher_main must run before any other thread is started".into());
    }
    sys::set_cloexec(fd, true);
    // SAFETY: the server passed this fd for exactly this purpose; nothing else refers to it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // The OOM killer should never pick the process that starts the sandboxes.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");

    // Children must stay unreaped until `reap` (the pidfd_open after each fork relies on it),
    // so SIGCHLD must not be ignored, whatever this process inherited.
    // SAFETY: installing SIG_DFL runs no code in this process.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sigfd = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let devnull = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("open /dev/null: {e}"))?;
    // Our own pid namespace, to return to after each child is born in a new one.
    let pidns = open(
        "/proc/self/ns/pid",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /proc/self/ns/pid: {e}"))?;
    let own = Own {
        sock: &sock,
        sigfd: &sigfd,
        devnull: &devnull,
        pidns: &pidns,
    };

    loop {
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let sock_events = fds[0].revents().unwrap_or(PollFlags::empty());
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(_)) = sigfd.read_signal() {}
            reap();
        }
        if sock_events.contains(PollFlags::POLLIN) {
            if !serve_one(&own)? {
                return Ok(());
            }
        } else if !sock_events.is_empty() {
            // Hang-up or error without a request: the server is gone.
            return Ok(());
        }
    }
}

/// The launcher's own fds, which its children close first thing.
struct Own<'a> {
    sock: &'a OwnedFd,
    sigfd: &'a SignalFd,
    devnull: &'a OwnedFd,
    pidns: &'a OwnedFd,
}

/// Reaps every child that has ended (they report to the server themselves).
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads one request and forks its sandbox init. `Ok(false)`: the server closed the socket.
fn serve_one(own: &Own<'_>) -> Result<bool, String> {
    let sock = own.sock;
    let mut space = nix::cmsg_space!([RawFd; FIXED_FDS + MAX_PROCS_FDS]);
    let request = receive_datagram(sock, &mut space).map_err(|e| format!("recvmsg: {e}"))?;
    if request.len == 0 {
        return Ok(false);
    }
    let (magic, count) = unframe(&request.bytes);
    let mut fds = request.fds;
    if request.len != FRAME
        || request.truncated
        || request.fds_dropped
        || &magic != REQUEST_MAGIC
        || fds.len() != FIXED_FDS + count as usize
    {
        // Not a request this launcher understands: refuse it, keep serving.
        answer(sock, Err((Step::Request, Errno::EINVAL)));
        return Ok(true);
    }
    let procs = fds.split_off(FIXED_FDS);
    let [spec, status, stdout, stderr]: [OwnedFd; FIXED_FDS] = match fds.try_into() {
        Ok(a) => a,
        Err(_) => {
            answer(sock, Err((Step::Request, Errno::EINVAL)));
            return Ok(true);
        }
    };
    // The next child is born as pid 1 of a new pid namespace...
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        answer(sock, Err((Step::Unshare, e)));
        return Ok(true);
    }
    // SAFETY: the launcher is single-threaded (checked at start), so the child may run any
    // code, as a freshly executed process would.
    let forked = unsafe { fork() };
    if let Ok(ForkResult::Child) = forked {
        let code = init_child(own, spec, status, stdout, stderr, procs);
        std::process::exit(code)
    }
    // ...and the launcher goes back to its own for the children after it. Failing that, it
    // must not fork again: exiting makes the server start a new launcher.
    setns(own.pidns, CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns back: {e}"))?;
    match forked {
        Ok(ForkResult::Parent { child }) => {
            // The child cannot be reaped before this (only `reap` does, on this thread), so
            // the pid still names it.
            match sys::pidfd_open(child.as_raw()) {
                Some(pidfd) => answer(sock, Ok((child.as_raw(), pidfd.as_fd()))),
                None => {
                    let errno = Errno::last();
                    // Not yet reaped (only `reap`, on this thread, reaps): the pid is the child.
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    answer(sock, Err((Step::PidfdOpen, errno)));
                }
            }
        }
        Ok(ForkResult::Child) => {}
        Err(e) => answer(sock, Err((Step::Fork, e))),
    }
    Ok(true)
}

/// Sends the child's pid and pidfd, or the step that failed and why.
fn answer(sock: &OwnedFd, outcome: Result<(i32, BorrowedFd<'_>), (Step, Errno)>) {
    let (pid, step, pidfd) = match outcome {
        Ok((pid, fd)) => (pid, Step::Launched, Some(fd)),
        Err((step, errno)) => (-(errno as i32), step, None),
    };
    let raw: Vec<RawFd> = pidfd.iter().map(|f| f.as_raw_fd()).collect();
    // A failed send means the server is gone; the next poll sees the hang-up.
    let _ = send_datagram(sock, &frame(pid.to_le_bytes(), step as u32), &raw);
}

/// The forked child, pid 1 of its namespace: joins the instance's cgroups, takes the output
/// pipes as stdout and stderr, and becomes the sandbox's init.
fn init_child(
    own: &Own<'_>,
    spec: OwnedFd,
    status: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    procs: Vec<OwnedFd>,
) -> i32 {
    // The launcher's own fds are not the sandbox's business (all are close-on-exec, but ns-init
    // does not exec).
    // SAFETY: closing fds this process owns; their OwnedFds belong to frames the child never
    // returns to (it leaves through process::exit, which runs no destructors).
    unsafe {
        libc::close(own.sock.as_raw_fd());
        libc::close(own.sigfd.as_fd().as_raw_fd());
        libc::close(own.pidns.as_raw_fd());
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // What went wrong before ns-init can say it the usual way: the same report, on the same pipe.
    let failed = |syscall: &str, path: &str, errno: Errno| {
        let report = crate::protocol::Report::SetupFailed {
            syscall: syscall.into(),
            path: path.into(),
            errno: errno as i32,
        };
        let _ = nix::unistd::write(&status, &report.to_line());
        125
    };
    // Join the instance's cgroups first, as the executed helper does before it runs.
    for p in &procs {
        if let Err(e) = nix::unistd::write(p, b"0") {
            return failed("write", "cgroup.procs (joining the instance's cgroups)", e);
        }
    }
    drop(procs);
    if let Err(e) = dup2_stdin(own.devnull)
        .and_then(|()| dup2_stdout(&stdout))
        .and_then(|()| dup2_stderr(&stderr))
    {
        return failed("dup2", "the instance's stdin, stdout and stderr", e);
    }
    // SAFETY: as above.
    unsafe {
        libc::close(own.devnull.as_raw_fd());
    }
    drop(stdout);
    drop(stderr);
    crate::helper::launched_init(spec, status)
}
