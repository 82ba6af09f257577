"""State survives `nimbus up` being stopped and started on the same data directory, and a
SIGTERM lets in-flight invocations finish."""

import base64
import hashlib
import json
import threading
import time
import urllib.request

from conftest import create, make_zip, unique


def code(tag):
    return {"app.py": f"def handler(event, context):\n    print('restart-log-{tag}')\n"
                      f"    return {{'tag': {tag!r}, 'version': context.function_version}}\n"}


def run(lam, name, **kw):
    r = lam.invoke(FunctionName=name, Payload=b"{}", **kw)
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body


def wait_logs(server, name, text, timeout=10):
    """Log lines are stored in batches a few ms after they are printed: poll for them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = logs(server, name, text)
        if found:
            return found
        time.sleep(0.05)
    return []


def logs(server, name, text):
    url = f"{server.endpoint}/nimbus/v1/functions/{name}/logs?filter={text}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return [e["message"] for e in json.load(resp)["events"]]


def test_state_survives_restart(new_server, tmp_path):
    data = tmp_path / "data"
    s1 = new_server(data_dir=data)
    lam = s1.lambda_client()

    a = create(lam, code("a1"), Environment={"Variables": {"K": "v"}}, MemorySize=256)
    lam.publish_version(FunctionName=a)
    lam.update_function_code(FunctionName=a, ZipFile=make_zip(code("a2")))
    lam.publish_version(FunctionName=a)
    lam.create_alias(FunctionName=a, Name="live", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}})
    lam.put_function_concurrency(FunctionName=a, ReservedConcurrentExecutions=3)
    b = create(lam, {"index.js": "exports.handler = async () => 'node-ok';\n"}, runtime="nodejs20.x",
               handler="index.handler")
    gone = create(lam, code("gone"))
    lam.delete_function(FunctionName=gone)

    assert run(lam, a, Qualifier="1")["tag"] == "a1"
    assert run(lam, a)["tag"] == "a2"
    assert json.loads(lam.invoke(FunctionName=b, Payload=b"{}")["Payload"].read()) == "node-ok"
    before = {
        "conf": lam.get_function_configuration(FunctionName=a),
        "versions": lam.list_versions_by_function(FunctionName=a)["Versions"],
        "alias": lam.get_alias(FunctionName=a, Name="live"),
        "names": sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]),
    }
    location = lam.get_function(FunctionName=a)["Code"]["Location"]
    assert wait_logs(s1, a, "restart-log-a1")
    assert wait_logs(s1, a, "restart-log-a2")

    assert s1.stop() == 0

    s2 = new_server(data_dir=data)
    lam = s2.lambda_client()
    assert sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]) == before["names"]
    assert gone not in before["names"]
    conf = lam.get_function_configuration(FunctionName=a)
    for key in ("CodeSha256", "CodeSize", "RevisionId", "MemorySize", "Environment", "Handler", "LastModified"):
        assert conf[key] == before["conf"][key], key
    assert lam.list_versions_by_function(FunctionName=a)["Versions"] == before["versions"]
    alias = lam.get_alias(FunctionName=a, Name="live")
    alias.pop("ResponseMetadata")
    before["alias"].pop("ResponseMetadata")
    assert alias == before["alias"]
    assert lam.get_function_concurrency(FunctionName=a)["ReservedConcurrentExecutions"] == 3

    # Code: the archive downloads again (from the new server) and the same bytes run.
    new_location = lam.get_function(FunctionName=a)["Code"]["Location"]
    assert new_location.rsplit("/", 1)[1] == location.rsplit("/", 1)[1]
    with urllib.request.urlopen(new_location, timeout=10) as resp:
        zip_bytes = resp.read()
    assert base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode() == conf["CodeSha256"]

    # Logs written before the restart are still there.
    assert logs(s2, a, "restart-log-a1")
    assert logs(s2, a, "restart-log-a2")

    assert run(lam, a, Qualifier="1") == {"tag": "a1", "version": "1"}
    assert run(lam, a, Qualifier="2") == {"tag": "a2", "version": "2"}
    assert run(lam, a)["tag"] == "a2"
    assert run(lam, a, Qualifier="live")["version"] in ("1", "2")
    assert json.loads(lam.invoke(FunctionName=b, Payload=b"{}")["Payload"].read()) == "node-ok"
    # Versions keep counting from where they were.
    lam.update_function_configuration(FunctionName=a, Timeout=9)
    assert lam.publish_version(FunctionName=a)["Version"] == "3"
    # A deleted function stays deleted; its name is free.
    create(lam, code("again"), name=gone)
    assert run(lam, gone)["tag"] == "again"
    assert s2.stop() == 0


def test_sigterm_lets_inflight_invocation_finish(new_server):
    s = new_server()
    lam = s.lambda_client()
    name = create(lam, {"app.py": "import time\ndef handler(event, context):\n    time.sleep(2)\n    return 'slept'\n"},
                  Timeout=30)
    result = {}

    def call():
        try:
            r = lam.invoke(FunctionName=name, Payload=b"{}")
            result["status"] = r["StatusCode"]
            result["error"] = r.get("FunctionError")
            result["body"] = json.loads(r["Payload"].read())
        except Exception as e:  # noqa: BLE001 - reported below
            result["exc"] = repr(e)

    t = threading.Thread(target=call)
    t.start()
    # Wait until the invocation is running (its START line is logged), then SIGTERM.
    deadline = time.time() + 20
    while time.time() < deadline and not logs(s, name, "START"):
        time.sleep(0.05)
    assert logs(s, name, "START"), "the invocation never started"
    assert not result, "the invocation finished before SIGTERM; the test proves nothing"
    code_ = s.stop(timeout=30)
    t.join(timeout=30)
    assert result == {"status": 200, "error": None, "body": "slept"}, result
    assert code_ == 0
    # After shutdown began, the port no longer accepts new work.
    try:
        urllib.request.urlopen(s.endpoint + "/healthz", timeout=2)
        raise AssertionError("server still serving after exit")
    except OSError:
        pass


def test_sigterm_on_idle_server_exits_zero(new_server):
    s = new_server()
    lam = s.lambda_client()
    name = create(lam, code(unique("x")))
    run(lam, name)  # leaves a warm instance behind
    assert s.stop() == 0


def test_state_survives_sigkill(new_server, tmp_path):
    data = tmp_path / "data"
    s1 = new_server(data_dir=data)
    lam = s1.lambda_client()
    name = create(lam, code("k1"))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.update_function_configuration(FunctionName=name, Timeout=11)
    run(lam, name, Qualifier="live")
    assert wait_logs(s1, name, "restart-log-k1")
    s1.kill()  # no chance to flush or clean up

    s2 = new_server(data_dir=data)
    lam = s2.lambda_client()
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 11
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    assert logs(s2, name, "restart-log-k1")
    assert run(lam, name, Qualifier="live") == {"tag": "k1", "version": "1"}
    assert s2.stop() == 0
