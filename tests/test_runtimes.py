"""The built-in runtimes (python3, nodejs) and `provided` bootstraps, as a Lambda user relies on them:
handler styles, the context object, the instance environment, error shapes, init errors, warm reuse,
concurrency and throttling, REPORT lines and scale to zero.

Every test drives the real server through boto3; functions are real sandboxed processes.
"""

import base64
import concurrent.futures
import http.client
import json
import re
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError
from conftest import create, make_zip
from lambda_helpers import error_code, failed, invoke, mb, ok, poll_logs, report, status, wait_until

# --------------------------------------------------------------------------------------------
# Function sources
# --------------------------------------------------------------------------------------------

PY_PROBE = """
import os, time, uuid

INSTANCE = uuid.uuid4().hex
COUNT = 0
print("probe module loaded")


def handler(event, context):
    global COUNT
    COUNT += 1
    op = event.get("op")
    if op == "sleep":
        time.sleep(event["s"])
    elif op == "fail":
        raise ValueError("boom: " + event.get("msg", ""))
    elif op == "alloc":
        blob = b"x" * (event["mb"] * 1024 * 1024)
        assert len(blob) == event["mb"] * 1024 * 1024
    print("probe says hi", COUNT)
    return {
        "instance": INSTANCE,
        "count": COUNT,
        "ctx": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "invoked_function_arn": context.invoked_function_arn,
        },
        "env": dict(os.environ),
        "event": event,
    }
"""

NODE_CJS_ASYNC = """
const crypto = require('crypto');
const INSTANCE = crypto.randomUUID();
let count = 0;

exports.handler = async (event, context) => {
  count += 1;
  if (event.op === 'fail') throw new TypeError('bad: ' + event.msg);
  if (event.op === 'sleep') await new Promise((r) => setTimeout(r, event.s * 1000));
  console.log('node says hi', count);
  return {
    style: 'cjs-async',
    instance: INSTANCE,
    count,
    ctx: {
      aws_request_id: context.awsRequestId,
      function_name: context.functionName,
      function_version: context.functionVersion,
      memory_limit_in_mb: context.memoryLimitInMB,
      remaining: context.getRemainingTimeInMillis(),
      log_group_name: context.logGroupName,
      log_stream_name: context.logStreamName,
      invoked_function_arn: context.invokedFunctionArn,
    },
    env: process.env,
    modules: Object.keys(require.cache),
    event,
  };
};
"""

NODE_CALLBACK = """
exports.handler = function (event, context, callback) {
  if (event.op === 'fail') {
    setTimeout(() => callback(new Error('callback failure: ' + event.msg)), 5);
    return;
  }
  setTimeout(() => callback(null, {
    style: 'callback',
    ctx: {
      aws_request_id: context.awsRequestId,
      function_name: context.functionName,
      remaining: context.getRemainingTimeInMillis(),
    },
    event,
  }), 20);
};
"""

NODE_ESM = """
import { randomUUID } from 'node:crypto';
const INSTANCE = randomUUID();

export const handler = async (event, context) => {
  if (event.op === 'fail') throw new RangeError('esm failure: ' + event.msg);
  return {
    style: 'esm',
    instance: INSTANCE,
    ctx: {
      aws_request_id: context.awsRequestId,
      function_name: context.functionName,
      function_version: context.functionVersion,
      remaining: context.getRemainingTimeInMillis(),
    },
    event,
  };
};
"""

# Lambda's custom-runtime tutorial, in plain sh + curl: echoes the event and its environment.
SH_BOOTSTRAP = r"""#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
H=/tmp/headers
while true; do
  EVENT=$(curl -sS -D "$H" "$API/invocation/next")
  RID=$(grep -i '^lambda-runtime-aws-request-id:' "$H" | tr -d '\r' | cut -d' ' -f2)
  DEADLINE=$(grep -i '^lambda-runtime-deadline-ms:' "$H" | tr -d '\r' | cut -d' ' -f2)
  echo "provided got $RID"
  case "$EVENT" in
    *'"fail"'*)
      printf '{"errorType":"ShellError","errorMessage":"asked to fail"}' |
        curl -sS -o /dev/null -X POST -H 'Lambda-Runtime-Function-Error-Type: ShellError' \
          --data-binary @- "$API/invocation/$RID/error" ;;
    *)
      printf '{"rid":"%s","deadline":%s,"fn":"%s","handler":"%s","root":"%s","mem":"%s","mine":"%s","event":%s}' \
        "$RID" "$DEADLINE" "$AWS_LAMBDA_FUNCTION_NAME" "$_HANDLER" "$LAMBDA_TASK_ROOT" \
        "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" "${MY_VAR:-}" "$EVENT" |
        curl -sS -o /dev/null -X POST --data-binary @- "$API/invocation/$RID/response" ;;
  esac
done
"""

