"""The `nimbus` CLI against a running server: deploy, invoke, ls, info, publish, alias, logs, rm,
doctor, and its errors."""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import NIMBUS_BIN, unique

PY_APP = """
import os
def handler(event, context):
    print("cli-py-log", event.get("marker") if isinstance(event, dict) else event)
    return {"runtime": "python", "event": event, "greeting": os.environ.get("GREETING"), "version": context.function_version}
"""

NODE_APP = """
exports.handler = async (event, context) => {
  console.log("cli-node-log", JSON.stringify(event));
  return { runtime: "node", event, version: context.functionVersion };
};
"""


@pytest.fixture(scope="module")
def py_fn(server, tmp_path_factory):
    d = tmp_path_factory.mktemp("py-src")
    (d / "app.py").write_text(PY_APP)
    (d / "lib").mkdir()
    (d / "lib" / "data.txt").write_text("data")
    name = unique("cli-py")
    r = server.cli("deploy", str(d), "--name", name, "--runtime", "python3", "--handler", "app.handler",
                   "--memory", "256", "--timeout", "7", "--env", "GREETING=hello")
    assert name in r.stdout and "created" in r.stdout, r.stdout
    return name


def invoke_out(server, *args):
    r = server.cli("invoke", *args)
    return json.loads(r.stdout), r


def test_deploy_python_and_node(server, py_fn, tmp_path):
    out, _ = invoke_out(server, py_fn, "--payload", '{"a": 1}')
    assert out == {"runtime": "python", "event": {"a": 1}, "greeting": "hello", "version": "$LATEST"}
    conf = server.lambda_client().get_function_configuration(FunctionName=py_fn)
    assert conf["MemorySize"] == 256 and conf["Timeout"] == 7 and conf["Runtime"] == "python3"

    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "index.js").write_text(NODE_APP)
    node = unique("cli-node")
    server.cli("deploy", str(node_dir), "--name", node, "--runtime", "nodejs20.x", "--handler", "index.handler")
    out, _ = invoke_out(server, node, "--payload", "[1, 2]")
    assert out == {"runtime": "node", "event": [1, 2], "version": "$LATEST"}

    # Deploying again updates in place.
    (node_dir / "index.js").write_text(NODE_APP.replace('runtime: "node"', 'runtime: "node2"'))
    r = server.cli("deploy", str(node_dir), "--name", node, "--runtime", "nodejs20.x", "--handler", "index.handler")
    assert "updated" in r.stdout
    out, _ = invoke_out(server, node)
    assert out["runtime"] == "node2"


def test_deploy_a_zip_file(server, tmp_path):
    from conftest import make_zip
    z = tmp_path / "fn.zip"
    z.write_bytes(make_zip({"app.py": "def handler(e, c):\n    return 'from-zip'\n"}))
    name = unique("cli-zip")
    server.cli("deploy", str(z), "--name", name, "--runtime", "python3.12", "--handler", "app.handler")
    out, _ = invoke_out(server, name)
    assert out == "from-zip"


