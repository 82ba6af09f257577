"""Faults harm only their own invocation: a function that hangs, exhausts memory, forks without end,
closes stdout, floods output, crashes, never asks for work or answers too much gets a Lambda-shaped
error, and the server goes on serving every other function (each test ends by invoking hello).
"""

import threading
import time

import pytest
from conftest import create
from lambda_helpers import (
    alive,
    cgroup_pids,
    failed,
    function_cgroups,
    function_pids,
    invoke,
    ok,
    proc_uid,
    status,
    wait_until,
)

HELLO = "def handler(event, context):\n    return {'hello': event.get('who', 'world')}\n"

FAULTS = r"""
import ctypes, os, sys, time, uuid

INSTANCE = uuid.uuid4().hex
COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    op = event.get("op")
    if op == "sleep":
        time.sleep(event["s"])
    elif op == "alloc":
        chunks = []
        for _ in range(event["mb"] // 10):
            chunks.append(b"x" * (10 * 1024 * 1024))
    elif op == "forkbomb":
        top = os.getpid()
        told = False
        while True:
            try:
                child = os.fork()
            except OSError:
                continue
            if child and not told and os.getpid() == top:
                # Proof that it forked, in its log: a bomb held by the memory limit can be
                # ended before anyone outside sees its children.
                told = True
                os.write(1, b"forked %d\n" % child)
    elif op == "close_stdout":
        sys.stdout.flush()
        os.close(1)
        return {"closed": True, "instance": INSTANCE}
    elif op == "flood":
        line = "y" * 1023 + "\n"
        block = line * 1024
        for _ in range(event["mb"]):
            sys.stdout.write(block)
        sys.stdout.flush()
        return {"flooded": event["mb"]}
    elif op == "segv":
        ctypes.string_at(0)
    elif op == "exit":
        print("about to exit", flush=True)
        os._exit(event.get("code", 1))
    elif op == "big":
        return "z" * (event["mb"] * 1024 * 1024)
    print("fine", COUNT)
    return {"instance": INSTANCE, "count": COUNT}
"""


@pytest.fixture(scope="module")
def hello(server):
    return create(server.lambda_client(), {"app.py": HELLO})


def serving(lam, hello):
    """The server still serves other functions."""
    assert ok(lam, hello, {"who": "after"}) == {"hello": "after"}


def test_timeout_kills_only_that_invocation(lam, hello):
    name = create(lam, {"app.py": FAULTS}, Timeout=1)
    assert ok(lam, name)["count"] == 1
    r = failed(lam, name, {"op": "sleep", "s": 10})
    assert r.payload["errorType"] == "Sandbox.Timedout", r
    assert "Task timed out after 1.00 seconds" in r.payload["errorMessage"], r
    assert r.request_id in r.payload["errorMessage"]
    assert "Task timed out after 1.00 seconds" in r.log
    assert "Status: timeout" in r.log
    # The next invocation runs on a fresh instance (its module-level counter starts again).
    assert ok(lam, name)["count"] == 1
    serving(lam, hello)


def test_out_of_memory(lam, hello):
    name = create(lam, {"app.py": FAULTS}, MemorySize=128, Timeout=20)
    r = failed(lam, name, {"op": "alloc", "mb": 400})
    et, msg = r.payload["errorType"], r.payload["errorMessage"]
    assert et == "Runtime.OutOfMemory" or (et == "Runtime.ExitError" and ("memory" in msg or "killed" in msg)), r
    assert "Max Memory Used" in r.log
    assert ok(lam, name)["count"] == 1
    serving(lam, hello)


def test_fork_bomb_is_contained(lam, hello):
    # Memory enough for every process the pids limit allows (about 0.5 MB each), so the pids
    # limit holds the bomb until the timeout: a bomb ended by the memory limit can be gone
    # within one turn of the watcher below, before it sees any of its processes.
    name = create(lam, {"app.py": FAULTS}, Timeout=3, MemorySize=2048)
    seen = set()
    done = threading.Event()

    def watch():
        # The instance's cgroups are found once and then read every 50 ms: a whole
        # `function_pids` (the server's status, then every process's environment) can take
        # longer than the bomb lives on a loaded machine. Without cgroups (no sandbox), only
        # the environment scan finds the processes.
        dirs = []
        while not done.is_set():
            dirs = dirs or function_cgroups(name)
            seen.update(cgroup_pids(dirs) if dirs else function_pids(name))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = failed(lam, name, {"op": "forkbomb"})
    finally:
        done.set()
        watcher.join()
    # Contained by the pids limit, then ended by the timeout.
    assert r.payload["errorType"] == "Sandbox.Timedout", r
    assert "forked " in r.log, r.log
    assert seen, "the watcher saw the instance's processes"
    assert all((proc_uid(p) or 200_000) >= 200_000 for p in seen), "instances never run as root"
    # Every process of the bomb is gone once the instance is.
    assert wait_until(lambda: not alive(seen), timeout=15), sorted(alive(seen))
    serving(lam, hello)
    assert ok(lam, name)["count"] == 1


