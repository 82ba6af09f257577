"""The Lambda management and Invoke REST API, driven by boto3 against the real server."""

import base64
import hashlib
import json
import urllib.request

import pytest

from conftest import create, make_zip, unique
from lambda_helpers import poll_logs

ROLE = "arn:aws:iam::000000000000:role/test"

# Returns what a caller needs to see which code, version and configuration ran.
ECHO = """
import os
def handler(event, context):
    print("echo-line", event)
    return {
        "tag": TAG,
        "version": context.function_version,
        "memory": context.memory_limit_in_mb,
        "env": os.environ.get("GREETING"),
        "event": event,
    }
"""


def echo_code(tag, handler_name="handler"):
    src = f"TAG = {tag!r}\n" + ECHO
    if handler_name != "handler":
        src += f"\n{handler_name} = handler\n"
    return {"app.py": src}


def invoke_json(lam, name, payload=None, **kw):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}), **kw)
    body = r["Payload"].read()
    assert "FunctionError" not in r, body
    return r, json.loads(body)


def test_create_get_and_download_code(lam):
    files = echo_code("v1")
    zip_bytes = make_zip(files)
    name = unique()
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_bytes},
        MemorySize=256,
        Timeout=10,
        Environment={"Variables": {"GREETING": "hi"}},
        Description="echo",
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    sha = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()

    got = lam.get_function(FunctionName=name)
    c = got["Configuration"]
    assert c["FunctionName"] == name
    assert c["FunctionArn"].endswith(f":function:{name}")
    assert c["FunctionArn"].startswith("arn:aws:lambda:")
    assert c["Runtime"] == "python3.12"
    assert c["Handler"] == "app.handler"
    assert c["CodeSha256"] == sha
    assert c["CodeSize"] == len(zip_bytes)
    assert c["MemorySize"] == 256
    assert c["Timeout"] == 10
    assert c["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert c["Version"] == "$LATEST"
    assert c["State"] == "Active"
    assert c["Description"] == "echo"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=10) as resp:
        assert resp.read() == zip_bytes

    conf = lam.get_function_configuration(FunctionName=name)
    for key in ("FunctionName", "FunctionArn", "CodeSha256", "MemorySize", "Timeout", "RevisionId", "Handler"):
        assert conf[key] == c[key]

    _, out = invoke_json(lam, name, {"a": 1})
    assert out == {"tag": "v1", "version": "$LATEST", "memory": 256, "env": "hi", "event": {"a": 1}}


def test_defaults_are_lambdas(lam):
    name = create(lam, echo_code("d"))
    c = lam.get_function_configuration(FunctionName=name)
    assert c["MemorySize"] == 128
    assert c["Timeout"] == 3


def test_list_functions_paging(lam):
    prefix = unique("page")
    names = {create(lam, echo_code("p"), name=f"{prefix}-{i}") for i in range(7)}

    seen = []
    marker = None
    for _ in range(100):  # bounded: the session server holds far fewer functions
        kw = {"MaxItems": 2}
        if marker:
            kw["Marker"] = marker
        page = lam.list_functions(**kw)
        assert len(page["Functions"]) <= 2
        seen.extend(f["FunctionName"] for f in page["Functions"])
        marker = page.get("NextMarker")
        if not marker:
            break
    assert marker is None, "paging never ended"
    assert len(seen) == len(set(seen)), "a function appeared on two pages"
    assert names <= set(seen)

    pag = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3}) for f in p["Functions"]]
    assert len(pag) == len(set(pag))
    assert names <= set(pag)
    assert set(pag) == set(seen)


