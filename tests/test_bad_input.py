"""Malformed and hostile input: each gets a clear 4xx, nothing is written, and the server keeps
serving. Raw HTTP is used where boto3 would refuse to send the request."""

import base64
import io
import json
import os
import socket
import urllib.error
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

from conftest import create, make_zip, unique

ROLE = "arn:aws:iam::000000000000:role/test"
APP = {"app.py": "def handler(event, context):\n    return event\n"}


def raw(server, method, path, body=None, headers=None):
    """(status, lower-cased headers, parsed JSON body or raw bytes)."""
    req = urllib.request.Request(server.endpoint + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, hdrs, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    try:
        data = json.loads(data) if data else None
    except ValueError:
        pass
    return status, hdrs, data


def code_dirs(server):
    return set(os.listdir(os.path.join(server.data_dir, "code"))), set(os.listdir(os.path.join(server.data_dir, "blobs")))


def create_raw(server, zip_bytes, name=None, **over):
    body = {
        "FunctionName": name or unique("bad"),
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
    }
    body.update(over)
    return body["FunctionName"], raw(server, "POST", "/2015-03-31/functions", json.dumps(body).encode(),
                                     {"content-type": "application/json"})


def assert_refused(server, lam, zip_bytes, *words, status=400, **over):
    """Creating a function from zip_bytes is refused with a message containing words, and leaves
    no function, archive or unpacked tree behind."""
    before = code_dirs(server)
    name, (code, headers, body) = create_raw(server, zip_bytes, **over)
    assert code == status, (code, body)
    assert headers.get("x-amzn-errortype"), headers
    msg = body["Message"]
    for w in words:
        assert w.lower() in msg.lower(), msg
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    assert code_dirs(server) == before
    return msg


def zip_with(entries):
    """entries: [(ZipInfo-or-name, bytes)] -> zip bytes, names written as given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            z.writestr(info, data)
    return buf.getvalue()


def test_corrupt_zips(server, lam):
    assert_refused(server, lam, os.urandom(4096), "zip")
    good = make_zip({**APP, "data.bin": os.urandom(20000)})
    assert_refused(server, lam, good[: len(good) // 2], "zip")
    assert_refused(server, lam, b"", "zip")
    # Not base64 at all.
    before = code_dirs(server)
    name, (code, _, body) = create_raw(server, b"", Code={"ZipFile": "!!!not base64!!!"})
    assert code == 400 and "ZipFile" in body["Message"], body
    assert code_dirs(server) == before


def test_path_traversal_entries(server, lam):
    assert_refused(server, lam, zip_with([("app.py", APP["app.py"]), ("../evil", "x")]), "../evil")
    assert_refused(server, lam, zip_with([("app.py", APP["app.py"]), ("a/../../evil", "x")]), "evil")
    assert_refused(server, lam, zip_with([("app.py", APP["app.py"]), ("/etc/x", "x")]), "/etc/x")


def symlink(name, target):
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = 0o120777 << 16
    info.create_system = 3
    return info, target


def test_symlink_leaving_the_root(server, lam):
    assert_refused(server, lam, zip_with([("app.py", APP["app.py"]), symlink("link", "../../etc/passwd")]), "link")
    assert_refused(server, lam, zip_with([("app.py", APP["app.py"]), symlink("abs", "/etc/passwd")]), "abs")
    # A symlink inside the root is fine and works.
    name = unique("link")
    code, _, body = create_raw(server, zip_with([("real.py", APP["app.py"]), symlink("app.py", "real.py")]), name=name)[1]
    assert code == 201, body
    r = lam.invoke(FunctionName=name, Payload=b'{"ok": 1}')
    assert json.loads(r["Payload"].read()) == {"ok": 1}


def test_zip_bomb(server, lam):
    buf = io.BytesIO()
    chunk = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("app.py", APP["app.py"])
        info = zipfile.ZipInfo("zeros.bin", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            for _ in range(300):
                f.write(chunk)
    bomb = buf.getvalue()
    assert len(bomb) < 2 * 1024 * 1024
    msg = assert_refused(server, lam, bomb, "expands", str(250 * 1024 * 1024))
    assert "zeros.bin" in msg


def test_bad_runtime_handler_and_names(server, lam):
    z = make_zip(APP)
    assert_refused(server, lam, z, "Runtime", Runtime="cobol9")
    assert_refused(server, lam, z, "Handler", Handler="nodot")
    assert_refused(server, lam, z, "Handler", Handler="")
    count = len(lam.list_functions(MaxItems=10000)["Functions"])
    for bad in ["bad name", "a/b", "x" * 65, "", "é", "name:with:colons:x"]:
        before = code_dirs(server)
        _, (code, _, body) = create_raw(server, z, FunctionName=bad)
        assert code == 400, (bad, code, body)
        assert "FunctionName" in body["Message"] or "name" in body["Message"].lower(), body
        assert code_dirs(server) == before
    assert len(lam.list_functions(MaxItems=10000)["Functions"]) == count
    before = code_dirs(server)
    _, (code, _, body) = create_raw(server, z, name=None, FunctionName=None)
    assert code == 400 and "FunctionName" in body["Message"], body
    assert code_dirs(server) == before


def test_illegal_names_in_paths(server):
    # A function name that is not a name, in the URL: refused, not a crash or a 500.
    for path in ["/2015-03-31/functions/bad%20name", "/2015-03-31/functions/" + "x" * 200,
                 "/2015-03-31/functions/a%2Fb/configuration"]:
        code, _, body = raw(server, "GET", path)
        assert code in (400, 404), (path, code, body)
        assert body and body.get("Message"), body


def test_invoke_payloads(server, lam):
    name = create(lam, APP)
    for bad in [b"{not json", b"abc", b"[1, 2", b'{"a": 1} trailing', b"\xff\xfe"]:
        code, headers, body = raw(server, "POST", f"/2015-03-31/functions/{name}/invocations", bad)
        assert code == 400, (bad, code, body)
        assert headers["x-amzn-errortype"].startswith("InvalidRequestContentException"), headers
        assert "json" in body["Message"].lower()
        with pytest.raises(lam.exceptions.InvalidRequestContentException):
            lam.invoke(FunctionName=name, Payload=bad)
    for good in ['"a string"', "42", "3.5", "[1, 2, {\"x\": null}]", "null", "true", '{"nested": {"a": [1]}}']:
        r = lam.invoke(FunctionName=name, Payload=good)
        assert "FunctionError" not in r
        assert json.loads(r["Payload"].read()) == json.loads(good), good


def test_the_invoke_path_names_what_is_wrong(server, lam):
    """Invoke is answered in front of the router (nimbus-api's service.rs); its path, query
    and body limits are checked there, each with an error that names the problem."""
    name = create(lam, APP)
    path = f"/2015-03-31/functions/{name}/invocations"
    # A name that is not UTF-8 once percent-decoded.
    code, headers, body = raw(server, "POST", "/2015-03-31/functions/%FF%FE/invocations", b"{}")
    assert code == 400, (code, body)
    assert headers["x-amzn-errortype"].startswith("InvalidParameterValueException"), headers
    assert "UTF-8" in body["Message"], body
    # An unknown function and a malformed qualifier, by name and by query.
    code, headers, body = raw(server, "POST", "/2015-03-31/functions/no-such-fn/invocations", b"{}")
    assert code == 404 and headers["x-amzn-errortype"].startswith("ResourceNotFoundException"), body
    assert "no-such-fn" in body["Message"], body
    code, _, body = raw(server, "POST", path + "?Qualifier=not%20valid!", b"{}")
    assert code == 400 and body["Message"], body
    code, _, body = raw(server, "POST", f"/2015-03-31/functions/{name}%3A7/invocations?Qualifier=8", b"{}")
    assert code == 400 and "differ" in body["Message"], body
    # The same name percent-encoded and qualified in the query is the same function.
    code, _, body = raw(server, "POST", f"/2015-03-31/functions/{name.replace('-', '%2D')}/invocations?Qualifier=%24LATEST", b'{"k": 1}')
    assert code == 200 and body == {"k": 1}, (code, body)
    # Another method on the Invoke path: the router's 405, with a body.
    code, _, body = raw(server, "GET", path)
    assert code == 405 and "GET" in body["Message"], (code, body)
    host, port = server.endpoint.removeprefix("http://").split(":")
    # A body announced past the server's limit: refused at once, before it is sent.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n".encode())
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"RequestTooLargeException" in reply
    # A chunked body (no length announced) over Invoke's 6 MB: refused in Lambda's words.
    chunk = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"RequestTooLargeException" in reply and b"6291456" in reply, reply[:400]
    # A chunked body past the server's own limit (72 MiB): the read stops there, with an error
    # that names the limit. The server may close before the client has sent everything.
    piece = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(80):
                s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"RequestTooLargeException" in reply and b"75497472" in reply, reply[:400]
    assert_serving(server, lam)


def test_malformed_request_bodies(server, lam):
    for body in [b"{", b"not json", b"[]", b'{"FunctionName": 5}', b'{"MemorySize": "big"}']:
        code, headers, resp = raw(server, "POST", "/2015-03-31/functions", body, {"content-type": "application/json"})
        assert code == 400, (body, code, resp)
        assert resp["Message"], resp
        assert headers.get("x-amzn-errortype")
    name = create(lam, APP)
    code, _, resp = raw(server, "PUT", f"/2015-03-31/functions/{name}/configuration", b'{"Timeout": "x"}')
    assert code == 400 and "Timeout" in resp["Message"], resp
    code, _, resp = raw(server, "POST", f"/2015-03-31/functions/{name}/aliases", b"{oops")
    assert code == 400 and resp["Message"], resp
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


def test_unknown_routes(server):
    for method, path in [("GET", "/nope"), ("GET", "/2015-03-31/nothing"), ("DELETE", "/2015-03-31/functions")]:
        code, _, body = raw(server, method, path)
        assert code in (404, 405), (method, path, code)
        assert body and body.get("Message"), body
    code, _, _ = raw(server, "GET", "/nope")
    assert code == 404


def test_huge_header_and_garbage_requests(server, lam):
    host, port = server.endpoint.removeprefix("http://").split(":")
    # A 1 MB header: the server answers with an error (or closes), and does not fall over.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n")
        try:
            reply = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        if reply:
            assert reply.split(b" ")[1][:1] == b"4", reply[:200]
    # Not HTTP at all.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            reply = b""
        if reply:
            assert reply.split(b" ")[1][:1] == b"4", reply[:200]
    # A body announced far past any limit is refused at once, not waited for.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n{}")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"RequestTooLargeException" in reply
    # Too many headers, and a very long URI: a 4xx each.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n")
        assert s.recv(4096).split(b" ")[1][:1] == b"4"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).split(b" ")[1][:1] == b"4"
    assert_serving(server, lam)


def assert_serving(server, lam):
    with urllib.request.urlopen(server.endpoint + "/healthz", timeout=10) as r:
        assert r.status == 200
    name = create(lam, APP)
    r = lam.invoke(FunctionName=name, Payload=b'{"still": "up"}')
    assert json.loads(r["Payload"].read()) == {"still": "up"}


def test_update_code_with_bad_zip_changes_nothing(server, lam):
    name = create(lam, APP)
    before = lam.get_function_configuration(FunctionName=name)
    dirs = code_dirs(server)
    for bad in [os.urandom(1000), zip_with([("../evil", "x")])]:
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.update_function_code(FunctionName=name, ZipFile=bad)
    after = lam.get_function_configuration(FunctionName=name)
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["RevisionId"] == before["RevisionId"]
    assert code_dirs(server) == dirs
    r = lam.invoke(FunctionName=name, Payload=b"1")
    assert json.loads(r["Payload"].read()) == 1


def test_server_survives_everything(server, lam):
    # Runs last in this file: after all the above the server still answers.
    assert_serving(server, lam)


def test_an_environment_value_with_a_nul_character_is_refused(lam):
    # No process environment can carry a NUL: refused when stored, not at every cold start.
    name = create(lam, {"app.py": "def handler(e, c):\n    return 1\n"})
    with pytest.raises(ClientError) as err:
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"BAD": "a\x00b"}})
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException", err.value.response
    assert "NUL" in err.value.response["Error"]["Message"], err.value.response
    # What was stored before is untouched and still runs.
    assert json.load(lam.invoke(FunctionName=name)["Payload"]) == 1
