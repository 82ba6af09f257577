"""Scaling: spares (pre-initialised instances), provisioned concurrency, bursts that queue rather
than fail, fair sharing of a full node, scale to zero, and no leaks after thousands of instance
lifetimes."""

import os
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import create, make_zip, unique
from lambda_helpers import error_code, function_pids, invoke, ok, status, wait_until

APP = """
import os, time

COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "count": COUNT,
        "init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "env": os.environ.get("GREETING"),
        "version": context.function_version,
        "cwd": os.getcwd(),
        "hashseed": os.environ.get("PYTHONHASHSEED"),
        "hash": hash("nimbus"),
        "ppid": os.getppid(),
        "uid": os.getuid(),
    }
"""


def provisioned(lam, name, qualifier):
    return lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)


def ready(lam, name, qualifier, n):
    def check():
        c = provisioned(lam, name, qualifier)
        return c["Status"] == "READY" and c["AllocatedProvisionedConcurrentExecutions"] == n

    return wait_until(check, timeout=30)


def spares_full(server, per_kind=2):
    return all(n >= per_kind for n in status(server)["spares"].values())


# ---------------------------------------------------------------------------------------------
# Spares: a cold start takes a pre-built sandbox with the interpreter already running.


def test_cold_starts_use_prestarted_runtimes_with_the_functions_environment(new_server):
    s = new_server("--spares", "2")
    lam = s.lambda_client()
    assert wait_until(lambda: spares_full(s), timeout=30), status(s)
    assert set(status(s)["spares"]) == {"python", "node", "bare"}
    name = create(lam, {"app.py": APP}, Environment={"Variables": {"GREETING": "hi"}})
    r = invoke(lam, name, {})
    assert "Init Duration" in r.log, r
    p = r.payload
    assert p["env"] == "hi" and p["cwd"] == "/var/task" and p["init"] == "on-demand", p
    # Forked by the python zygote into the sandbox: its parent is outside the pid namespace.
    assert p["ppid"] == 0 and p["uid"] >= 200_000, p
    # The spare it took is replaced.
    assert wait_until(lambda: spares_full(s), timeout=30), status(s)
    # A variable the interpreter reads at start-up makes the instance start fresh, so it applies.
    seeded = create(lam, {"app.py": APP}, Environment={"Variables": {"PYTHONHASHSEED": "0"}})
    a, b = ok(lam, seeded), None
    lam.update_function_configuration(FunctionName=seeded, Environment={"Variables": {"PYTHONHASHSEED": "0", "X": "1"}})
    b = ok(lam, seeded)
    assert a["hashseed"] == "0" and a["hash"] == b["hash"], (a, b)
    # ...started by the sandbox's init instead.
    assert a["ppid"] == 1, a
    # Node spares too.
    node = create(lam, {"index.js": "exports.handler = async () => ({ env: process.env.GREETING, cwd: process.cwd() });"},
                  runtime="nodejs20.x", handler="index.handler", Environment={"Variables": {"GREETING": "yo"}})
    assert ok(lam, node) == {"env": "yo", "cwd": "/var/task"}


# The fds of this process's TCP connections to the Runtime API port (from the kernel's socket
# table and the process's own fds).
CONNECTIONS_PY = """
import os

def handler(event, context):
    port = int(os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)[1])
    mine = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            mine[link[8:-1]] = int(fd)
    fds = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == port and cols[3] == "01" and cols[9] in mine:
                    fds.append(mine[cols[9]])
    return {"fds": fds}
"""

CONNECTIONS_JS = """
const fs = require('fs');
exports.handler = async () => {
  const port = parseInt(process.env.AWS_LAMBDA_RUNTIME_API.split(':').pop(), 10);
  const mine = new Map();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const link = fs.readlinkSync('/proc/self/fd/' + fd);
      if (link.startsWith('socket:[')) mine.set(link.slice(8, -1), parseInt(fd, 10));
    } catch (e) {}
  }
  const fds = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of fs.readFileSync(table, 'utf8').split('\\n').slice(1)) {
      const cols = row.trim().split(/\\s+/);
      if (cols.length > 9 && parseInt(cols[2].split(':').pop(), 16) === port && cols[3] === '01' && mine.has(cols[9])) fds.push(mine.get(cols[9]));
    }
  }
  return { fds };
};
"""