def test_update_code_and_configuration(lam):
    name = create(lam, echo_code("old"), Environment={"Variables": {"GREETING": "one"}})
    before = lam.get_function_configuration(FunctionName=name)
    _, out = invoke_json(lam, name)
    assert out["tag"] == "old"

    new_zip = make_zip(echo_code("new", handler_name="other"))
    upd = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert upd["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert upd["CodeSha256"] != before["CodeSha256"]
    assert upd["RevisionId"] != before["RevisionId"]
    _, out = invoke_json(lam, name)
    assert out["tag"] == "new"

    conf = lam.update_function_configuration(
        FunctionName=name,
        Environment={"Variables": {"GREETING": "two"}},
        MemorySize=512,
        Timeout=20,
        Handler="app.other",
    )
    assert conf["MemorySize"] == 512 and conf["Timeout"] == 20 and conf["Handler"] == "app.other"
    assert conf["RevisionId"] != upd["RevisionId"]
    _, out = invoke_json(lam, name)
    assert out["env"] == "two"
    assert out["memory"] == 512
    c = lam.get_function_configuration(FunctionName=name)
    assert c["Timeout"] == 20 and c["Environment"]["Variables"] == {"GREETING": "two"}


def test_versions_and_qualifiers(lam):
    name = create(lam, echo_code("one"))
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1"
    assert v1["FunctionArn"].endswith(f":{name}:1")
    again = lam.publish_version(FunctionName=name)
    assert again["Version"] == "1", "publishing unchanged code must return the existing version"

    lam.update_function_code(FunctionName=name, ZipFile=make_zip(echo_code("two")))
    v2 = lam.publish_version(FunctionName=name, Description="second")
    assert v2["Version"] == "2"
    assert v2["Description"] == "second"

    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]

    # A published version is immutable: changing $LATEST's configuration leaves it as it was.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GREETING": "changed"}}, MemorySize=384)
    _, out = invoke_json(lam, name, Qualifier="2")
    assert out["env"] is None and out["memory"] == 128
    _, out = invoke_json(lam, name)
    assert out["env"] == "changed" and out["memory"] == 384
    assert lam.get_function_configuration(FunctionName=name, Qualifier="2")["MemorySize"] == 128
    assert lam.publish_version(FunctionName=name)["Version"] == "3", "a configuration change is publishable"

    r, out = invoke_json(lam, name, Qualifier="1")
    assert out["tag"] == "one" and out["version"] == "1"
    assert r["ExecutedVersion"] == "1"
    r, out = invoke_json(lam, name, Qualifier="$LATEST")
    assert out["tag"] == "two" and r["ExecutedVersion"] == "$LATEST"
    r, out = invoke_json(lam, name)
    assert r["ExecutedVersion"] == "$LATEST"

    c1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert c1["Version"] == "1" and c1["CodeSha256"] == v1["CodeSha256"]

    # Deleting a version with a qualifier leaves the others.
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="1")
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "2", "3"]
    _, out = invoke_json(lam, name, Qualifier="2")
    assert out["tag"] == "two"


def two_versions(lam):
    name = create(lam, echo_code("one"))
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(echo_code("two")))
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    return name


def test_alias_lifecycle(lam):
    name = two_versions(lam)
    a = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod")
    assert a["AliasArn"].endswith(f":{name}:live")
    assert a["FunctionVersion"] == "1"
    g = lam.get_alias(FunctionName=name, Name="live")
    assert g["FunctionVersion"] == "1" and g["Description"] == "prod"
    r, out = invoke_json(lam, name, Qualifier="live")
    assert out["tag"] == "one" and r["ExecutedVersion"] == "1"

    u = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert u["FunctionVersion"] == "2"
    assert u["RevisionId"] != a["RevisionId"]
    r, out = invoke_json(lam, name, Qualifier="live")
    assert out["tag"] == "two" and r["ExecutedVersion"] == "2"

    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="$LATEST")
    listed = {x["Name"]: x["FunctionVersion"] for x in lam.list_aliases(FunctionName=name)["Aliases"]}
    assert listed == {"live": "2", "beta": "$LATEST"}

    lam.delete_alias(FunctionName=name, Name="beta")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="beta")
    assert [x["Name"] for x in lam.list_aliases(FunctionName=name)["Aliases"]] == ["live"]


def test_alias_weighted_routing(lam):
    name = two_versions(lam)
    a = lam.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    assert a["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    assert lam.get_alias(FunctionName=name, Name="canary")["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}

    n = 300
    counts = {"1": 0, "2": 0}
    for _ in range(n):
        r, out = invoke_json(lam, name, Qualifier="canary")
        assert out["version"] == r["ExecutedVersion"]
        assert out["tag"] == {"1": "one", "2": "two"}[out["version"]]
        counts[out["version"]] += 1
    share = counts["2"] / n
    assert 0.2 <= share <= 0.4, counts

    # Removing the weights sends everything to the primary version.
    lam.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {}})
    assert "AdditionalVersionWeights" not in lam.get_alias(FunctionName=name, Name="canary").get("RoutingConfig", {}) or \
        not lam.get_alias(FunctionName=name, Name="canary")["RoutingConfig"]["AdditionalVersionWeights"]
    for _ in range(10):
        r, _ = invoke_json(lam, name, Qualifier="canary")
        assert r["ExecutedVersion"] == "1"