PY_SLEEP = """
import time, uuid
INSTANCE = uuid.uuid4().hex

def handler(event, context):
    time.sleep(event.get("s", 0))
    return {"instance": INSTANCE}
"""


@pytest.fixture(scope="module")
def py_probe(server):
    lam = server.lambda_client()
    return create(
        lam,
        {"app.py": PY_PROBE},
        MemorySize=256,
        Timeout=5,
        Environment={"Variables": {"MY_VAR": "my value", "OTHER": "x=y"}},
    )


@pytest.fixture(scope="module")
def node_async(server):
    lam = server.lambda_client()
    return create(
        lam,
        {"index.js": NODE_CJS_ASYNC},
        runtime="nodejs20.x",
        handler="index.handler",
        MemorySize=192,
        Timeout=4,
        Environment={"Variables": {"MY_VAR": "node value"}},
    )


# --------------------------------------------------------------------------------------------
# Handler styles, context and environment
# --------------------------------------------------------------------------------------------


def check_context(r, name, memory, timeout_s):
    ctx = r.payload["ctx"]
    assert r.request_id, "the Invoke response carries a request id"
    assert ctx["aws_request_id"] == r.request_id
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert str(ctx["memory_limit_in_mb"]) == str(memory)
    assert 0 < ctx["remaining"] <= timeout_s * 1000
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert ctx["log_stream_name"], ctx
    assert ctx["invoked_function_arn"].endswith(f":function:{name}"), ctx


def check_environment(env, name, memory, handler, ctx):
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == str(memory)
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == ctx["log_stream_name"]
    assert env["_HANDLER"] == handler
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert re.fullmatch(r"[\w.\-\[\]:]+:\d+", env["AWS_LAMBDA_RUNTIME_API"]), env["AWS_LAMBDA_RUNTIME_API"]
    assert env["TZ"]
    assert env["LANG"]
    assert "/usr/bin" in env["PATH"].split(":")


def test_python_context_environment_and_logs(lam, py_probe):
    r = invoke(lam, py_probe, {"hello": "world"})
    assert r.status == 200 and r.function_error is None, r
    assert r.payload["event"] == {"hello": "world"}
    check_context(r, py_probe, 256, 5)
    env = r.payload["env"]
    check_environment(env, py_probe, 256, "app.handler", r.payload["ctx"])
    assert env["MY_VAR"] == "my value" and env["OTHER"] == "x=y"
    # The function's own output is in the log tail between START and END, with the request id.
    assert f"START RequestId: {r.request_id} Version: $LATEST" in r.log
    assert "probe says hi" in r.log
    assert f"END RequestId: {r.request_id}" in r.log
    assert r.log.index("START") < r.log.index("probe says hi") < r.log.index("END RequestId")


def test_node_commonjs_async(lam, node_async):
    r = invoke(lam, node_async, {"n": 1})
    assert r.status == 200 and r.function_error is None, r
    assert r.payload["style"] == "cjs-async" and r.payload["event"] == {"n": 1}
    check_context(r, node_async, 192, 4)
    env = r.payload["env"]
    check_environment(env, node_async, 192, "index.handler", r.payload["ctx"])
    assert env["MY_VAR"] == "node value"
    assert "node says hi" in r.log
    # The spare's warm-up loaded a stand-in module; the function's module cache holds only its own.
    assert "/var/task/index.js" in r.payload["modules"], r.payload["modules"]
    assert not [m for m in r.payload["modules"] if "nimbus-warm-up" in m], r.payload["modules"]
    assert "NIMBUS_WARM_UP" not in env


