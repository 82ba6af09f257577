"""The sandbox as a function sees it: no view of the platform's data directory, of other functions'
code or of the server's environment; read-only code; an unprivileged uid; its own PID namespace; a
private writable /tmp.
"""

import os
import uuid

import boto3
import pytest
from conftest import create
from lambda_helpers import ok

PROBE = r"""
import errno, json, os


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as e:
        return {"ok": False, "errno": errno.errorcode.get(e.errno, str(e.errno)), "error": str(e)}


def read(path):
    with open(path, "rb") as f:
        return f.read(64).decode("latin-1")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def handler(event, context):
    out = {}
    for path, text in event.get("write", {}).items():
        out["write:" + path] = attempt(lambda: write(path, text))
    for path in event.get("listdir", []):
        out["listdir:" + path] = attempt(lambda: sorted(os.listdir(path)))
    for path in event.get("read", []):
        out["read:" + path] = attempt(lambda: read(path))
    for path in event.get("exists", []):
        out["exists:" + path] = os.path.exists(path)
    out["uid"] = os.getuid()
    out["euid"] = os.geteuid()
    out["gid"] = os.getgid()
    out["pid"] = os.getpid()
    out["procs"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["env"] = dict(os.environ)
    out["tmp"] = sorted(os.listdir("/tmp"))
    return out
"""


@pytest.fixture(scope="module")
def probe(server):
    return create(server.lambda_client(), {"app.py": PROBE}, Environment={"Variables": {"OWN_VAR": "mine"}})


def test_data_directory_is_invisible(server, lam, probe):
    data_dir = os.path.realpath(server.data_dir)
    files = [os.path.join(data_dir, f) for f in sorted(os.listdir(data_dir))]
    regular = [f for f in files if os.path.isfile(f)]
    assert regular, f"the data directory has files to try: {files}"
    out = ok(lam, probe, {"listdir": [data_dir], "read": regular})
    assert not out[f"listdir:{data_dir}"]["ok"], out[f"listdir:{data_dir}"]
    for f in regular:
        assert not out[f"read:{f}"]["ok"], (f, out[f"read:{f}"])


def test_other_functions_code_is_invisible(server, lam, probe):
    secret = f"secret-{uuid.uuid4().hex}"
    other = create(lam, {"app.py": f"SECRET = {secret!r}\ndef handler(e, c):\n    return SECRET\n"})
    assert ok(lam, other) == secret
    code_root = os.path.join(server.data_dir, "code")
    found = []
    for root, _dirs, names in os.walk(code_root):
        if "app.py" in names:
            path = os.path.join(root, "app.py")
            with open(path) as f:
                if secret in f.read():
                    found.append(path)
    assert found, f"the other function's code is unpacked under {code_root}"
    host_path = os.path.realpath(found[0])
    host_dir = os.path.dirname(host_path)
    out = ok(lam, probe, {"exists": [host_path, host_dir, code_root], "read": [host_path], "listdir": [host_dir]})
    assert out[f"exists:{host_path}"] is False
    assert out[f"exists:{host_dir}"] is False
    assert out[f"exists:{code_root}"] is False
    assert not out[f"read:{host_path}"]["ok"]
    assert not out[f"listdir:{host_dir}"]["ok"]
    # Its own /var/task holds its own code only.
    own = ok(lam, probe, {"listdir": ["/var/task"]})
    assert own["listdir:/var/task"] == {"ok": True, "value": ["app.py"]}


# What Lambda puts in a function's environment (python adds LC_CTYPE itself).
LAMBDA_VARS = {
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_EXECUTION_ENV", "AWS_REGION", "AWS_DEFAULT_REGION",
    "_HANDLER", "_X_AMZN_TRACE_ID", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", "LANG", "PATH",
    "LD_LIBRARY_PATH", "LC_CTYPE", "PYTHONPATH", "NODE_PATH",
}