def test_a_spares_runtime_uses_the_connection_it_opened_while_waiting(new_server):
    # A prestarted runtime is given its instance's Runtime API address while it is a spare and
    # connects then, while fd 3 (the pipe its function's environment arrives on) is still open;
    # the cold start's first /next goes out on that connection. A connection made after the
    # hand-off would take fd 3, free by then; a second one would mean the early one was left.
    s = new_server("--spares", "2")
    lam = s.lambda_client()
    assert wait_until(lambda: spares_full(s), timeout=30), status(s)
    py = create(lam, {"app.py": CONNECTIONS_PY})
    js = create(lam, {"index.js": CONNECTIONS_JS}, runtime="nodejs20.x", handler="index.handler")
    for name in (py, js):
        spares_before = status(s)["spares"]
        r = invoke(lam, name, {})
        assert "Init Duration" in r.log, r
        fds = r.payload["fds"]
        assert len(fds) == 1 and fds[0] != 3, (name, fds, spares_before)
        # ...and keeps using it on the warm path.
        assert ok(lam, name) == {"fds": fds}
        assert wait_until(lambda: spares_full(s), timeout=30), status(s)


def test_without_spares_cold_starts_still_work(new_server):
    s = new_server("--spares", "0")
    lam = s.lambda_client()
    assert status(s)["spares"] == {}
    name = create(lam, {"app.py": APP})
    assert ok(lam, name)["count"] == 1


# ---------------------------------------------------------------------------------------------
# Provisioned concurrency.


def test_provisioned_concurrency_lifecycle(new_server):
    s = new_server("--idle-timeout", "1s")
    lam = s.lambda_client()
    name = create(lam, {"app.py": APP})
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1)

    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert error_code(e.value) == "InvalidParameterValueException"
    assert "unpublished" in str(e.value)
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=100000)
    assert error_code(e.value) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="nope", ProvisionedConcurrentExecutions=1)
    assert error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        provisioned(lam, name, "live")
    assert error_code(e.value) == "ProvisionedConcurrencyConfigNotFoundException"

    r = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert r["RequestedProvisionedConcurrentExecutions"] == 2
    assert ready(lam, name, "live", 2), provisioned(lam, name, "live")
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == ["live"]

    # Served warm from the first invocation, by an instance that knows it was provisioned.
    r = invoke(lam, name, {}, Qualifier="live")
    assert "Init Duration" not in r.log, r
    assert r.payload["init"] == "provisioned-concurrency", r.payload

    # Kept past the idle timeout.
    time.sleep(2.5)
    assert status(s)["instances"] == 2, status(s)

    # A provisioned instance that dies is replaced.
    victim = next(i["pid"] for i in status(s)["instanceList"] if i["function"] == name)
    os.kill(victim, 9)
    assert wait_until(lambda: victim not in [i["pid"] for i in status(s)["instanceList"]]
                      and len([i for i in status(s)["instanceList"] if i["function"] == name]) == 2, timeout=20), status(s)
    assert ready(lam, name, "live", 2)

    # The alias moves to a new version: so do its provisioned instances.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "v2"}})
    v2 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=v2)
    assert wait_until(lambda: sorted(i["version"] for i in status(s)["instanceList"] if i["function"] == name) == [v2, v2],
                      timeout=20), status(s)
    # Listed from the moment they start; provisioned (and served warm) once their init is done.
    assert ready(lam, name, "live", 2), provisioned(lam, name, "live")
    r = invoke(lam, name, {}, Qualifier="live")
    assert "Init Duration" not in r.log and r.payload["env"] == "v2", r

    # Deleting the configuration lets the instances go (reaped once idle).
    assert lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e.value) == "ProvisionedConcurrencyConfigNotFoundException"
    assert wait_until(lambda: not [i for i in status(s)["instanceList"] if i["function"] == name], timeout=15), status(s)