def test_node_callback_style(lam):
    name = create(lam, {"index.js": NODE_CALLBACK}, runtime="nodejs", handler="index.handler")
    r = invoke(lam, name, {"k": [1, 2]})
    assert r.status == 200 and r.function_error is None, r
    assert r.payload["style"] == "callback" and r.payload["event"] == {"k": [1, 2]}
    assert r.payload["ctx"]["aws_request_id"] == r.request_id
    assert r.payload["ctx"]["function_name"] == name
    assert 0 < r.payload["ctx"]["remaining"] <= 3000

    e = failed(lam, name, {"op": "fail", "msg": "cb"})
    assert e.payload["errorType"] == "Error"
    assert e.payload["errorMessage"] == "callback failure: cb"
    assert isinstance(e.payload.get("trace"), list) and e.payload["trace"], e


def test_node_esm_mjs(lam):
    name = create(lam, {"index.mjs": NODE_ESM}, runtime="nodejs22.x", handler="index.handler")
    r = invoke(lam, name, {"esm": True})
    assert r.status == 200 and r.function_error is None, r
    assert r.payload["style"] == "esm" and r.payload["event"] == {"esm": True}
    assert r.payload["ctx"]["aws_request_id"] == r.request_id
    assert r.payload["ctx"]["function_version"] == "$LATEST"

    e = failed(lam, name, {"op": "fail", "msg": "m"})
    assert e.payload["errorType"] == "RangeError"
    assert e.payload["errorMessage"] == "esm failure: m"


def test_provided_shell_bootstrap(lam):
    name = create(
        lam,
        {"bootstrap": (SH_BOOTSTRAP, 0o755)},
        runtime="provided.al2023",
        handler="whatever.handler",
        MemorySize=320,
        Environment={"Variables": {"MY_VAR": "sh value"}},
    )
    before = int(time.time() * 1000)
    r = invoke(lam, name, {"x": "y"})
    assert r.status == 200 and r.function_error is None, r
    p = r.payload
    assert p["rid"] == r.request_id
    assert p["event"] == {"x": "y"}
    assert p["fn"] == name and p["handler"] == "whatever.handler" and p["root"] == "/var/task"
    assert p["mem"] == "320" and p["mine"] == "sh value"
    # The deadline header is epoch milliseconds about Timeout (3 s) ahead.
    assert before < p["deadline"] <= int(time.time() * 1000) + 3000
    assert f"provided got {r.request_id}" in r.log

    e = failed(lam, name, {"fail": True})
    assert e.payload == {"errorType": "ShellError", "errorMessage": "asked to fail"}
    # The runtime survives a reported error and serves again.
    assert ok(lam, name, {"again": 1})["event"] == {"again": 1}


# --------------------------------------------------------------------------------------------
# Handler errors and init errors
# --------------------------------------------------------------------------------------------


def test_python_handler_error_shape(lam, py_probe):
    r = failed(lam, py_probe, {"op": "fail", "msg": "xyz"})
    p = r.payload
    assert p["errorType"] == "ValueError"
    assert p["errorMessage"] == "boom: xyz"
    assert isinstance(p["stackTrace"], list) and p["stackTrace"]
    assert any("app.py" in frame and "handler" in frame for frame in p["stackTrace"]), p["stackTrace"]
    # Lambda's python runtime logs the error as one "[ERROR]" record.
    assert "[ERROR] ValueError: boom: xyz" in r.log
    rep = report(r.log)
    assert rep["RequestId"] == r.request_id
    # A handler error does not cost the instance: the next invoke is warm.
    assert ok(lam, py_probe)["count"] >= 2


def test_node_handler_error_shape(lam, node_async):
    r = failed(lam, node_async, {"op": "fail", "msg": "q"})
    p = r.payload
    assert p["errorType"] == "TypeError"
    assert p["errorMessage"] == "bad: q"
    assert isinstance(p["trace"], list) and p["trace"][0].startswith("TypeError: bad: q")
    assert any("index.js" in line for line in p["trace"]), p["trace"]
    assert "Invoke Error" in r.log


NODE_LATE_THROW = """
let count = 0;
exports.handler = async (event) => {
  count += 1;
  if (event.late) setTimeout(() => { throw new Error('thrown after the result'); }, 50);
  return { count };
};
"""


