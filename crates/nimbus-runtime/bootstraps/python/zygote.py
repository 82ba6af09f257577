"""Nimbus python zygote: one interpreter with the built-in bootstrap already imported, which forks
new python instances into prepared sandboxes instead of starting an interpreter for each.

Started by the server (as root, in the host's namespaces) with a socket as its stdin. Each request
is one JSON line naming an adoptable spare sandbox:

    {"init_pid": P, "handoff_fd": N, "exit_fd": X, "procs": [cgroup.procs paths], "uid": U,
     "gid": G, "env": [[k, v], ...]}

and is answered with {"pid": host pid} or {"error": "..."}. For each, the zygote opens the spare's
exit pipe through /proc/P/fd and forks a short-lived child that joins the spare's cgroups, opens
its output and handoff pipes through /proc/P/fd, enters its ipc, uts, pid and mount namespaces
(setns on /proc/P/ns/*), forks the runtime (the first process that is inside the pid namespace),
reports its pid and exits. The runtime drops to the instance's uid with no_new_privs, keeps only
fds 0-3, and runs the bootstrap, which waits on fd 3 for its function exactly as a prestarted
interpreter does.

The zygote is a child subreaper, so the orphaned runtime becomes its child (ns-init cannot adopt
a process forked in from outside). It reaps every runtime and writes "<code> <signal>" on that
runtime's exit pipe, which ns-init reports like the exit of a program it started. No process is
kept per instance besides the runtime itself: the zygote holds one fd per live runtime.

Nothing a function sends ever reaches the zygote: it only sees pids, paths and ids.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[0] = HERE
import bootstrap  # noqa: E402  (the point of the zygote: loaded once, shared by every fork)

_libc = ctypes.CDLL(None, use_errno=True)
_NS = (("ipc", 0x08000000), ("uts", 0x04000000), ("pid", 0x20000000), ("mnt", 0x00020000))
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# Runtime pid -> the write end of its sandbox's exit pipe.
_runtimes = {}


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def _grandchild(req, out, err, hand):
    """Inside the sandbox's namespaces: become the instance's runtime. Never returns."""
    code = 1
    try:
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.dup2(hand, 3)
        os.closerange(4, 65536)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("0")
        except OSError:
            pass
        os.setgroups([])
        os.setgid(req["gid"])
        os.setuid(req["uid"])
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        os.chdir("/")
        env = os.environ
        env.clear()
        for k, v in req["env"]:
            env[k] = v
        sys.path[0] = "/var/runtime"
        bootstrap.run()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: B902 - report anything, then die
        try:
            os.write(2, ("[nimbus] python zygote child failed: %r\n" % (e,)).encode())
        except OSError:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


def _child(req, report_w):
    """Still in the host's pid namespace: join the spare, fork the runtime into its pid
    namespace, report its pid and exit (the runtime is reparented to the zygote)."""
    try:
        # Signals go to the zygote's wake-up pipe no more: fds 4+ are closed in the runtime and
        # a number reused there must never receive a stray byte.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = int(req["init_pid"])
        for path in req["procs"]:
            with open(path, "w") as f:
                f.write("0")
        out = os.open("/proc/%d/fd/1" % pid, os.O_WRONLY)
        err = os.open("/proc/%d/fd/2" % pid, os.O_WRONLY)
        hand = os.open("/proc/%d/fd/%d" % (pid, int(req["handoff_fd"])), os.O_RDONLY)
        nsfds = [(name, flag, os.open("/proc/%d/ns/%s" % (pid, name), os.O_RDONLY)) for name, flag in _NS]
        for name, flag, fd in nsfds:
            _check(_libc.setns(fd, flag), "setns(%s)" % name)
            os.close(fd)
        runtime = os.fork()
        if runtime == 0:
            os.close(report_w)
            _grandchild(req, out, err, hand)
        os.write(report_w, b"%d" % runtime)
        os.close(report_w)
        os._exit(0)
    except BaseException as e:  # noqa: B902
        try:
            os.write(report_w, ("E" + str(e)).encode())
        except OSError:
            pass
    os._exit(1)


def _reap():
    """Reaps every child that ended; a runtime's end goes to its exit pipe."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        exit_w = _runtimes.pop(pid, None)
        if exit_w is None:
            continue  # a short-lived forking child
        code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1
        sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else -1
        try:
            os.write(exit_w, b"%d %d\n" % (code, sig))
        except OSError:
            pass
        os.close(exit_w)


def serve(sock_fd):
    # Die with the server. Runtimes whose forking child exited become our children (subreaper);
    # SIGCHLD wakes the loop to reap them.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one fd per live runtime
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    pending = b""
    while True:
        try:
            ready, _, _ = select.select([sock_fd, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            _reap()
        if sock_fd not in ready:
            continue
        chunk = os.read(sock_fd, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                reply = {"pid": _fork(json.loads(line))}
            except Exception as e:  # noqa: B902
                reply = {"error": str(e)}
            data = json.dumps(reply).encode() + b"\n"
            while data:
                data = data[os.write(sock_fd, data):]
        # A runtime may have ended while we forked: reap without waiting for the next request.
        _reap()


def _fork(req):
    pid = int(req["init_pid"])
    exit_w = os.open("/proc/%d/fd/%d" % (pid, int(req["exit_fd"])), os.O_WRONLY | os.O_CLOEXEC)
    try:
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(r)
            os.close(exit_w)
            _child(req, w)
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        msg = b"".join(chunks).decode("utf-8", "replace")
        if not msg:
            raise OSError("the forked child died before reporting")
        if msg.startswith("E"):
            raise OSError(msg[1:])
        runtime = int(msg)
    except BaseException:
        os.close(exit_w)
        raise
    # Recorded before any reaping (that only happens in the serve loop), so a runtime that
    # already died is still reported.
    _runtimes[runtime] = exit_w
    return runtime


if __name__ == "__main__":
    try:
        import json as _  # noqa: F401  (warm, as a prestarted bootstrap does)
        import importlib.machinery as _m  # noqa: F401  (used by the spares' warm-up)
    except Exception:
        pass
    # Everything loaded so far is shared with every fork: keep the collector from walking (and
    # so writing to, and copying) it in each of them.
    import gc

    gc.collect()
    gc.freeze()
    serve(0)