def test_provisioned_concurrency_survives_a_restart_and_the_cli_shows_it(new_server, tmp_path):
    data = tmp_path / "keep"
    s = new_server(data_dir=data)
    lam = s.lambda_client()
    name = create(lam, {"app.py": APP})
    lam.publish_version(FunctionName=name)
    out = s.cli("concurrency", name, "--provisioned", "1", "--qualifier", "1", "--reserved", "3").stdout
    assert "Reserved concurrency: 3" in out and "1" in out, out
    assert ready(lam, name, "1", 1)
    assert s.stop() == 0

    s2 = new_server(data_dir=data)
    lam2 = s2.lambda_client()
    assert ready(lam2, name, "1", 1), provisioned(lam2, name, "1")
    r = invoke(lam2, name, {}, Qualifier="1")
    assert "Init Duration" not in r.log, r
    out = s2.cli("concurrency", name).stdout
    assert "READY" in out and "Reserved concurrency: 3" in out, out
    bad = s2.cli("concurrency", name, "--provisioned", "9", "--qualifier", "1", check=False)
    assert bad.returncode != 0 and "reserved concurrency" in bad.stderr, bad.stderr
    s2.cli("concurrency", name, "--no-provisioned", "--qualifier", "1", "--no-reserved")
    assert "none" in s2.cli("concurrency", name).stdout


# ---------------------------------------------------------------------------------------------
# Bursts, queueing, fair sharing, scale to zero.


def burst(endpoint, name, n, event=b'{"sleep": 0.05}'):
    """n invocations released at once; returns the list of (status, body)."""
    results = [None] * n
    gate = threading.Barrier(n)

    def one(i):
        gate.wait()
        try:
            r = requests.post(f"{endpoint}/2015-03-31/functions/{name}/invocations", data=event, timeout=120)
            results[i] = (r.status_code, r.headers.get("X-Amz-Function-Error"), r.text)
        except requests.RequestException as e:
            results[i] = (0, None, str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return results


def test_burst_from_zero_to_200_is_served_then_scales_to_zero(new_server):
    # Fewer instances than requests: the rest wait for one rather than fail.
    s = new_server("--max-instances", "48", "--idle-timeout", "2s")
    lam = s.lambda_client()
    name = create(lam, {"app.py": APP}, Timeout=30)
    assert status(s)["instances"] == 0
    results = burst(s.endpoint, name, 200)
    bad = [r for r in results if r is None or r[0] != 200 or r[1]]
    assert not bad, bad[:5]
    st = status(s)
    assert 1 <= st["instances"] <= 48, st
    assert wait_until(lambda: status(s)["instances"] == 0, timeout=30), status(s)
    # The reaped instances' processes go too (killing them takes a moment).
    assert wait_until(lambda: not function_pids(name), timeout=15), function_pids(name)


def test_a_full_node_throttles_after_the_queue_timeout(new_server):
    s = new_server("--max-instances", "1", "--queue-timeout", "1s")
    lam = s.lambda_client()
    name = create(lam, {"app.py": APP}, Timeout=10)
    holder = threading.Thread(target=lambda: invoke(s.lambda_client(), name, {"sleep": 4}), daemon=True)
    holder.start()
    assert wait_until(lambda: status(s)["instances"] == 1 and status(s)["idleInstances"] == 0, timeout=10)
    other = create(lam, {"app.py": APP})
    t = time.time()
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=other, Payload=b"{}")
    waited = time.time() - t
    assert error_code(e.value) == "TooManyRequestsException", e.value
    assert e.value.response["Error"].get("Message") or e.value.response.get("Reason")
    assert waited >= 0.9, waited
    holder.join(timeout=20)
    assert ok(lam, other)["count"] == 1