def test_node_throw_after_the_result_ends_the_instance_not_the_next_invocation(lam, server):
    """An exception that escapes after the handler's result was posted belongs to no invocation:
    the instance ends (as on Lambda) instead of failing whichever invocation comes next."""
    name = create(lam, {"index.js": NODE_LATE_THROW}, runtime="nodejs20.x", handler="index.handler")
    assert ok(lam, name, {"late": True}) == {"count": 1}
    pid = next(i["pid"] for i in status(server)["instanceList"] if i["function"] == name)
    gone = wait_until(lambda: pid not in [i["pid"] for i in status(server)["instanceList"]], timeout=10, interval=0.05)
    assert gone, status(server)
    r = invoke(lam, name, {})
    assert r.function_error is None and r.payload == {"count": 1}, r
    assert "Init Duration" in r.log, r
    events = poll_logs(server, name, "thrown after the result", timeout=10)
    assert events and "Uncaught Exception" in events[0]["message"], events


@pytest.mark.parametrize(
    "runtime,handler,files,error_type,message",
    [
        ("python3.12", "nosuch.handler", {"app.py": "def handler(e, c): return 1\n"},
         "Runtime.ImportModuleError", "Unable to import module 'nosuch'"),
        ("python3.12", "app.missing", {"app.py": "def handler(e, c): return 1\n"},
         "Runtime.HandlerNotFound", "missing"),
        ("python3.12", "app.handler", {"app.py": "def handler(e, c):\n    return (1\n"},
         "Runtime.UserCodeSyntaxError", "app"),
        ("python3.12", "app.handler", {"app.py": "raise RuntimeError('init went wrong')\ndef handler(e, c): return 1\n"},
         "RuntimeError", "init went wrong"),
        ("nodejs20.x", "nosuch.handler", {"index.js": "exports.handler = async () => 1;\n"},
         "Runtime.ImportModuleError", "nosuch"),
        ("nodejs20.x", "index.missing", {"index.js": "exports.handler = async () => 1;\n"},
         "Runtime.HandlerNotFound", "index.missing is undefined or not exported"),
        ("nodejs20.x", "index.handler", {"index.js": "exports.handler = async () => {;\n"},
         "Runtime.UserCodeSyntaxError", "SyntaxError"),
        ("nodejs20.x", "index.handler", {"index.js": "throw new Error('node init went wrong');\n"},
         "Error", "node init went wrong"),
    ],
    ids=["py-missing-module", "py-missing-handler", "py-syntax", "py-import-raises",
         "node-missing-module", "node-missing-handler", "node-syntax", "node-import-throws"],
)
def test_init_errors(lam, runtime, handler, files, error_type, message):
    name = create(lam, files, runtime=runtime, handler=handler)
    r = failed(lam, name)
    assert r.payload["errorType"] == error_type, r
    assert message in r.payload["errorMessage"], r
    assert "REPORT RequestId" in r.log
    # The runtime's own report of the init error is in the tail, as on Lambda.
    assert error_type in r.log.split("START RequestId")[0], r.log
    # Still failing the same way the second time (a fresh init each time, not a stuck instance).
    r2 = failed(lam, name)
    assert r2.payload["errorType"] == error_type, r2


def test_provided_without_bootstrap(lam):
    name = create(lam, {"main.sh": "echo hi\n"}, runtime="provided.al2", handler="main.sh")
    r = failed(lam, name)
    assert r.payload["errorType"] == "Runtime.InvalidEntrypoint", r
    assert "bootstrap" in r.payload["errorMessage"], r


@pytest.mark.parametrize(
    "script,reason",
    [("echo no shebang\n", "exec format error"), ("#!/bin/no-such-shell\necho hi\n", "no such file or directory")],
    ids=["no-shebang", "missing-interpreter"],
)
def test_provided_bootstrap_that_cannot_exec(lam, script, reason):
    name = create(lam, {"bootstrap": (script, 0o755)}, runtime="provided", handler="x")
    r = failed(lam, name)
    assert r.payload["errorType"] == "Runtime.InvalidEntrypoint", r
    assert reason in r.payload["errorMessage"], r


def test_provided_bootstrap_not_executable(lam):
    name = create(lam, {"bootstrap": ("#!/bin/sh\nexit 0\n", 0o644)}, runtime="provided", handler="x")
    r = failed(lam, name)
    assert r.payload["errorType"] == "Runtime.InvalidEntrypoint", r
    assert "bootstrap" in r.payload["errorMessage"], r


