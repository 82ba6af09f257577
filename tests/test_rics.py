"""AWS's official runtime interface clients, unchanged, as `provided` functions: PyPI `awslambdaric`,
npm `aws-lambda-ric` and the Rust `lambda_runtime` crate. Each speaks the Runtime API its own way
(aws-lambda-cpp over libcurl, Node's http module, hyper), so this is the contract test of Nimbus's
Runtime API against the real clients.

Requirements (installed by scripts/test.sh): awslambdaric in tests/requirements.txt, aws-lambda-ric
in tests/package.json (its native addon needs the packages in tests/apt-packages.txt), and cargo
for examples/rust-hello.
"""

import os
import shutil
import subprocess

import pytest
from conftest import ROOT, create
from lambda_helpers import failed, invoke

TESTS = os.path.dirname(os.path.abspath(__file__))

PY_APP = """
import os


def handler(event, context):
    if "fail" in event:
        raise KeyError(event["fail"])
    print("awslambdaric handler ran")
    return {
        "echo": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "log_stream": context.log_stream_name,
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
    }
"""

# The bootstrap a Lambda user writes for a custom image: the RIC runs the handler.
PY_BOOTSTRAP = '#!/bin/sh\ncd "$LAMBDA_TASK_ROOT"\nexec python3 -m awslambdaric app.handler\n'

NODE_APP = """
exports.handler = async (event, context) => {
  if (event.fail) throw new SyntaxError(event.fail);
  console.log('aws-lambda-ric handler ran');
  return {
    echo: event,
    request_id: context.awsRequestId,
    function_name: context.functionName,
    memory: context.memoryLimitInMB,
    remaining: context.getRemainingTimeInMillis(),
  };
};
"""

NODE_BOOTSTRAP = '#!/bin/sh\ncd "$LAMBDA_TASK_ROOT"\nexec node node_modules/aws-lambda-ric/bin/index.mjs index.handler\n'


def check_success(r, name, memory):
    assert r.status == 200 and r.function_error is None, r
    p = r.payload
    assert p["echo"] == {"name": "ric", "n": [1, 2, 3]}
    assert p["request_id"] == r.request_id
    assert p["function_name"] == name
    assert str(p["memory"]) == str(memory)
    assert 0 < p["remaining"] <= 5000


def test_python_awslambdaric(lam):
    try:
        import awslambdaric  # noqa: F401  (installed from tests/requirements.txt)
    except ImportError:
        pytest.fail("awslambdaric is not installed: pip install -r tests/requirements.txt")
    name = create(
        lam,
        {"bootstrap": (PY_BOOTSTRAP, 0o755), "app.py": PY_APP},
        runtime="provided.al2023",
        handler="app.handler",
        Timeout=5,
        MemorySize=256,
    )
    r = invoke(lam, name, {"name": "ric", "n": [1, 2, 3]})
    check_success(r, name, 256)
    assert r.payload["task_root"] == "/var/task"
    assert "awslambdaric handler ran" in r.log
    assert "Init Duration" in r.log

    e = failed(lam, name, {"fail": "missing-key"})
    assert e.payload["errorType"] == "KeyError"
    assert "missing-key" in e.payload["errorMessage"]
    assert any("app.py" in frame for frame in e.payload["stackTrace"]), e.payload
    assert "[ERROR] KeyError" in e.log
    # Same instance again, warm.
    r2 = invoke(lam, name, {"name": "ric", "n": [1, 2, 3]})
    check_success(r2, name, 256)
    assert "Init Duration" not in r2.log


def node_ric_files():
    """aws-lambda-ric as npm installed it in tests/node_modules: only what runs is packaged
    (bin/, dist/ with the compiled rapid-client addon, package.json)."""
    pkg = os.path.join(TESTS, "node_modules", "aws-lambda-ric")
    if not os.path.isfile(os.path.join(pkg, "dist", "rapid-client.node")):
        pytest.fail("aws-lambda-ric is not installed: run `npm install` in tests/ (see tests/apt-packages.txt)")
    files = {}
    for sub in ("bin", "dist"):
        for root, _dirs, names in os.walk(os.path.join(pkg, sub)):
            for n in names:
                path = os.path.join(root, n)
                rel = os.path.relpath(path, pkg)
                with open(path, "rb") as f:
                    files[f"node_modules/aws-lambda-ric/{rel}"] = (f.read(), os.stat(path).st_mode & 0o777)
    with open(os.path.join(pkg, "package.json"), "rb") as f:
        files["node_modules/aws-lambda-ric/package.json"] = f.read()
    return files


def test_node_aws_lambda_ric(lam):
    files = node_ric_files()
    files.update({"bootstrap": (NODE_BOOTSTRAP, 0o755), "index.js": NODE_APP})
    name = create(lam, files, runtime="provided.al2", handler="index.handler", Timeout=5, MemorySize=384)
    r = invoke(lam, name, {"name": "ric", "n": [1, 2, 3]})
    check_success(r, name, 384)
    assert "aws-lambda-ric handler ran" in r.log

    e = failed(lam, name, {"fail": "unexpected token"})
    assert e.payload["errorType"] == "SyntaxError"
    assert e.payload["errorMessage"] == "unexpected token"
    assert isinstance(e.payload.get("trace"), list) and e.payload["trace"], e.payload
    # The runtime keeps serving after a reported error.
    check_success(invoke(lam, name, {"name": "ric", "n": [1, 2, 3]}), name, 384)


@pytest.fixture(scope="module")
def rust_bootstrap(tmp_path_factory):
    """Builds examples/rust-hello (quick when cached) and returns a stripped copy of its binary."""
    cargo = shutil.which("cargo")
    assert cargo, "cargo is needed to build examples/rust-hello"
    subprocess.run([cargo, "build", "-q", "-p", "rust-hello"], cwd=ROOT, check=True, timeout=1200)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    built = os.path.join(target, "debug", "bootstrap")
    out = str(tmp_path_factory.mktemp("rust") / "bootstrap")
    strip = shutil.which("strip")
    if strip:
        subprocess.run([strip, "-o", out, built], check=True)
    else:
        shutil.copy(built, out)
    with open(out, "rb") as f:
        return f.read()


@pytest.mark.timeout(1500)
def test_rust_lambda_runtime(lam, rust_bootstrap):
    name = create(lam, {"bootstrap": (rust_bootstrap, 0o755)}, runtime="provided.al2023", handler="bootstrap", Timeout=5)
    r = invoke(lam, name, {"name": "crab"})
    assert r.status == 200 and r.function_error is None, r
    p = r.payload
    assert p["message"] == "Hello, crab!" and p["runtime"] == "rust"
    assert p["requestId"] == r.request_id
    assert p["functionArn"].endswith(f":function:{name}")
    assert p["deadlineMs"] > 0
    assert "hello from rust, crab" in r.log

    e = failed(lam, name, {"fail": "no crabs today"})
    assert e.payload["errorMessage"] == "no crabs today"
    assert e.payload["errorType"]
    assert invoke(lam, name, {}).payload["message"] == "Hello, world!"