def test_invocation_types_and_tail(lam, server):
    name = create(lam, {"app.py": "def handler(event, context):\n    print('marker-' + str(event.get('m')))\n    return 'ok'\n"})

    marker = unique("async")
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"m": marker}))
    assert r["StatusCode"] == 202
    events = poll_logs(server, name, marker)
    assert events and any(f"marker-{marker}" in e["message"] for e in events)

    dry = unique("dry")
    r = lam.invoke(FunctionName=name, InvocationType="DryRun", Payload=json.dumps({"m": dry}))
    assert r["StatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=unique("missing"), InvocationType="DryRun")

    tail = unique("tail")
    r = lam.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps({"m": tail}))
    assert r["StatusCode"] == 200
    assert json.loads(r["Payload"].read()) == "ok"
    log = base64.b64decode(r["LogResult"]).decode()
    assert "START RequestId:" in log
    assert f"marker-{tail}" in log
    assert "END RequestId:" in log
    assert "REPORT RequestId:" in log
    request_id = r["ResponseMetadata"]["RequestId"]
    assert request_id in log
    assert log.index("START") < log.index(f"marker-{tail}") < log.index("END") < log.index("REPORT")
    # A dry run never ran the function.
    assert poll_logs(server, name, dry, timeout=0.5) == []


def test_function_error_shape(lam):
    name = create(lam, {"app.py": "def handler(event, context):\n    raise ValueError('boom here')\n"})
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    body = json.loads(r["Payload"].read())
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom here"
    assert isinstance(body.get("stackTrace"), list)


def test_delete_function(lam):
    name = create(lam, echo_code("x"))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="a", FunctionVersion="1")
    assert lam.delete_function(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name)
    assert name not in [f["FunctionName"] for f in lam.list_functions(MaxItems=1000)["Functions"]]
    # The name is free again.
    create(lam, echo_code("y"), name=name)
    assert lam.list_versions_by_function(FunctionName=name)["Versions"][-1]["Version"] == "$LATEST"
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


def test_concurrency(lam):
    name = create(lam, echo_code("c"))
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    r = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert r["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 5
    invoke_json(lam, name)

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert e.value.response.get("Reason"), e.value.response

    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    invoke_json(lam, name)


# ---------------------------------------------------------------------------------------------
# Error cases: the exception classes boto3 users catch, with messages that name the problem.


def test_not_found_errors(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName="no-such-function-here")
    assert "no-such-function-here" in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function-here", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_configuration(FunctionName="no-such-function-here", Timeout=5)
    name = create(lam, echo_code("nf"))
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_alias(FunctionName=name, Name="nope")
    assert "nope" in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="nope", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
        lam.get_function(FunctionName=name, Qualifier="7")
    assert "7" in e.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="7", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_alias(FunctionName=name, Name="x", FunctionVersion="7")


def test_conflict_errors(lam):
    name = two_versions(lam)
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        create(lam, echo_code("dup"), name=name)
    assert name in e.value.response["Error"]["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    # The first function's code is untouched.
    _, out = invoke_json(lam, name)
    assert out["tag"] == "two"

    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="2")  # the weighted version
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1", "2"]


def invalid(lam, fn, *words, **kw):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        fn(**kw)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    msg = e.value.response["Error"]["Message"]
    for w in words:
        assert w in msg, msg
    return msg


def test_invalid_parameters(server):
    # boto3 checks some bounds itself; turn that off so the server's answer is what is tested.
    lam = server.lambda_client(parameter_validation=False)
    zip_bytes = make_zip(echo_code("bad"))

    tried = []

    def mk(**over):
        kw = dict(FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": zip_bytes})
        kw.update(over)
        tried.append(kw["FunctionName"])
        return kw

    invalid(lam, lam.create_function, "Runtime", **mk(Runtime="cobol9"))
    invalid(lam, lam.create_function, "MemorySize", **mk(MemorySize=64))
    invalid(lam, lam.create_function, "MemorySize", **mk(MemorySize=20000))
    invalid(lam, lam.create_function, "Timeout", **mk(Timeout=901))
    invalid(lam, lam.create_function, "Timeout", **mk(Timeout=0))
    invalid(lam, lam.create_function, "Handler", **mk(Handler="nodot"))
    invalid(lam, lam.create_function, "AWS_LAMBDA_FUNCTION_NAME", **mk(Environment={"Variables": {"AWS_LAMBDA_FUNCTION_NAME": "x"}}))
    invalid(lam, lam.create_function, "Environment", **mk(Environment={"Variables": {"1BAD": "x"}}))
    # Nothing was created by the refused requests.
    names = {f["FunctionName"] for f in lam.list_functions(MaxItems=1000)["Functions"]}
    assert not names & set(tried)

    name = create(lam, echo_code("ok"))
    invalid(lam, lam.update_function_configuration, "Timeout", FunctionName=name, Timeout=901)
    invalid(lam, lam.update_function_configuration, "MemorySize", FunctionName=name, MemorySize=64)
    # A failed update leaves the configuration as it was.
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 128

    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(echo_code("ok2")))
    lam.publish_version(FunctionName=name)
    invalid(lam, lam.create_alias, "RoutingConfig", FunctionName=name, Name="w", FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}})
    invalid(lam, lam.create_alias, "123", FunctionName=name, Name="123", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="123")