# --------------------------------------------------------------------------------------------
# Instances: warm reuse, concurrency, REPORT, throttling, eviction, reaping
# --------------------------------------------------------------------------------------------


def test_warm_reuse_and_init_duration(lam):
    name = create(lam, {"app.py": PY_PROBE})
    r1 = invoke(lam, name)
    r2 = invoke(lam, name)
    assert r1.function_error is None and r2.function_error is None, (r1, r2)
    assert r1.payload["instance"] == r2.payload["instance"]
    assert (r1.payload["count"], r2.payload["count"]) == (1, 2)
    rep1, rep2 = report(r1.log), report(r2.log)
    assert rep1["RequestId"] == r1.request_id and rep2["RequestId"] == r2.request_id
    assert re.fullmatch(r"\d+(\.\d+)? ms", rep1["Init Duration"]), rep1
    assert "Init Duration" not in rep2, rep2
    # What the module printed at import shows in the cold start's tail only.
    assert "probe module loaded" in r1.log and "probe module loaded" not in r2.log


PY_TRACE = """
import ctypes, os, subprocess

_libc = ctypes.CDLL(None)
_libc.getenv.restype = ctypes.c_char_p


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_libc.mallinfo2.restype = _MallInfo2


def handler(event, context):
    views = {
        "environ": os.environ.get("_X_AMZN_TRACE_ID"),
        "getenv": os.getenv("_X_AMZN_TRACE_ID"),
        "libc": (_libc.getenv(b"_X_AMZN_TRACE_ID") or b"").decode(),
    }
    if event.get("child"):
        views["child"] = subprocess.run(
            ["/bin/sh", "-c", 'printf %s "$_X_AMZN_TRACE_ID"'], capture_output=True, text=True
        ).stdout
    # Bytes malloc has handed out and not had back (resident slack does not hide them).
    return {"views": views, "heap": _libc.mallinfo2().uordblks}
"""


def test_python_trace_id_reaches_every_view_without_growing_the_instance(lam):
    """_X_AMZN_TRACE_ID changes with every invocation. glibc's setenv keeps every distinct value
    it is given for the life of the process, so setting it through os.environ grew a warm
    instance by ~140 bytes per invocation until its memory limit killed it."""
    name = create(lam, {"app.py": PY_TRACE})
    seen = set()
    for _ in range(3):
        r = invoke(lam, name, {"child": True}, tail=False)
        assert r.function_error is None, r
        views = r.payload["views"]
        # os.environ, os.getenv, C's getenv and a child process all see this invocation's id.
        assert views["environ"].startswith("Root=1-"), views
        assert set(views.values()) == {views["environ"]}, views
        seen.add(views["environ"])
    assert len(seen) == 3, seen

    url = urllib.parse.urlsplit(lam.meta.endpoint_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    def heap():
        conn.request("POST", f"/2015-03-31/functions/{name}/invocations", body=b"{}")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200 and resp.getheader("X-Amz-Function-Error") is None, body
        return body["heap"]

    for _ in range(200):  # caches fill first
        heap()
    before = heap()
    for _ in range(3000):
        after = heap()
    conn.close()
    # 3,000 ids kept by setenv would hold about 400 KB.
    assert after - before < 64 * 1024, (before, after)


NODE_TRACE = """
const { execFileSync } = require('child_process');

exports.handler = async (event) => {
  const views = {
    env: process.env._X_AMZN_TRACE_ID,
    copy: { ...process.env }._X_AMZN_TRACE_ID,
    listed: Object.keys(process.env).includes('_X_AMZN_TRACE_ID') ? process.env._X_AMZN_TRACE_ID : null,
    child: execFileSync('/bin/sh', ['-c', 'printf %s "$_X_AMZN_TRACE_ID"']).toString(),
  };
  process.env.NIMBUS_TEST_SET = 'set';
  const own = execFileSync('/bin/sh', ['-c', 'printf %s "$NIMBUS_TEST_SET"']).toString();
  delete process.env.NIMBUS_TEST_SET;
  return { views, own, gone: !('NIMBUS_TEST_SET' in process.env) };
};
"""


def test_node_trace_id_reaches_code_and_child_processes(lam):
    """The node runtime keeps _X_AMZN_TRACE_ID in a proxy of process.env rather than a setenv per
    invocation (which glibc never gives back): code and child processes still see each
    invocation's id, and the rest of process.env reads and writes through."""
    name = create(lam, {"index.js": NODE_TRACE}, runtime="nodejs20.x", handler="index.handler")
    seen = set()
    for _ in range(3):
        r = invoke(lam, name, tail=False)
        assert r.function_error is None, r
        views = r.payload["views"]
        assert views["env"].startswith("Root=1-"), views
        assert set(views.values()) == {views["env"]}, views
        assert r.payload["own"] == "set" and r.payload["gone"] is True, r.payload
        seen.add(views["env"])
    assert len(seen) == 3, seen


def test_parallel_invokes_scale_out(server):
    lam = server.lambda_client()
    name = create(lam, {"app.py": PY_SLEEP}, Timeout=10)
    clients = [server.lambda_client() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: invoke(c, name, {"s": 0.5}, tail=False), clients))
    for r in results:
        assert r.status == 200 and r.function_error is None, r
    instances = {r.payload["instance"] for r in results}
    assert len(instances) >= 2, instances