def two_functions_on_a_node_of_four(new_server):
    """A node of 4 instances with functions a and b. `start(key, fn, event)` invokes in a thread
    of its own and records in `done[key]` when the invocation ended."""
    s = new_server("--max-instances", "4", "--queue-timeout", "30s")
    lam = s.lambda_client()
    a = create(lam, {"app.py": APP}, Timeout=30)
    b = create(lam, {"app.py": APP}, Timeout=30)
    done = {}

    def start(key, fn, event):
        def run():
            invoke(s.lambda_client(), fn, event, tail=False)
            done[key] = time.time()

        t = threading.Thread(target=run)
        t.start()
        return t

    return s, a, b, done, start


def test_one_hot_function_cannot_starve_another(new_server):
    """Node of 4 instances; function A has 12 slow invocations in flight (8 waiting). B's single
    invocation gets the next free capacity instead of queueing behind all of A's."""
    s, a, b, done, start = two_functions_on_a_node_of_four(new_server)
    hot = [start(f"a{i}", a, {"sleep": 1.0}) for i in range(12)]
    assert wait_until(lambda: status(s)["instances"] == 4, timeout=15)
    time.sleep(0.2)
    cold = start("b", b, {})
    for t in hot + [cold]:
        t.join(timeout=60)
    last_a = max(v for k, v in done.items() if k.startswith("a"))
    assert "b" in done and done["b"] < last_a - 0.5, (done["b"] - min(done.values()), last_a - min(done.values()))


def test_invocations_held_back_for_fair_sharing_do_not_keep_the_other_function_from_starting(new_server):
    """Node of 4: function A runs 3 long invocations and a short one, and 6 more of A's wait. B
    arrives. When the short one ends, the freed capacity must go to B at once: B is starved,
    and A's waiters, held back for it, hold no cold-start permit that B would need. (They once
    did, and B then waited until A drained below its share: after the long ones.)"""
    s, a, b, done, start = two_functions_on_a_node_of_four(new_server)
    running = [start(f"long{i}", a, {"sleep": 4.0}) for i in range(3)]
    running.append(start("short", a, {"sleep": 0.5}))
    assert wait_until(lambda: status(s)["instances"] == 4, timeout=15)
    waiting = [start(f"wait{i}", a, {"sleep": 0.1}) for i in range(6)]
    time.sleep(0.2)
    other = start("b", b, {})
    for t in running + waiting + [other]:
        t.join(timeout=60)
    assert "b" in done, done
    first_long = min(v for k, v in done.items() if k.startswith("long"))
    assert done["b"] < first_long - 1.0, (done["b"] - done["short"], first_long - done["short"])


# ---------------------------------------------------------------------------------------------
# CPU slots: a function that computes runs a few invocations at a time; one that sleeps scales out.

BUSY = """
import time

def handler(event, context):
    end = time.process_time() + event.get("cpu", 0.03)
    spins = 0
    while time.process_time() < end:
        spins += 1
    return {"spins": spins}
"""


def measured(s, name):
    """What the server measured of `name`'s CPU use (None before any measurement)."""
    return next((f for f in status(s)["cpuSlots"]["functions"] if f["function"] == name), None)


def instances_of(s, name):
    return sum(1 for i in status(s)["instanceList"] if i["function"] == name)