def test_invoke_payload_forms(server, py_fn, tmp_path):
    f = tmp_path / "event.json"
    f.write_text(json.dumps({"from": "file"}))
    out, _ = invoke_out(server, py_fn, "--payload", f"@{f}")
    assert out["event"] == {"from": "file"}

    marker = unique("tail")
    r = server.cli("invoke", py_fn, "--payload", json.dumps({"marker": marker}), "--log")
    assert json.loads(r.stdout)["event"] == {"marker": marker}
    assert "START RequestId" in r.stderr and f"cli-py-log {marker}" in r.stderr and "REPORT RequestId" in r.stderr
    assert "START" not in r.stdout

    marker = unique("async")
    r = server.cli("invoke", py_fn, "--payload", json.dumps({"marker": marker}), "--async")
    assert "accepted" in r.stdout
    assert wait_for_log(server, py_fn, marker), "the async invocation never ran"

    r = server.cli("invoke", py_fn, "--payload", "{not json", check=False)
    assert r.returncode != 0
    assert "json" in r.stderr.lower()
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def wait_for_log(server, name, text, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = server.cli("logs", name, "--filter", text)
        if text in r.stdout:
            return r.stdout
        time.sleep(0.3)
    return None


def test_ls_and_info(server, py_fn):
    r = server.cli("ls")
    header = r.stdout.splitlines()[0]
    assert "NAME" in header and "RUNTIME" in header
    row = next(line for line in r.stdout.splitlines() if line.split()[:1] == [py_fn])
    assert "python3" in row and "256" in row

    r = server.cli("ls", "--json")
    fns = json.loads(r.stdout)
    mine = [f for f in fns if f["FunctionName"] == py_fn]
    assert len(mine) == 1 and mine[0]["Handler"] == "app.handler"

    r = server.cli("info", py_fn)
    assert py_fn in r.stdout and "app.handler" in r.stdout and "GREETING=hello" in r.stdout
    assert "$LATEST" in r.stdout
    info = json.loads(server.cli("info", py_fn, "--json").stdout)
    assert info["Function"]["Configuration"]["FunctionName"] == py_fn


def test_publish_and_aliases(server, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "app.py").write_text(PY_APP)
    name = unique("cli-alias")
    server.cli("deploy", str(d), "--name", name, "--runtime", "python3", "--handler", "app.handler")
    r = server.cli("publish", name)
    assert "version 1" in r.stdout
    (d / "app.py").write_text(PY_APP.replace('"python"', '"python-v2"'))
    server.cli("deploy", str(d), "--name", name, "--runtime", "python3", "--handler", "app.handler")
    assert json.loads(server.cli("publish", name, "--json").stdout)["Version"] == "2"

    r = server.cli("alias", "create", name, "live", "--version", "1", "--weight", "2=0.5")
    assert "live" in r.stdout and "2=0.5" in r.stdout
    lam = server.lambda_client()
    a = lam.get_alias(FunctionName=name, Name="live")
    assert a["FunctionVersion"] == "1" and a["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.5}
    seen = {invoke_out(server, name, "--qualifier", "live")[0]["version"] for _ in range(30)}
    assert seen == {"1", "2"}

    server.cli("alias", "update", name, "live", "--version", "2", "--weight", "1=0.0")
    a = lam.get_alias(FunctionName=name, Name="live")
    assert a["FunctionVersion"] == "2"
    out, _ = invoke_out(server, name, "--qualifier", "live")
    assert out["runtime"] == "python-v2" and out["version"] == "2"

    server.cli("alias", "create", name, "old", "--version", "1")
    r = server.cli("alias", "ls", name)
    lines = r.stdout.splitlines()
    assert any(line.split()[:2] == ["live", "2"] for line in lines), r.stdout
    assert any(line.split()[:2] == ["old", "1"] for line in lines), r.stdout
    listed = json.loads(server.cli("alias", "ls", name, "--json").stdout)
    assert sorted(a["Name"] for a in listed) == ["live", "old"]

    server.cli("alias", "rm", name, "old")
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["live"]

    r = server.cli("alias", "create", name, "bad", "--version", "1", "--weight", "nonsense", check=False)
    assert r.returncode != 0 and "weight" in r.stderr.lower()


def test_logs_since_filter_and_follow(server, py_fn):
    marker = unique("logs")
    server.cli("invoke", py_fn, "--payload", json.dumps({"marker": marker}))
    out = wait_for_log(server, py_fn, marker)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and all(marker in line for line in lines)
    assert server.cli("logs", py_fn, "--since", "10m", "--filter", marker).stdout.count(marker) == len(lines)
    r = server.cli("logs", py_fn, "--since", "10m")
    assert marker in r.stdout and "START RequestId" in r.stdout
    # Lines older than the window are left out: wait past a 1s window, then ask for it.
    time.sleep(1.5)
    assert marker not in server.cli("logs", py_fn, "--since", "1s").stdout
    r = server.cli("logs", py_fn, "--since", "yesterday-ish", check=False)
    assert r.returncode != 0 and "--since" in r.stderr

    follow_marker = unique("follow")
    env = dict(os.environ, NIMBUS_ENDPOINT=server.endpoint)
    p = subprocess.Popen([NIMBUS_BIN, "logs", py_fn, "--follow", "--filter", follow_marker],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got = []
    reader = threading.Thread(target=lambda: got.extend(p.stdout), daemon=True)
    try:
        reader.start()
        time.sleep(0.5)
        assert p.poll() is None, p.stderr.read()
        server.cli("invoke", py_fn, "--payload", json.dumps({"marker": follow_marker}))
        deadline = time.time() + 20
        while time.time() < deadline and not any(follow_marker in g for g in got):
            time.sleep(0.1)
        assert any(follow_marker in g for g in got), got
        assert p.poll() is None, "--follow exited instead of waiting for more"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def test_rm(server, tmp_path):
    d = tmp_path / "rm"
    d.mkdir()
    (d / "app.py").write_text(PY_APP)
    name = unique("cli-rm")
    server.cli("deploy", str(d), "--name", name, "--runtime", "python3", "--handler", "app.handler")
    r = server.cli("rm", name)
    assert name in r.stdout
    r = server.cli("info", name, check=False)
    assert r.returncode != 0
    assert name in r.stderr and "not found" in r.stderr.lower()


def test_doctor(server):
    r = server.cli("doctor")
    lines = r.stdout.splitlines()
    assert "FEATURE" in lines[0] and "STATE" in lines[0]
    states = {}
    for line in lines[1:]:
        parts = line.split()
        for i, word in enumerate(parts):
            if word in ("on", "off"):
                states[" ".join(parts[:i])] = word
                break
    for feature in ("python3 runtime", "nodejs runtime", "provided runtime"):
        assert states.get(feature) == "on", (feature, r.stdout)
    assert len(states) >= 6, r.stdout  # the isolation features too
    report = json.loads(server.cli("doctor", "--json").stdout)
    names = {f["name"] for f in report["isolation"]}
    assert all(isinstance(f["enabled"], bool) for f in report["isolation"])
    assert any("namespace" in n.lower() or "pid" in n.lower() for n in names), names
    assert report["python3"]["available"] is True


def test_errors_are_one_sentence(server):
    env = dict(os.environ)
    env.pop("NIMBUS_ENDPOINT", None)
    r = subprocess.run([NIMBUS_BIN, "--endpoint", "http://127.0.0.1:1", "ls"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode != 0
    assert r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "127.0.0.1:1" in err and "reach" in err, err

    missing = unique("nope")
    for args in (["invoke", missing], ["info", missing], ["rm", missing], ["logs", missing]):
        r = server.cli(*args, check=False)
        assert r.returncode != 0, args
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1, (args, err)
        assert missing in err and "not found" in err.lower(), (args, err)


def test_up_reads_a_config_file_and_refuses_bad_ones(new_server, tmp_path):
    # Credentials from the config file turn on SigV4, as the flags do.
    cfg = tmp_path / "nimbus.toml"
    cfg.write_text('access-key = "FILEAK"\nsecret-key = "FILESK"\nidle-timeout = "30s"\nmax-instances = 4\nworkers = 3\nidle-spin = "50us"\ncpu-slots = 6\ncpu-slot-wait = "5ms"\n')
    s = new_server("--config", str(cfg))
    unsigned = s.cli("ls", check=False)
    assert unsigned.returncode != 0 and "MissingAuthenticationTokenException" in unsigned.stderr
    assert s.cli("--access-key", "FILEAK", "--secret-key", "FILESK", "ls").returncode == 0
    # The server says how many workers it runs and how long they spin; a flag wins over the file.
    plain = lambda srv: re.sub(r"\x1b\[[0-9;]*m", "", srv.log())
    assert "workers=3" in plain(s) and "idle_spin=50µs" in plain(s), plain(s)
    assert "cpu_slots=6" in plain(s) and "cpu_slot_wait=5ms" in plain(s), plain(s)
    flagged = new_server("--config", str(cfg), "--workers", "2", "--idle-spin", "0", "--cpu-slots", "0")
    assert "workers=2" in plain(flagged) and "idle_spin=0ns" in plain(flagged), plain(flagged)
    assert "cpu_slots=0" in plain(flagged), plain(flagged)

    # A bad file, an unknown key or a bad duration: one clear sentence naming it, exit non-zero,
    # and no server left listening.
    cases = {
        "unknown key": ('max-instancez = 3\n', "max-instancez"),
        "bad duration": ('idle-timeout = "soon"\n', "idle-timeout"),
        "not toml": ("this is = = not toml\n", "nimbus.toml"),
        "no workers": ("workers = 0\n", "--workers must be at least 1"),
        "bad spin": ('idle-spin = "a while"\n', "--idle-spin"),
        "long spin": ('idle-spin = "2s"\n', "--idle-spin 2s is longer than the most a worker may spin (1ms)"),
        "bad slot wait": ('cpu-slot-wait = "briefly"\n', "--cpu-slot-wait"),
        "long slot wait": ('cpu-slot-wait = "1m"\n', "--cpu-slot-wait 1m is longer than the most the line for CPU slots may stall (10s)"),
        "negative slots": ("cpu-slots = -1\n", "cpu-slots"),
        "too many slots": ("cpu-slots = 1000000000\n", "--cpu-slots 1000000000 is more than 65536"),
    }
    for label, (text, expected) in cases.items():
        cfg.write_text(text)
        r = subprocess.run(
            [NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--config", str(cfg)],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode != 0, label
        assert expected in r.stderr, (label, r.stderr)
        assert "error:" in r.stderr, (label, r.stderr)
    missing = subprocess.run(
        [NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--config", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, timeout=30,
    )
    assert missing.returncode != 0 and "nope.toml" in missing.stderr