def test_report_line_fields_and_memory(lam):
    name = create(lam, {"app.py": PY_PROBE}, MemorySize=512, Timeout=10)
    small = invoke(lam, name)
    big = invoke(lam, name, {"op": "alloc", "mb": 60})
    assert small.function_error is None and big.function_error is None, (small, big)
    for r in (small, big):
        rep = report(r.log)
        assert re.fullmatch(r"\d+(\.\d+)? ms", rep["Duration"]), rep
        assert re.fullmatch(r"\d+ ms", rep["Billed Duration"]), rep
        assert mb(rep["Memory Size"]) == 512
        used = mb(rep["Max Memory Used"])
        assert 0 < used <= 512, rep
        assert float(rep["Billed Duration"].split()[0]) >= float(rep["Duration"].split()[0])
    used_small = mb(report(small.log)["Max Memory Used"])
    used_big = mb(report(big.log)["Max Memory Used"])
    assert used_big >= used_small + 40, (used_small, used_big)


def slow_pair(server, first, second, first_event, second_event, delay=1.0):
    """Starts `first` (slow) in a thread, then invokes `second` while it runs."""
    c1, c2 = server.lambda_client(), server.lambda_client()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(invoke, c1, first, first_event, False)
        time.sleep(delay)
        try:
            second_result = invoke(c2, second, second_event, tail=False)
        except ClientError as e:
            second_result = e
        first_result = fut.result(timeout=60)
    return first_result, second_result


