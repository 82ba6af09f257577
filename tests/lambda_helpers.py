"""Helpers the execution-level tests share: invoking through boto3 and reading what Lambda returns.

Kept apart from conftest.py so tests can import them by name.
"""

import base64
import json
import os
import re
import time
import urllib.parse
import urllib.request

import requests

from botocore.exceptions import ClientError


class Result:
    """One Invoke call as a user sees it."""

    def __init__(self, resp):
        self.status = resp["StatusCode"]
        self.function_error = resp.get("FunctionError")
        self.raw = resp["Payload"].read()
        self.log = base64.b64decode(resp["LogResult"]).decode("utf-8", "replace") if resp.get("LogResult") else ""
        self.headers = resp["ResponseMetadata"]["HTTPHeaders"]
        self.request_id = self.headers.get("x-amzn-requestid") or resp["ResponseMetadata"].get("RequestId")

    @property
    def payload(self):
        return json.loads(self.raw) if self.raw else None

    def __repr__(self):
        return f"Result(status={self.status}, error={self.function_error}, payload={self.raw[:500]!r}, log=...{self.log[-1500:]!r})"


def invoke(lam, name, event=None, tail=True, **kw):
    args = {"FunctionName": name, "Payload": json.dumps(event if event is not None else {}).encode()}
    if tail:
        args["LogType"] = "Tail"
    args.update(kw)
    return Result(lam.invoke(**args))


def ok(lam, name, event=None, **kw):
    """Invokes and asserts the function succeeded; returns the decoded payload."""
    r = invoke(lam, name, event, **kw)
    assert r.status == 200 and r.function_error is None, r
    return r.payload


def failed(lam, name, event=None, **kw):
    """Invokes and asserts the function failed as Lambda reports it; returns the Result."""
    r = invoke(lam, name, event, **kw)
    assert r.status == 200, r
    assert r.function_error == "Unhandled", r
    assert isinstance(r.payload, dict) and "errorType" in r.payload and "errorMessage" in r.payload, r
    return r


def error_code(exc):
    return exc.response["Error"]["Code"] if isinstance(exc, ClientError) else None


REPORT_RE = re.compile(r"^REPORT RequestId: (\S+)\t(.*)$", re.M)


def report(log):
    """The fields of the REPORT line in a log tail: {'Duration': '1.2 ms', ...}."""
    m = REPORT_RE.search(log)
    assert m, f"no REPORT line in:\n{log}"
    fields = {}
    for part in m.group(2).split("\t"):
        if ":" in part:
            k, v = part.split(":", 1)
            fields[k.strip()] = v.strip()
    fields["RequestId"] = m.group(1)
    return fields


def mb(field):
    m = re.match(r"^(\d+) MB$", field)
    assert m, field
    return int(m.group(1))


def status(server):
    with urllib.request.urlopen(server.endpoint + "/nimbus/v1/status", timeout=10) as r:
        return json.loads(r.read())


def poll_logs(server, name, marker, want=1, timeout=30):
    """Log events of `name` whose message contains `marker`, polled until there are `want` of
    them or `timeout` seconds pass; returns what was found last."""
    url = f"{server.endpoint}/nimbus/v1/functions/{name}/logs?filter={urllib.parse.quote(marker)}"
    deadline = time.time() + timeout
    events = []
    while time.time() < deadline:
        with urllib.request.urlopen(url, timeout=10) as resp:
            events = json.load(resp)["events"]
        if len(events) >= want:
            return events
        time.sleep(0.2)
    return events


def wait_until(predicate, timeout, interval=0.25):
    """Polls predicate until it is truthy or timeout seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = predicate()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


# Endpoints of the servers the tests have running (conftest registers and unregisters them).
SERVERS = set()


def function_cgroups(function_name):
    """The cgroup directories of `function_name`'s instances, as the running servers' status
    lists them."""
    dirs = []
    for endpoint in list(SERVERS):
        try:
            st = requests.get(endpoint + "/nimbus/v1/status", timeout=5).json()
        except (requests.RequestException, ValueError):
            continue
        for inst in st.get("instanceList", []):
            if inst["function"] == function_name:
                dirs.extend(inst.get("cgroups", []))
    return dirs


def cgroup_pids(dirs):
    """The unprivileged members of the cgroups `dirs`: the sandbox's own helpers are root, the
    function's processes are not."""
    out = set()
    for d in dirs:
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        out.update(p for p in pids if (proc_uid(p) or 0) != 0)
    return out


def function_pids(function_name):
    """PIDs of host processes running `function_name`: the unprivileged members of its
    instances' cgroups, plus any process with AWS_LAMBDA_FUNCTION_NAME in its initial
    environment (instances started without a sandbox)."""
    out = cgroup_pids(function_cgroups(function_name))
    marker = f"AWS_LAMBDA_FUNCTION_NAME={function_name}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.add(int(d))
        except OSError:
            pass
    return out


def alive(pids):
    """The pids of `pids` that still exist (and are not zombies)."""
    out = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(p)
        except (OSError, IndexError):
            pass
    return out


def proc_uid(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