def test_server_environment_is_invisible(new_server, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("NIMBUS_TEST_SECRET", secret)
    s = new_server()
    monkeypatch.delenv("NIMBUS_TEST_SECRET")
    lam = s.lambda_client()
    name = create(lam, {"app.py": PROBE}, Environment={"Variables": {"OWN_VAR": "mine"}})
    env = ok(lam, name)["env"]
    assert "NIMBUS_TEST_SECRET" not in env
    assert all(secret not in v for v in env.values())
    assert env["OWN_VAR"] == "mine"
    assert set(env) - LAMBDA_VARS == {"OWN_VAR"}, sorted(set(env) - LAMBDA_VARS)
    # Nor does a shell function see it (a different runtime path).
    sh = create(
        lam,
        {"bootstrap": ("#!/bin/sh\nA=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime\n"
                       "while true; do\n  curl -sS -D /tmp/h $A/invocation/next >/dev/null\n"
                       "  R=$(grep -i '^lambda-runtime-aws-request-id:' /tmp/h | tr -d '\\r' | cut -d' ' -f2)\n"
                       "  env | grep -c NIMBUS_TEST_SECRET | curl -sS -o /dev/null -X POST --data-binary @- $A/invocation/$R/response\n"
                       "done\n", 0o755)},
        runtime="provided",
        handler="x",
    )
    assert ok(lam, sh) == 0


def test_code_is_read_only(lam, probe):
    out = ok(lam, probe, {"write": {"/var/task/app.py": "hacked", "/var/task/new.py": "x"}})
    for path in ("/var/task/app.py", "/var/task/new.py"):
        assert not out[f"write:{path}"]["ok"], out[f"write:{path}"]
        assert out[f"write:{path}"]["errno"] in ("EROFS", "EACCES", "EPERM"), out[f"write:{path}"]
    # The code is intact afterwards.
    assert "hacked" not in ok(lam, probe, {"read": ["/var/task/app.py"]})["read:/var/task/app.py"]["value"]


def test_runs_unprivileged_in_its_own_pid_namespace(lam, probe):
    out = ok(lam, probe)
    assert out["uid"] != 0 and out["euid"] != 0 and out["gid"] != 0, out
    # Its own PID namespace: low pids, and only its own few processes in /proc.
    assert out["pid"] < 100, out["pid"]
    assert 1 <= len(out["procs"]) < 10, out["procs"]
    assert out["pid"] in out["procs"]
    assert os.getpid() not in out["procs"] or os.getpid() < 100
    # Root-only host files stay closed.
    shadow = ok(lam, probe, {"read": ["/etc/shadow", "/root/.bashrc"]})
    assert not shadow["read:/etc/shadow"]["ok"]
    assert not shadow["read:/root/.bashrc"]["ok"]


def test_tmp_is_writable_and_private(server, lam, probe):
    marker = f"marker-{uuid.uuid4().hex}"
    out = ok(lam, probe, {"write": {f"/tmp/{marker}": "hello"}, "read": [f"/tmp/{marker}"]})
    assert out[f"write:/tmp/{marker}"]["ok"], out
    assert out[f"read:/tmp/{marker}"] == {"ok": True, "value": "hello"}
    assert not os.path.exists(f"/tmp/{marker}"), "the host's /tmp is not the instance's"
    # Another function does not see it.
    other = create(lam, {"app.py": PROBE})
    assert marker not in ok(lam, other)["tmp"]


FILL_TMP = """
def handler(event, context):
    written = 0
    try:
        with open("/tmp/fill", "wb") as f:
            for _ in range(event["mb"]):
                f.write(bytes(1 << 20))
                f.flush()
                written += 1
    except OSError as e:
        return {"mb": written, "error": str(e)}
    return {"mb": written}
"""


def test_tmp_is_size_limited(lam):
    name = create(lam, {"app.py": FILL_TMP}, MemorySize=1024, EphemeralStorage={"Size": 512}, Timeout=30)
    out = ok(lam, name, {"mb": 700})
    assert "No space left on device" in out.get("error", ""), out
    assert 500 <= out["mb"] <= 512, out


STEAL = r"""
import urllib.request


def handler(event, context):
    try:
        with urllib.request.urlopen(event["url"], timeout=3) as r:
            return {"status": r.status, "body": r.read(4096).decode("utf-8", "replace")}
    except Exception as e:
        return {"error": repr(e)}
"""


def test_management_api_is_out_of_reach_of_functions(server, lam):
    secret = f"pw-{uuid.uuid4().hex}"
    victim = create(lam, {"app.py": "def handler(e, c):\n    return 1\n"},
                    Environment={"Variables": {"DB_PASSWORD": secret}})
    thief = create(lam, {"app.py": STEAL})
    out = ok(lam, thief, {"url": f"{server.endpoint}/2015-03-31/functions/{victim}"})
    assert secret not in out.get("body", ""), "a function read another function's secret through the API"
    assert out.get("status") in (None, 401, 403), out
    # Refused at the connection, not merely unauthorised; the operator's own clients still work.
    assert "error" in out, out
    assert lam.get_function(FunctionName=victim)["Configuration"]["Environment"]["Variables"]["DB_PASSWORD"] == secret


def test_functions_holding_keys_may_call_an_authenticated_api(new_server):
    # With credentials configured, SigV4 guards the API, and a function given keys can use it
    # (the Lambda-to-Lambda pattern); one without keys is refused.
    s = new_server("--access-key", "AK", "--secret-key", "SK")
    lam = boto3.client("lambda", endpoint_url=s.endpoint, region_name="us-east-1",
                       aws_access_key_id="AK", aws_secret_access_key="SK")
    callee = create(lam, {"app.py": "def handler(e, c):\n    return {'called': e}\n"})
    caller_code = (
        "import json, os, boto3\n"
        "def handler(e, c):\n"
        "    lam = boto3.client('lambda', endpoint_url=e['endpoint'], region_name='us-east-1',\n"
        "                       aws_access_key_id=os.environ['AK'], aws_secret_access_key=os.environ['SK'])\n"
        "    r = lam.invoke(FunctionName=e['callee'], Payload=json.dumps({'from': 'caller'}))\n"
        "    return json.load(r['Payload'])\n"
    )
    caller = create(lam, {"app.py": caller_code}, Environment={"Variables": {"AK": "AK", "SK": "SK"}}, Timeout=30)
    out = ok(lam, caller, {"endpoint": s.endpoint, "callee": callee})
    assert out == {"called": {"from": "caller"}}, out
    thief = create(lam, {"app.py": STEAL})
    stolen = ok(lam, thief, {"url": f"{s.endpoint}/2015-03-31/functions/{callee}"})
    assert stolen.get("status") == 403 or "403" in stolen.get("error", ""), stolen