def test_reserved_concurrency_throttles(server):
    lam = server.lambda_client()
    name = create(lam, {"app.py": PY_SLEEP}, Timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    first, second = slow_pair(server, name, name, {"s": 4}, {"s": 0})
    assert first.function_error is None, first
    assert isinstance(second, ClientError), second
    assert error_code(second) == "TooManyRequestsException"
    assert second.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    # Once the slow one is done, the function takes invocations again.
    assert ok(lam, name, {"s": 0})["instance"]


def test_node_limit_evicts_idle_and_throttles_busy(new_server):
    s = new_server("--max-instances", "1", "--queue-timeout", "1s")
    lam = s.lambda_client()
    a = create(lam, {"app.py": PY_SLEEP}, Timeout=10)
    b = create(lam, {"app.py": PY_SLEEP}, Timeout=10)
    ia = ok(lam, a)["instance"]
    ib = ok(lam, b)["instance"]  # evicts a's idle instance
    ia2 = ok(lam, a)["instance"]  # evicts b's
    assert ia2 != ia, "a's instance was evicted, so a started afresh"
    assert ok(lam, b)["instance"] != ib
    first, second = slow_pair(s, a, b, {"s": 4}, {"s": 0})
    assert first.function_error is None, first
    assert isinstance(second, ClientError) and error_code(second) == "TooManyRequestsException", second
    assert second.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert ok(lam, b)["instance"]


def test_idle_instances_are_reaped(new_server):
    s = new_server("--idle-timeout", "2s")
    lam = s.lambda_client()
    name = create(lam, {"app.py": PY_SLEEP})
    ok(lam, name)
    assert status(s)["instances"] >= 1
    assert wait_until(lambda: status(s)["instances"] == 0, timeout=12), status(s)
    # Scale from zero: the function still answers.
    assert ok(lam, name)["instance"]


# --------------------------------------------------------------------------------------------
# Events, client context, logging, updates
# --------------------------------------------------------------------------------------------

PY_ECHO = r"""
import logging, os, sys

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    logger.info("via logging %s", "ok")
    print("via stderr", file=sys.stderr)
    print("no trailing newline", end="")
    if isinstance(event, dict) and event.get("op") == "unmarshallable":
        return {"a set": {1, 2}}
    if isinstance(event, dict) and event.get("op") == "exit0":
        sys.stdout.flush()
        os._exit(0)
    cc = context.client_context
    return {"event": event, "custom": cc.custom if cc else None, "V": os.environ.get("V"), "text": "h\u00e9llo \u2713"}
"""


def test_any_json_event_and_unicode(lam):
    name = create(lam, {"app.py": PY_ECHO})
    for raw, expected in [(b'"hi"', "hi"), (b"[1, 2]", [1, 2]), (b"null", None), (b"42", 42),
                          ('{"u": "\u2713 \u00fc"}'.encode(), {"u": "\u2713 \u00fc"})]:
        r = lam.invoke(FunctionName=name, Payload=raw)
        assert "FunctionError" not in r, r
        assert json.loads(r["Payload"].read()) == {"event": expected, "custom": None, "V": None, "text": "h\u00e9llo \u2713"}
    # No payload at all: Lambda hands the function an empty object.
    r = lam.invoke(FunctionName=name)
    assert json.loads(r["Payload"].read())["event"] == {}


def test_logging_stderr_and_partial_lines_are_captured(lam):
    name = create(lam, {"app.py": PY_ECHO})
    r = invoke(lam, name, {})
    assert r.function_error is None, r
    line = next(ln for ln in r.log.splitlines() if "via logging ok" in ln)
    level, stamp, rid, message = line.split("\t")
    assert level == "[INFO]" and rid == r.request_id and message == "via logging ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert "via stderr" in r.log
    # Output without a final newline still belongs to its own invocation, before END.
    assert r.log.index("no trailing newline") < r.log.index(f"END RequestId: {r.request_id}")


def test_client_context_reaches_the_function(lam):
    name = create(lam, {"app.py": PY_ECHO})
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}, "client": {}, "env": {}}).encode()).decode()
    r = lam.invoke(FunctionName=name, Payload=b"{}", ClientContext=cc)
    assert json.loads(r["Payload"].read())["custom"] == {"k": "v"}


def test_marshal_error(lam):
    name = create(lam, {"app.py": PY_ECHO})
    r = failed(lam, name, {"op": "unmarshallable"})
    assert r.payload["errorType"] == "Runtime.MarshalError", r
    assert "Unable to marshal response" in r.payload["errorMessage"]


def test_clean_exit_mid_invocation(lam):
    name = create(lam, {"app.py": PY_ECHO})
    r = failed(lam, name, {"op": "exit0"})
    assert r.payload["errorType"] == "Runtime.ExitError", r
    assert "Runtime exited without providing a reason" in r.payload["errorMessage"], r
    assert ok(lam, name, {})["event"] == {}


def test_updates_reach_warm_functions(lam):
    name = create(lam, {"app.py": PY_ECHO}, Environment={"Variables": {"V": "one"}})
    assert ok(lam, name)["V"] == "one"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"V": "two"}})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert ok(lam, name)["V"] == "two"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert ok(lam, name) == "v2"


def test_published_version_and_alias_context(lam):
    name = create(lam, {"app.py": PY_PROBE})
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("1", "live"):
        r = invoke(lam, name, {}, Qualifier=qualifier)
        assert r.function_error is None, r
        assert r.headers.get("x-amz-executed-version") == "1"
        assert r.payload["ctx"]["function_version"] == "1"
        assert r.payload["env"]["AWS_LAMBDA_FUNCTION_VERSION"] == "1"
        assert r.payload["ctx"]["invoked_function_arn"].endswith(f":function:{name}:{qualifier}")
        assert "[1]" in r.payload["ctx"]["log_stream_name"]
        assert f"START RequestId: {r.request_id} Version: 1" in r.log
    latest = ok(lam, name)
    assert latest["ctx"]["function_version"] == "$LATEST"
    assert "[$LATEST]" in latest["ctx"]["log_stream_name"]