def test_timeout_zero_is_refused(lam, server):
    # boto3 refuses Timeout=0 client-side (min 1), so send it raw.
    body = {
        "FunctionName": unique(), "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler", "Timeout": 0,
        "Code": {"ZipFile": base64.b64encode(make_zip(echo_code("t"))).decode()},
    }
    status, headers, resp = raw(server, "POST", "/2015-03-31/functions", json.dumps(body).encode())
    assert status == 400
    assert headers.get("x-amzn-errortype", "").startswith("InvalidParameterValueException")
    assert "Timeout" in resp["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=body["FunctionName"])


def raw(server, method, path, body=None, headers=None):
    req = urllib.request.Request(server.endpoint + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read() or b"null")


def test_payload_limits(lam):
    name = create(lam, {"app.py": "def handler(event, context):\n    return len(event)\n"})
    big = json.dumps("x" * (6 * 1024 * 1024 + 1 - 2))
    assert len(big) == 6 * 1024 * 1024 + 1
    with pytest.raises(lam.exceptions.RequestTooLargeException) as e:
        lam.invoke(FunctionName=name, Payload=big)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert str(6 * 1024 * 1024) in e.value.response["Error"]["Message"]

    just_under = json.dumps("x" * (1024 * 1024))
    r = lam.invoke(FunctionName=name, Payload=just_under)
    assert json.loads(r["Payload"].read()) == 1024 * 1024

    async_big = json.dumps("x" * (256 * 1024))
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=async_big)
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps("x" * (200 * 1024)))
    assert r["StatusCode"] == 202


def test_stale_revision_id(lam):
    name = create(lam, echo_code("r"))
    rev = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=rev)
    with pytest.raises(lam.exceptions.PreconditionFailedException) as e:
        lam.update_function_configuration(FunctionName=name, Timeout=6, RevisionId=rev)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 5
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_code(FunctionName=name, ZipFile=make_zip(echo_code("r2")), RevisionId=rev)


def test_aws_region_is_reserved(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, echo_code("r"), Environment={"Variables": {"AWS_REGION": "eu-west-1"}})
    assert "AWS_REGION" in e.value.response["Error"]["Message"]


def test_deletes_do_not_collect_code_being_uploaded(server):
    # DeleteFunction collects unreferenced code archives. Code uploaded by a concurrent
    # CreateFunction/UpdateFunctionCode is not referenced yet, and must survive that.
    import threading

    failures = []
    done = threading.Event()

    def deleter():
        lam = server.lambda_client()
        while not done.is_set():
            lam.delete_function(FunctionName=create(lam, APP_CONST))

    def uploader(i):
        lam = server.lambda_client()
        mine = create(lam, APP_CONST)
        for j in range(8):
            try:
                name = create(lam, {"app.py": f"def handler(e, c):\n    return {i * 100 + j}\n"}) if j % 2 else mine
                lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": f"def handler(e, c):\n    return -{i * 100 + j}\n"}))
                r = lam.invoke(FunctionName=name, Payload=b"{}")
                body = json.loads(r["Payload"].read())
                if body != -(i * 100 + j):
                    failures.append(body)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                failures.append(repr(e))

    threads = [threading.Thread(target=deleter) for _ in range(2)]
    uploaders = [threading.Thread(target=uploader, args=(i,)) for i in range(4)]
    for t in threads + uploaders:
        t.start()
    for t in uploaders:
        t.join(timeout=120)
    done.set()
    for t in threads:
        t.join(timeout=30)
    assert failures == []


APP_CONST = {"app.py": "def handler(e, c):\n    return 0\n"}


def test_boto3_waiters(lam):
    # Deployment scripts wait on these before invoking; they read State / LastUpdateStatus.
    name = create(lam, echo_code("w"))
    lam.get_waiter("function_exists").wait(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(echo_code("w2")))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1")


def test_reserved_concurrency_limits_parallel_invokes(lam, server):
    import threading

    name = create(lam, {"app.py": "import time\ndef handler(e, c):\n    time.sleep(1)\n    return 'done'\n"}, Timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    results = []
    # Clients made first and the calls released together: making a boto3 client can take
    # longer than the 1 s invocation on a loaded machine, and a call sent after the first one
    # ended would rightly be served.
    clients = [server.lambda_client() for _ in range(3)]
    together = threading.Barrier(3)

    def call(client):
        together.wait()
        try:
            r = client.invoke(FunctionName=name, Payload=b"{}")
            results.append(json.loads(r["Payload"].read()))
        except client.exceptions.TooManyRequestsException as e:
            results.append(e.response.get("Reason"))

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["ReservedFunctionConcurrentInvocationLimitExceeded"] * 2 + ["done"], results