def test_cpu_bound_functions_share_cpu_slots_and_sleeping_ones_scale_out(new_server):
    s = new_server("--cpu-slots", "2", "--cpu-slot-wait", "5s")
    lam = s.lambda_client()
    busy = create(lam, {"app.py": BUSY}, Timeout=30)
    sleepy = create(lam, {"app.py": APP}, Timeout=30)
    assert status(s)["cpuSlots"]["slots"] == 2
    # A new function is not held back; a few invocations one after another measure it.
    assert measured(s, busy) is None
    for _ in range(3):
        ok(lam, busy)
        ok(lam, sleepy, {"sleep": 0.2})
    computes, sleeps = measured(s, busy), measured(s, sleepy)
    assert computes["gated"] and computes["cpuPerMille"] >= 500, computes
    assert not sleeps["gated"] and sleeps["sleepMicros"] >= 100_000, sleeps
    assert instances_of(s, busy) == 1

    # Eight at once of the one that computes: two run at a time, so two instances serve them all.
    results = burst(s.endpoint, busy, 8, b'{"cpu": 0.03}')
    assert all(r is not None and r[0] == 200 and not r[1] for r in results), results
    slots = status(s)["cpuSlots"]
    assert slots["waited"] >= 1 and slots["bypassed"] == 0, slots
    assert slots["inUse"] == 0, slots
    assert instances_of(s, busy) == 2, status(s)["instanceList"]

    # Eight at once of the one that sleeps: all run together, each on an instance of its own.
    results = burst(s.endpoint, sleepy, 8, b'{"sleep": 1.5}')
    assert all(r is not None and r[0] == 200 and not r[1] for r in results), results
    assert instances_of(s, sleepy) == 8, status(s)["instanceList"]
    assert status(s)["cpuSlots"]["waited"] == slots["waited"]

    # A configuration change keeps what was measured; new code is measured afresh; deleting
    # the function forgets it.
    lam.update_function_configuration(FunctionName=busy, Timeout=20)
    assert measured(s, busy) is not None
    lam.update_function_code(FunctionName=busy, ZipFile=make_zip({"app.py": APP}))
    assert measured(s, busy) is None
    # (An instance's first invocation is not measured: it is mostly loading.)
    ok(lam, busy, {"sleep": 0.2})
    assert measured(s, busy) is None
    ok(lam, busy, {"sleep": 0.2})
    assert not measured(s, busy)["gated"], measured(s, busy)
    lam.delete_function(FunctionName=sleepy)
    assert measured(s, sleepy) is None


def test_without_cpu_slots_every_invocation_takes_an_instance(new_server):
    s = new_server("--cpu-slots", "0")
    lam = s.lambda_client()
    busy = create(lam, {"app.py": BUSY}, Timeout=30)
    ok(lam, busy)
    ok(lam, busy)
    assert measured(s, busy)["gated"]
    results = burst(s.endpoint, busy, 4, b'{"cpu": 0.2}')
    assert all(r is not None and r[0] == 200 and not r[1] for r in results), results
    assert status(s)["cpuSlots"]["waited"] == 0
    assert instances_of(s, busy) == 4, status(s)["instanceList"]


# ---------------------------------------------------------------------------------------------
# No leaks after thousands of instance lifetimes.


def _counts(s):
    pid = s.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    kids, todo = set(), [pid]
    tree = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/status") as f:
                    ppid = next(int(l.split()[1]) for l in f if l.startswith("PPid:"))
                tree.setdefault(ppid, []).append(int(d))
            except (OSError, StopIteration):
                pass
    while todo:
        p = todo.pop()
        for c in tree.get(p, []):
            kids.add(c)
            todo.append(c)
    cgroups = 0
    for root, _, _ in os.walk("/sys/fs/cgroup"):
        if f"nimbus-{pid}" in root:
            cgroups += 1
    # Sandboxes: one leaf directory each in the pids hierarchy (v1) or the unified one (v2).
    sandboxes = 0
    for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        parent = os.path.join(base, f"nimbus-{pid}")
        if os.path.isdir(parent):
            sandboxes = len([d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))])
            break
    st = status(s)
    accounted = sum(st["spares"].values()) + st["instances"]
    scratch = sum(len(files) + len(dirs) for _, dirs, files in os.walk(os.path.join(s.data_dir, "sandbox")))
    return {"fds": fds, "processes": len(kids), "cgroups": cgroups, "scratch": scratch,
            "sandboxes": sandboxes, "accounted": accounted}


def steady(s):
    """Counts once two readings a second apart agree (instances finish tearing down)."""
    last = None
    for _ in range(30):
        now = _counts(s)
        if now == last:
            return now
        last = now
        time.sleep(1)
    return last