def test_function_closing_stdout(lam, hello):
    name = create(lam, {"app.py": FAULTS})
    first = ok(lam, name, {"op": "close_stdout"})
    assert first["closed"] is True
    # Whatever the instance does after that, the function keeps answering.
    again = invoke(lam, name)
    if again.function_error:
        again = invoke(lam, name)
    assert again.function_error is None, again
    serving(lam, hello)


def server_rss_mb(server):
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def test_output_flood_is_capped(server, lam, hello):
    name = create(lam, {"app.py": FAULTS}, Timeout=60, MemorySize=256)
    rss_before = server_rss_mb(server)
    r = invoke(lam, name, {"op": "flood", "mb": 100})
    assert r.function_error is None and r.payload == {"flooded": 100}, r
    assert "[nimbus] " in r.log and "bytes of output were dropped" in r.log, r.log[-2000:]
    dropped = int(r.log.split("[nimbus] ")[1].split()[0])
    assert dropped > 90 * 1024 * 1024, dropped
    # The server kept at most the capped part: it did not hold on to 100 MB of output.
    grown = server_rss_mb(server) - rss_before
    print(f"server RSS grew by {grown} MB while the function printed 100 MB")
    assert grown < 64, grown
    # The cap is per invocation: the next one prints normally.
    r2 = invoke(lam, name)
    assert r2.function_error is None and "fine" in r2.log and "dropped" not in r2.log, r2
    serving(lam, hello)


@pytest.mark.parametrize(
    "event,reason",
    [({"op": "segv"}, "signal"), ({"op": "exit", "code": 1}, "exit status 1")],
    ids=["segfault", "exit1"],
)
def test_crash_mid_invocation(lam, hello, event, reason):
    name = create(lam, {"app.py": FAULTS})
    r = failed(lam, name, event)
    assert r.payload["errorType"] == "Runtime.ExitError", r
    assert "Runtime exited" in r.payload["errorMessage"] and reason in r.payload["errorMessage"], r
    assert r.request_id in r.payload["errorMessage"]
    if event["op"] == "exit":
        assert "about to exit" in r.log
    assert ok(lam, name)["count"] == 1
    serving(lam, hello)


def test_bootstrap_that_never_asks_for_work(lam, hello):
    name = create(
        lam,
        {"bootstrap": ("#!/bin/sh\necho 'initialising forever'\nexec sleep 600\n", 0o755)},
        runtime="provided",
        handler="x",
        Timeout=3,
    )
    t0 = time.time()
    r = failed(lam, name)
    elapsed = time.time() - t0
    assert 9 <= elapsed < 30, elapsed
    msg = r.payload["errorMessage"]
    assert "invocation/next" in msg or "init" in msg.lower(), r
    assert r.payload["errorType"].startswith(("Sandbox.", "Runtime.")), r
    serving(lam, hello)


def test_response_too_large(lam, hello):
    name = create(lam, {"app.py": FAULTS}, MemorySize=256)
    r = failed(lam, name, {"op": "big", "mb": 7})
    assert r.payload["errorType"] == "Function.ResponseSizeTooLarge", r
    assert "exceeded maximum allowed payload size" in r.payload["errorMessage"]
    # A response just under the limit is fine.
    small = invoke(lam, name, {"op": "big", "mb": 5}, tail=False)
    assert small.function_error is None and len(small.payload) == 5 * 1024 * 1024
    # The same through the node runtime, and far past the limit.
    node = create(lam, {"index.js": "exports.handler = async (e) => 'z'.repeat(e.mb * 1024 * 1024);"},
                  runtime="nodejs", handler="index.handler", MemorySize=512)
    r = failed(lam, node, {"mb": 20})
    assert r.payload["errorType"] == "Function.ResponseSizeTooLarge", r
    serving(lam, hello)


def test_no_instance_processes_after_shutdown(new_server):
    """Stopping the server leaves no process of any instance behind, even mid-invocation."""
    s = new_server()
    lam = s.lambda_client()
    idle = create(lam, {"app.py": FAULTS})
    busy = create(lam, {"app.py": FAULTS}, Timeout=30)
    ok(lam, idle)
    client = s.lambda_client()
    t = threading.Thread(target=lambda: invoke(client, busy, {"op": "sleep", "s": 20}), daemon=True)
    t.start()
    assert wait_until(lambda: function_pids(busy), timeout=10)
    before = function_pids(busy) | function_pids(idle)
    assert function_pids(idle)
    assert s.stop() == 0
    assert wait_until(lambda: not alive(before), timeout=10), sorted(alive(before))


def test_pool_accounting_after_faults(server):
    """After every fault above, no instance slot is leaked: with nothing running, every instance
    the pool counts is an idle one (a leaked slot would eventually throttle the whole node)."""
    st = wait_until(lambda: (lambda s: s if s["instances"] == s["idleInstances"] else None)(status(server)), timeout=10)
    assert st, status(server)
