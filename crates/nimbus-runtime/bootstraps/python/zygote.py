"""Nimbus python zygote: one interpreter with the built-in bootstrap already imported, which forks
new python instances into prepared sandboxes instead of starting an interpreter for each.

Started by the server (as root, in the host's namespaces) with a socket as its stdin. Each request
is one JSON line naming an adoptable spare sandbox:

    {"init_pid": P, "handoff_fd": N, "procs": [cgroup.procs paths], "uid": U, "gid": G,
     "env": [[k, v], ...]}

and is answered with {"pid": host pid} or {"error": "..."}. For each, the zygote forks a child
that joins the spare's cgroups, opens its output pipes, handoff pipe and exit pipe through
/proc/P/fd, enters its ipc, uts, pid and mount namespaces (setns on /proc/P/ns/*), and forks
again so the grandchild is inside the pid namespace. The grandchild drops to the instance's uid
with no_new_privs, keeps only fds 0-3, and runs the bootstrap, which waits on fd 3 for its
function exactly as a prestarted interpreter does. The child drops to the same uid, keeps only
the exit pipe, waits for the grandchild and writes "<code> <signal>" there when it ends: it is
the runtime's parent, which ns-init (not an ancestor of a process forked in from outside)
cannot be.

Nothing a function sends ever reaches the zygote: it only sees pids, paths and ids.
"""

import ctypes
import json
import os
import resource
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[0] = HERE
import bootstrap  # noqa: E402  (the point of the zygote: loaded once, shared by every fork)

_libc = ctypes.CDLL(None, use_errno=True)
_NS = (("ipc", 0x08000000), ("uts", 0x04000000), ("pid", 0x20000000), ("mnt", 0x00020000))
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1


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
    namespace, then stay as the runtime's parent (ns-init cannot be: a process forked in from
    outside is not its child) — unprivileged, waiting, and reporting how the runtime ended on
    ns-init's exit pipe."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = int(req["init_pid"])
        try:
            # The OOM killer should pick the runtime, never its reporter.
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("-1000")
        except OSError:
            pass
        for path in req["procs"]:
            with open(path, "w") as f:
                f.write("0")
        out = os.open("/proc/%d/fd/1" % pid, os.O_WRONLY)
        err = os.open("/proc/%d/fd/2" % pid, os.O_WRONLY)
        hand = os.open("/proc/%d/fd/%d" % (pid, int(req["handoff_fd"])), os.O_RDONLY)
        exit_w = os.open("/proc/%d/fd/%d" % (pid, int(req["exit_fd"])), os.O_WRONLY)
        nsfds = [(name, flag, os.open("/proc/%d/ns/%s" % (pid, name), os.O_RDONLY)) for name, flag in _NS]
        for name, flag, fd in nsfds:
            _check(_libc.setns(fd, flag), "setns(%s)" % name)
            os.close(fd)
        runtime = os.fork()
        if runtime == 0:
            os.close(report_w)
            os.close(exit_w)
            _grandchild(req, out, err, hand)
        for fd in (out, err, hand):
            os.close(fd)
        os.write(report_w, b"%d" % runtime)
        os.close(report_w)
    except BaseException as e:  # noqa: B902
        try:
            os.write(report_w, ("E" + str(e)).encode())
        except OSError:
            pass
        os._exit(1)
    code = 1
    try:
        # Keep only the exit pipe (fd 0 is the zygote's socket to the server).
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, exit_w)
        os.closerange(exit_w + 1, 65536)
        os.setgroups([])
        os.setgid(req["gid"])
        os.setuid(req["uid"])
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        while True:
            try:
                _, st = os.waitpid(runtime, 0)
                break
            except InterruptedError:
                continue
        exit_code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1
        sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else -1
        try:
            os.write(exit_w, b"%d %d\n" % (exit_code, sig))
        except OSError:
            pass
        code = 0
    finally:
        os._exit(code)


def serve(sock_fd):
    # Die with the server; let the kernel reap the children (each stays as its runtime's parent).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    pending = b""
    while True:
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


def _fork(req):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
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
    return int(msg)


if __name__ == "__main__":
    try:
        import json as _  # noqa: F401  (warm, as a prestarted bootstrap does)
    except Exception:
        pass
    serve(0)