def test_no_leaks_after_thousands_of_instance_lifetimes(new_server):
    s = new_server("--max-instances", "16", "--spares", "2")
    lam = s.lambda_client()
    # An instance whose runtime exits at once: each invocation is a whole lifetime (start,
    # sandbox, crash, teardown) at the lowest cost.
    crash = create(lam, {"bootstrap": ("#!/bin/sh\nexit 3\n", 0o755)}, runtime="provided.al2023", handler="x")
    py = create(lam, {"app.py": APP})
    ok(lam, py)
    assert wait_until(lambda: spares_full(s) and status(s)["instances"] <= 1, timeout=30)
    lam.update_function_configuration(FunctionName=py, Description="reset")
    assert wait_until(lambda: spares_full(s) and status(s)["instances"] == 0, timeout=30), status(s)
    before = steady(s)

    lifetimes = 1000
    errors = []

    def worker(k):
        client = s.lambda_client()
        for i in range(k, lifetimes, 8):
            r = invoke(client, crash, {}, tail=False)
            if r.function_error != "Unhandled" or r.payload.get("errorType") != "Runtime.ExitError":
                errors.append(r)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    # And python instances retired by configuration changes (cold start, warm reuse, retire).
    for i in range(50):
        lam.update_function_configuration(FunctionName=py, Description=f"v{i}")
        assert ok(lam, py)["count"] == 1

    lam.update_function_configuration(FunctionName=py, Description="done")
    assert wait_until(lambda: spares_full(s) and status(s)["instances"] == 0, timeout=60), (
        status(s)["spares"], status(s)["instances"])

    after = steady(s)
    # Every sandbox left is a spare or an instance the server accounts for. Known issue: now and
    # then one sandbox (its helper and namespace init, no program) outlives the instance or
    # spare it was built for; it does not grow with the number of lifetimes, which is what
    # this test guards (a leak per lifetime would show as hundreds).
    assert before["sandboxes"] - before["accounted"] <= 2, before
    assert after["sandboxes"] - after["accounted"] <= 2, (before, after)
    assert after["scratch"] == before["scratch"] == 0, (before, after)
    # Processes and descriptors: what the sandboxes present account for (a few per sandbox), not
    # one more per lifetime (a leak over a thousand lifetimes would show as hundreds).
    extra = max(0, after["sandboxes"] - before["sandboxes"])
    assert after["processes"] <= before["processes"] + 4 * extra, (before, after)
    assert after["fds"] <= before["fds"] + 16 + 10 * extra, (before, after)


def _server_cgroups(pid):
    """Every cgroup directory named after this server (one per hierarchy on v1)."""
    out = []
    for base in ["/sys/fs/cgroup"] + [os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")]:
        d = os.path.join(base, f"nimbus-{pid}")
        if os.path.isdir(d):
            out.append(d)
    return out


def test_a_server_removes_its_cgroups_and_those_of_dead_servers(new_server):
    # A parent cgroup as a server killed with SIGKILL leaves it: named after a pid that no
    # process has (beyond the largest pid this kernel hands out), with an empty instance cgroup.
    with open("/proc/sys/kernel/pid_max") as f:
        dead = int(f.read()) + 1
    hierarchies = [d for d in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup") if os.path.isdir(d)]
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        hierarchies = [d for d in hierarchies if d != "/sys/fs/cgroup"]
    try:
        os.makedirs(os.path.join(hierarchies[0], f"nimbus-{dead}", "leftover-instance"))
    except (OSError, IndexError) as e:
        pytest.skip(f"cannot create a cgroup here: {e}")
    s = new_server()
    assert _server_cgroups(dead) == [], "the stale cgroups of a dead server are removed at start-up"
    lam = s.lambda_client()
    fn = create(lam, {"app.py": APP})
    ok(lam, fn)
    pid = s.proc.pid
    assert _server_cgroups(pid), "instances run in the server's parent cgroup"
    assert s.stop() == 0
    assert _server_cgroups(pid) == [], "a server that stops leaves no cgroup behind"
