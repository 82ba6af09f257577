"""The API gateway against the real server: the management API through boto3's `apigatewayv2`
client (and raw HTTP for Nimbus's MOCK extension), the CLI's `nimbus api ...`, and the data plane
through plain HTTP (http.client and raw sockets, so paths are sent exactly as written), curl and
TLS. Expected values are API Gateway's documented behaviour for HTTP APIs, or, where AWS is
silent, the rules documented in crates/nimbus-gateway/src/routing.rs and cors.rs."""

import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import NIMBUS_BIN, ROOT, make_zip, unique

ROLE = "arn:aws:iam::000000000000:role/test"

# One function for every function-backed route: it echoes its event, raises for a path ending
# in /boom (a function error: 500) and returns a result that is not a valid response for a path
# ending in /bad (502).
ECHO_APP = """
import json

def handler(event, context):
    path = event.get("rawPath") or event.get("path") or ""
    if path.endswith("/boom"):
        raise RuntimeError("boom requested")
    if path.endswith("/bad"):
        return {"statusCode": "not-a-status"}
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
"""

NOT_FOUND = {"message": "Not Found"}


# ---------------------------------------------------------------------------------------------
# Helpers


def apigw(server):
    return boto3.client(
        "apigatewayv2",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60, connect_timeout=5),
    )


def mgmt(server, method, path, body=None):
    """A raw management API call (for what boto3 will not send); returns (status, json)."""
    r = requests.request(method, server.endpoint + path, json=body, timeout=30)
    try:
        doc = r.json() if r.content else None
    except ValueError:
        doc = r.text
    return r.status_code, doc


def gateway_port(server):
    return urllib.parse.urlsplit(server.gateway).port


def api_host(api_id):
    return f"{api_id}.execute-api.localhost"


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased name -> value (last one wins)
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Resp({self.status}, {self.headers}, {self.body[:300]!r})"


def call(server, method, path, host, headers=None, body=None, timeout=60):
    """Sends one request to the gateway listener with the path exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway_port(server), timeout=timeout)
    try:
        h = {"Host": host}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def api_call(server, api_id, method, path, **kw):
    return call(server, method, path, api_host(api_id), **kw)


def raw_exchange(server, data, read_timeout=10):
    """Writes bytes to the gateway and reads until the server closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", gateway_port(server)), timeout=read_timeout)
    out = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.time() + read_timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
    finally:
        s.close()
    return out


def _complete(data):
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(m) and len(body) >= int(m.group(1))


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


def healthy(server, api_id, path="/ok", expect_body=None):
    """The server still answers both its listeners."""
    r = requests.get(server.endpoint + "/nimbus/v1/status", timeout=10)
    assert r.status_code == 200, r.text
    g = api_call(server, api_id, "GET", path)
    assert g.status == 200, g
    if expect_body is not None:
        assert g.text == expect_body, g


def new_api(server, name=None, default_stage=True, **kw):
    c = apigw(server)
    api = c.create_api(Name=name or unique("api"), ProtocolType="HTTP", **kw)
    if default_stage:
        c.create_stage(ApiId=api["ApiId"], StageName="$default", AutoDeploy=True)
    return api["ApiId"]


def add_mock(server, api_id, route_key, body=None, status=200, headers=None):
    """A MOCK integration (Nimbus's extension, sent raw: boto3 does not know its fields) and a
    route to it. The body and an x-route header name the route unless given."""
    body = route_key if body is None else body
    st, integ = mgmt(server, "POST", f"/v2/apis/{api_id}/integrations", {
        "integrationType": "MOCK",
        "mockStatusCode": status,
        "mockHeaders": headers if headers is not None else {"content-type": "text/plain", "x-route": route_key},
        "mockBody": body,
    })
    assert st == 201, integ
    assert integ["integrationType"] == "MOCK" and integ["mockBody"] == body, integ
    st, route = mgmt(server, "POST", f"/v2/apis/{api_id}/routes", {
        "routeKey": route_key, "target": f"integrations/{integ['integrationId']}"})
    assert st == 201, route
    return route["routeId"]


def add_function_route(server, api_id, route_key, function, payload="2.0"):
    c = apigw(server)
    integ = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=function,
                                 PayloadFormatVersion=payload)
    return c.create_route(ApiId=api_id, RouteKey=route_key, Target=f"integrations/{integ['IntegrationId']}")["RouteId"]


def routes_of(client, api_id):
    return sorted((r["RouteId"], r["RouteKey"], r.get("Target")) for r in client.get_routes(ApiId=api_id)["Items"])


def err(exc_info):
    e = exc_info.value
    return e.response["Error"]["Code"], e.response["Error"]["Message"], e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def echo_fn(server):
    """A python function that returns its event as the JSON body."""
    lam = server.lambda_client()
    name = unique("gwecho")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": ECHO_APP})}, Timeout=10)
    return name


class _Backend(BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        text = f"backend saw {self.command} {self.path} {body.decode()}".strip().encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def backend():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------------------------------------
# 1. The management API through boto3


def test_boto3_lifecycle_create_integrate_route_stage_deploy_rollback_delete(server, echo_fn, backend):
    c = apigw(server)
    name = unique("crud")
    created = c.create_api(Name=name, ProtocolType="HTTP", Description="crud test")
    api_id = created["ApiId"]
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["Name"] == name and created["ProtocolType"] == "HTTP"
    assert created["ApiEndpoint"] == f"http://{api_id}.execute-api.localhost:{gateway_port(server)}"

    got = c.get_api(ApiId=api_id)
    assert got["Name"] == name and got["Description"] == "crud test" and got["ApiId"] == api_id
    listed = {a["ApiId"]: a for a in c.get_apis()["Items"]}
    assert listed[api_id]["Name"] == name

    # Three kinds of integration.
    fn = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=echo_fn,
                              PayloadFormatVersion="2.0")
    assert fn["IntegrationType"] == "AWS_PROXY" and fn["IntegrationUri"] == echo_fn
    assert fn["PayloadFormatVersion"] == "2.0" and fn["TimeoutInMillis"] == 30000
    http_i = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationUri=backend + "/backend",
                                  IntegrationMethod="ANY", PayloadFormatVersion="1.0", TimeoutInMillis=5000)
    assert http_i["IntegrationType"] == "HTTP_PROXY" and http_i["TimeoutInMillis"] == 5000
    st, mock = mgmt(server, "POST", f"/v2/apis/{api_id}/integrations", {
        "integrationType": "MOCK", "mockStatusCode": 200, "mockHeaders": {"content-type": "text/plain"},
        "mockBody": "mock-v1"})
    assert st == 201, mock
    assert mock["mockStatusCode"] == 200 and mock["mockBody"] == "mock-v1"

    r_fn = c.create_route(ApiId=api_id, RouteKey="GET /fn", Target=f"integrations/{fn['IntegrationId']}")
    assert r_fn["RouteKey"] == "GET /fn" and r_fn["Target"] == f"integrations/{fn['IntegrationId']}"
    r_http = c.create_route(ApiId=api_id, RouteKey="GET /svc", Target=f"integrations/{http_i['IntegrationId']}")
    r_mock = c.create_route(ApiId=api_id, RouteKey="GET /mock", Target=f"integrations/{mock['integrationId']}")
    assert routes_of(c, api_id) == sorted([
        (r_fn["RouteId"], "GET /fn", f"integrations/{fn['IntegrationId']}"),
        (r_http["RouteId"], "GET /svc", f"integrations/{http_i['IntegrationId']}"),
        (r_mock["RouteId"], "GET /mock", f"integrations/{mock['integrationId']}"),
    ])

    # A named stage, deployed by create_deployment(StageName=...).
    stage = c.create_stage(ApiId=api_id, StageName="prod")
    assert stage["StageName"] == "prod" and "DeploymentId" not in stage
    r = api_call(server, api_id, "GET", "/prod/mock")
    assert (r.status, r.json()) == (404, NOT_FOUND), r  # nothing deployed yet
    d1 = c.create_deployment(ApiId=api_id, StageName="prod", Description="first")
    assert d1["DeploymentStatus"] == "DEPLOYED" and d1["Description"] == "first"
    assert c.get_stage(ApiId=api_id, StageName="prod")["DeploymentId"] == d1["DeploymentId"]

    r = api_call(server, api_id, "GET", "/prod/mock")
    assert (r.status, r.text) == (200, "mock-v1"), r
    r = api_call(server, api_id, "GET", "/prod/fn?x=1")
    assert r.status == 200, r
    ev = r.json()
    assert ev["routeKey"] == "GET /fn" and ev["requestContext"]["stage"] == "prod"
    assert ev["requestContext"]["apiId"] == api_id and ev["queryStringParameters"] == {"x": "1"}
    r = api_call(server, api_id, "GET", "/prod/svc")
    assert (r.status, r.text) == (200, "backend saw GET /backend"), r

    # update_route: the route moves to another path; prod keeps serving its deployment.
    upd = c.update_route(ApiId=api_id, RouteId=r_mock["RouteId"], RouteKey="GET /mock2")
    assert upd["RouteKey"] == "GET /mock2" and upd["Target"] == f"integrations/{mock['integrationId']}"
    c.delete_route(ApiId=api_id, RouteId=r_http["RouteId"])
    assert sorted(k for _, k, _ in routes_of(c, api_id)) == ["GET /fn", "GET /mock2"]
    assert api_call(server, api_id, "GET", "/prod/mock").text == "mock-v1"
    assert api_call(server, api_id, "GET", "/prod/svc").status == 200

    d2 = c.create_deployment(ApiId=api_id, StageName="prod", Description="second")
    assert d2["DeploymentId"] != d1["DeploymentId"]
    assert api_call(server, api_id, "GET", "/prod/mock").json() == NOT_FOUND
    assert api_call(server, api_id, "GET", "/prod/mock2").text == "mock-v1"
    assert api_call(server, api_id, "GET", "/prod/svc").json() == NOT_FOUND
    ids = {d["DeploymentId"]: d for d in c.get_deployments(ApiId=api_id)["Items"]}
    assert set(ids) == {d1["DeploymentId"], d2["DeploymentId"]}
    assert ids[d1["DeploymentId"]]["Description"] == "first"
    assert c.get_deployment(ApiId=api_id, DeploymentId=d1["DeploymentId"])["DeploymentId"] == d1["DeploymentId"]

    # Rollback: point prod at the first deployment again.
    rolled = c.update_stage(ApiId=api_id, StageName="prod", DeploymentId=d1["DeploymentId"])
    assert rolled["DeploymentId"] == d1["DeploymentId"]
    assert api_call(server, api_id, "GET", "/prod/mock").text == "mock-v1"
    assert api_call(server, api_id, "GET", "/prod/svc").text == "backend saw GET /backend"
    assert api_call(server, api_id, "GET", "/prod/mock2").json() == NOT_FOUND
    # A deployment a stage serves cannot be deleted; another can.
    with pytest.raises(ClientError) as e:
        c.delete_deployment(ApiId=api_id, DeploymentId=d1["DeploymentId"])
    assert err(e)[0] == "BadRequestException"
    c.delete_deployment(ApiId=api_id, DeploymentId=d2["DeploymentId"])

    c.delete_api(ApiId=api_id)
    with pytest.raises(ClientError) as e:
        c.get_api(ApiId=api_id)
    assert err(e)[:1] == ("NotFoundException",)
    assert api_id not in {a["ApiId"] for a in c.get_apis()["Items"]}
    r = api_call(server, api_id, "GET", "/prod/mock")
    assert (r.status, r.json()) == (404, NOT_FOUND)


def test_unknown_api_id_is_not_found_everywhere(server):
    c = apigw(server)
    for call_ in (lambda: c.get_api(ApiId="nosuchapi1"),
                  lambda: c.get_routes(ApiId="nosuchapi1"),
                  lambda: c.create_route(ApiId="nosuchapi1", RouteKey="GET /x"),
                  lambda: c.create_stage(ApiId="nosuchapi1", StageName="prod"),
                  lambda: c.delete_api(ApiId="nosuchapi1")):
        with pytest.raises(c.exceptions.NotFoundException) as e:
            call_()
        code, msg, status = err(e)
        assert (code, status) == ("NotFoundException", 404)
        assert "nosuchapi1" in msg, msg


def test_refused_changes_name_the_problem_and_lose_nothing(server, echo_fn):
    c = apigw(server)
    api_id = new_api(server)
    add_mock(server, api_id, "GET /keep")
    add_mock(server, api_id, "GET /pets/{id}")
    c.create_stage(ApiId=api_id, StageName="prod", StageVariables={"color": "blue"})
    before = routes_of(c, api_id)
    stages_before = sorted((s["StageName"], json.dumps(s.get("StageVariables"))) for s in c.get_stages(ApiId=api_id)["Items"])
    integ = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=echo_fn)["IntegrationId"]
    integrations_before = sorted(i["IntegrationId"] for i in c.get_integrations(ApiId=api_id)["Items"])

    def unchanged():
        assert routes_of(c, api_id) == before
        assert sorted(i["IntegrationId"] for i in c.get_integrations(ApiId=api_id)["Items"]) == integrations_before
        assert sorted((s["StageName"], json.dumps(s.get("StageVariables"))) for s in c.get_stages(ApiId=api_id)["Items"]) == stages_before
        r = api_call(server, api_id, "GET", "/keep")
        assert (r.status, r.text) == (200, "GET /keep"), r

    bad_keys = {
        "GET /a/{b": "unbalanced",
        "FETCH /x": "FETCH",
        "GET /{proxy+}/x": "must be the last segment",
        "GET noslash": "must start with '/'",
        "get /x": "upper case",
        "GET  /x": "exactly one space",
        "GET /a//b": "empty segment",
        "GET /a/../b": "`..`",
        "GET /x/": "ends with '/'",
        "GET /{id}.json": "mixes a variable",
        "GET /{a}/{a}": "twice",
        "$connect": "$connect",
        "": "empty",
    }
    for key, needle in bad_keys.items():
        with pytest.raises(c.exceptions.BadRequestException) as e:
            c.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integ}")
        code, msg, status = err(e)
        assert status == 400 and needle in msg, (key, msg)
        unchanged()
    # update_route with a bad key leaves the route as it was.
    keep_id = next(rid for rid, k, _ in before if k == "GET /keep")
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.update_route(ApiId=api_id, RouteId=keep_id, RouteKey="GET /a/{b")
    unchanged()

    # The same key twice (create or rename) conflicts; so do templates differing in names only.
    with pytest.raises(c.exceptions.ConflictException) as e:
        c.create_route(ApiId=api_id, RouteKey="GET /keep", Target=f"integrations/{integ}")
    code, msg, status = err(e)
    assert status == 409 and "GET /keep" in msg, msg
    unchanged()
    with pytest.raises(c.exceptions.ConflictException):
        c.update_route(ApiId=api_id, RouteId=keep_id, RouteKey="GET /pets/{id}")
    unchanged()
    with pytest.raises(ClientError) as e:
        c.create_route(ApiId=api_id, RouteKey="GET /pets/{name}", Target=f"integrations/{integ}")
    code, msg, status = err(e)
    assert status in (400, 409) and "GET /pets/{id}" in msg, msg
    unchanged()

    # A target naming a missing integration.
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_route(ApiId=api_id, RouteKey="GET /t", Target="integrations/nosuch1")
    assert "nosuch1" in err(e)[1]
    unchanged()

    # Stage names and variables.
    for stage_name in ("pr od", "a/b", "x" * 129, "", "$prod"):
        with pytest.raises(c.exceptions.BadRequestException) as e:
            c.create_stage(ApiId=api_id, StageName=stage_name)
        assert "stage name" in err(e)[1], (stage_name, err(e))
        unchanged()
    c.create_stage(ApiId=api_id, StageName="x" * 128)  # the longest allowed
    c.delete_stage(ApiId=api_id, StageName="x" * 128)
    for bad_vars, needle in (({"bad-name": "x"}, "bad-name"), ({"k": 'a"b'}, "k"), ({"k": "v" * 2049}, "2048")):
        with pytest.raises(c.exceptions.BadRequestException) as e:
            c.create_stage(ApiId=api_id, StageName="vars", StageVariables=bad_vars)
        assert needle in err(e)[1], err(e)
        with pytest.raises(c.exceptions.BadRequestException) as e:
            c.update_stage(ApiId=api_id, StageName="prod", StageVariables=bad_vars)
        assert needle in err(e)[1], err(e)
        unchanged()
    with pytest.raises(c.exceptions.ConflictException):
        c.create_stage(ApiId=api_id, StageName="prod")
    unchanged()

    # Integrations: a function that does not exist; timeouts outside 50..30000 (sent raw, since
    # botocore checks the minimum itself).
    missing_fn = unique("nofn")
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=missing_fn)
    assert missing_fn in err(e)[1]
    unchanged()
    for t in (0, 49, 30001, 600000):
        st, doc = mgmt(server, "POST", f"/v2/apis/{api_id}/integrations", {
            "integrationType": "AWS_PROXY", "integrationUri": echo_fn, "timeoutInMillis": t})
        assert st == 400 and "timeoutInMillis" in doc["message"] and str(t) in doc["message"], (t, doc)
        unchanged()
    for t in (50, 30000):
        st, doc = mgmt(server, "POST", f"/v2/apis/{api_id}/integrations", {
            "integrationType": "AWS_PROXY", "integrationUri": echo_fn, "timeoutInMillis": t})
        assert st == 201 and doc["timeoutInMillis"] == t, doc
        st, _ = mgmt(server, "DELETE", f"/v2/apis/{api_id}/integrations/{doc['integrationId']}")
        assert st == 204

    # CORS: credentials with any origin, maxAge out of range, an origin that is not one.
    for cors, needle in (({"AllowOrigins": ["*"], "AllowCredentials": True}, "allowCredentials"),
                         ({"AllowOrigins": ["https://a.example"], "MaxAge": 86401}, "maxAge"),
                         ({"AllowOrigins": ["not an origin"]}, "not an origin")):
        with pytest.raises(c.exceptions.BadRequestException) as e:
            c.update_api(ApiId=api_id, CorsConfiguration=cors)
        assert needle in err(e)[1], err(e)
        assert "CorsConfiguration" not in c.get_api(ApiId=api_id)
        unchanged()
        with pytest.raises(c.exceptions.BadRequestException):
            c.create_api(Name=unique("badcors"), ProtocolType="HTTP", CorsConfiguration=cors)
    st, doc = mgmt(server, "POST", "/v2/apis", {"name": "x", "protocolType": "HTTP",
                                               "corsConfiguration": {"allowOrigins": ["https://a.example"], "maxAge": -2}})
    assert st == 400 and "maxAge" in doc["message"], doc
    unchanged()
    c.delete_api(ApiId=api_id)


# ---------------------------------------------------------------------------------------------
# 2. Route precedence through the data plane

PRECEDENCE_ROUTES = [
    "GET /pets/dog/1",
    "GET /pets/dog/{id}",
    "GET /pets/{proxy+}",
    "ANY /pets/cat",
    "GET /pets/cat",
    "$default",
    "POST /items/{id}",
    "ANY /{proxy+}",
    "GET /items",
]

# (method, path, route expected) with the rule of routing.rs's table that decides.
PRECEDENCE_TABLE = [
    ("GET", "/pets/dog/1", "GET /pets/dog/1"),        # 4: literal over {var}
    ("GET", "/pets/dog/2", "GET /pets/dog/{id}"),     # 1: full match over greedy
    ("GET", "/pets/dog/2/x", "GET /pets/{proxy+}"),   # 4: literal `pets` over greedy at segment 1
    ("GET", "/pets/cat", "GET /pets/cat"),            # 5: exact method over ANY
    ("POST", "/pets/cat", "ANY /pets/cat"),           # 5: ANY takes the methods not defined
    ("DELETE", "/pets/cat", "ANY /pets/cat"),
    ("OPTIONS", "/pets/cat", "ANY /pets/cat"),        # not a preflight (no CORS): routed
    ("GET", "/pets/cat/1", "GET /pets/{proxy+}"),     # 4: GET /pets/{proxy+} over ANY /{proxy+}
    ("POST", "/pets/dog/1", "ANY /{proxy+}"),         # GET-only routes do not take POST
    ("HEAD", "/pets/dog/1", "ANY /{proxy+}"),         # 7: HEAD does not fall back to GET
    ("HEAD", "/items", "ANY /{proxy+}"),              # 7
    ("GET", "/items", "GET /items"),
    ("GET", "/items/", "ANY /{proxy+}"),              # 9: a trailing slash is part of the path
    ("POST", "/items/5", "POST /items/{id}"),
    ("GET", "/items/5", "ANY /{proxy+}"),             # 6: no full match for GET: greedy
    ("POST", "/items/5/6", "ANY /{proxy+}"),          # {id} is one segment only
    ("GET", "/pets", "ANY /{proxy+}"),                # 8: GET /pets/{proxy+} needs a segment
    ("GET", "/", "$default"),                         # 8: /{proxy+} needs a segment
    ("DELETE", "/", "$default"),                      # 3
    ("PATCH", "/anything/deep/path", "ANY /{proxy+}"),  # 2: greedy over $default
    ("GET", "/PETS/dog/1", "ANY /{proxy+}"),          # literals are case-sensitive
]

# The same rules, without a catch-all: what falls through is 404.
NARROW_ROUTES = ["GET /files/{proxy+}", "GET /items", "GET /items/{id}"]
NARROW_TABLE = [
    ("GET", "/files", None),                 # 8
    ("GET", "/files/", None),                # 8/9: an empty greedy value does not match
    ("GET", "/files/a/", "GET /files/{proxy+}"),  # 9: the greedy variable keeps the slash
    ("GET", "/files/a/b", "GET /files/{proxy+}"),
    ("HEAD", "/items", None),                # 7
    ("GET", "/items/", None),                # 9
    ("GET", "/items/7", "GET /items/{id}"),
    ("POST", "/items", None),
]


def check_table(server, api_id, table):
    failures = []
    for method, path, expected in table:
        r = api_call(server, api_id, method, path)
        if expected is None:
            got = (r.status, r.json() if method != "HEAD" else None)
            want = (404, NOT_FOUND if method != "HEAD" else None)
        else:
            got = (r.status, r.headers.get("x-route"), r.text)
            want = (200, expected, "" if method == "HEAD" else expected)
        if got != want:
            failures.append(f"{method} {path}: expected {want}, got {got}")
    assert not failures, "\n".join(failures)


def test_route_precedence_table(server):
    assert len(PRECEDENCE_TABLE) >= 15
    api_id = new_api(server)
    for key in PRECEDENCE_ROUTES:
        add_mock(server, api_id, key)
    check_table(server, api_id, PRECEDENCE_TABLE)
    narrow = new_api(server)
    for key in NARROW_ROUTES:
        add_mock(server, narrow, key)
    check_table(server, narrow, NARROW_TABLE)


ROUTING_RS = os.path.join(ROOT, "crates", "nimbus-gateway", "src", "routing.rs")

# Each example of the precedence table at the top of routing.rs: (rule, routes, method, path,
# chosen route or None for no match, the example's text in the table).
DOC_EXAMPLES = [
    (1, ["GET /pets/dog/{id}", "GET /pets/{proxy+}"], "GET", "/pets/dog/2", "GET /pets/dog/{id}",
     "`GET /pets/dog/2` → `GET /pets/dog/{id}` over `GET /pets/{proxy+}`"),
    (2, ["ANY /{proxy+}", "$default"], "POST", "/test/5", "ANY /{proxy+}",
     "`POST /test/5` → `ANY /{proxy+}` over `$default`"),
    (3, ["$default", "GET /x"], "DELETE", "/nope", "$default", "`DELETE /nope` → `$default`"),
    (4, ["GET /pets/dog/1", "GET /pets/dog/{id}"], "GET", "/pets/dog/1", "GET /pets/dog/1",
     "`GET /pets/dog/1` → `GET /pets/dog/1` over `GET /pets/dog/{id}`"),
    (4, ["GET /pets/{proxy+}", "GET /{proxy+}"], "GET", "/pets/cat/1", "GET /pets/{proxy+}",
     "`GET /pets/cat/1` → `GET /pets/{proxy+}` over `GET /{proxy+}`"),
    (5, ["GET /items", "ANY /items"], "GET", "/items", "GET /items", "`GET /items` → `GET /items` over `ANY /items`"),
    (6, ["ANY /items/{id}", "GET /{a}/{b}"], "GET", "/items/1", "ANY /items/{id}",
     "`GET /items/1` → `ANY /items/{id}` over `GET /{a}/{b}`"),
    (7, ["GET /items"], "HEAD", "/items", None, "`HEAD /items` with only `GET /items` → no match"),
    (8, ["GET /files/{proxy+}", "$default"], "GET", "/files", "$default", "`GET /files` → `$default`"),
    (9, ["GET /items"], "GET", "/items/", None, "`GET /items/` with `GET /items` → no match"),
]


def test_precedence_table_examples_documented_in_routing_rs(server):
    with open(ROUTING_RS, encoding="utf-8") as f:
        doc = f.read().split("use std::", 1)[0]
    rows = re.findall(r"^//! \| (\d+) \|", doc, re.M)
    assert rows == [str(i) for i in range(1, 11)], rows
    for rule, routes, method, path, expected, text in DOC_EXAMPLES:
        row = re.search(rf"^//! \| {rule} \|.*$", doc, re.M).group(0)
        assert text in row, (rule, text, row)
        api_id = new_api(server)
        for key in routes:
            add_mock(server, api_id, key)
        check_table(server, api_id, [(method, path, expected)])
        apigw(server).delete_api(ApiId=api_id)
    # Rule 10: templates that differ only in variable names are refused.
    row10 = re.search(r"^//! \| 10 \|.*$", doc, re.M).group(0)
    assert "`GET /a/{x}` + `GET /a/{y}` → error" in row10, row10
    api_id = new_api(server)
    add_mock(server, api_id, "GET /a/{x}")
    st, body = mgmt(server, "POST", f"/v2/apis/{api_id}/routes", {"routeKey": "GET /a/{y}"})
    assert st in (400, 409) and "GET /a/{x}" in body["message"], body
    add_mock(server, api_id, "POST /a/{y}")  # another method is another route
    apigw(server).delete_api(ApiId=api_id)


# ---------------------------------------------------------------------------------------------
# 3. Path parameters


def test_path_parameters_are_decoded_and_greedy_takes_the_rest(server, echo_fn):
    api_id = new_api(server)
    for key in ("GET /items/{id}", "GET /files/{proxy+}", "GET /u/{name}"):
        add_function_route(server, api_id, key, echo_fn)
    cases = [
        ("/items/a%20b", "GET /items/{id}", {"id": "a b"}),
        ("/items/a%2Fb", "GET /items/{id}", {"id": "a/b"}),
        ("/items/42", "GET /items/{id}", {"id": "42"}),
        ("/u/caf%C3%A9", "GET /u/{name}", {"name": "café"}),
        ("/u/%E2%9C%93%20ok", "GET /u/{name}", {"name": "✓ ok"}),
        ("/files/a/b/c", "GET /files/{proxy+}", {"proxy": "a/b/c"}),
        ("/files/a%20b/c%2Fd", "GET /files/{proxy+}", {"proxy": "a b/c/d"}),
        ("/files/x", "GET /files/{proxy+}", {"proxy": "x"}),
    ]
    for path, route, params in cases:
        r = api_call(server, api_id, "GET", path)
        assert r.status == 200, (path, r)
        ev = r.json()
        assert ev["routeKey"] == route, (path, ev)
        assert ev["pathParameters"] == params, (path, ev["pathParameters"])
        assert ev["requestContext"]["routeKey"] == route
    # An encoded slash stays inside its segment: it is not a second segment.
    r = api_call(server, api_id, "GET", "/u/a%2Fb")
    assert r.json()["pathParameters"] == {"name": "a/b"}
    r = api_call(server, api_id, "GET", "/u/a/b")
    assert (r.status, r.json()) == (404, NOT_FOUND)


# ---------------------------------------------------------------------------------------------
# 4. Stages and rollback with the CLI


def curl(url, *extra):
    r = subprocess.run(["curl", "-s", "-m", "20", *extra, url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (url, r.returncode, r.stderr)
    return r.stdout


def test_cli_stages_deploy_and_rollback(server):
    name = unique("cliapi")
    out = json.loads(server.cli("api", "create", name, "--json").stdout)
    api_id = out["api"]["apiId"]
    assert out["stage"]["stageName"] == "$default" and out["stage"]["autoDeploy"] is True

    def serve(stage_prefix):
        r = api_call(server, api_id, "GET", f"{stage_prefix}/hello")
        return r.status, r.text

    server.cli("api", "route", "add", api_id, "GET /hello", "--mock-status", "200", "--mock-body", "v1")
    assert serve("") == (200, "v1")
    d1 = json.loads(server.cli("api", "deploy", api_id, "--stage", "prod", "--json").stdout)["deployment"]["deploymentId"]
    d_dev = json.loads(server.cli("api", "deploy", name, "--stage", "dev", "--json").stdout)["deployment"]["deploymentId"]
    assert serve("/prod") == (200, "v1") and serve("/dev") == (200, "v1")

    # Change the route: $default (auto-deploy) serves it at once, the named stages do not.
    server.cli("api", "route", "rm", api_id, "GET /hello")
    server.cli("api", "route", "add", api_id, "GET /hello", "--mock-status", "200", "--mock-body", "v2")
    assert serve("") == (200, "v2")
    assert serve("/prod") == (200, "v1")
    assert serve("/dev") == (200, "v1")

    d3 = json.loads(server.cli("api", "deploy", api_id, "--stage", "prod", "--description", "v2", "--json").stdout)["deployment"]["deploymentId"]
    assert len({d1, d_dev, d3}) == 3
    assert serve("/prod") == (200, "v2")
    assert serve("/dev") == (200, "v1")

    listed = json.loads(server.cli("api", "deployments", api_id, "--json").stdout)
    by_id = {d["deploymentId"]: d for d in listed}
    assert {d1, d_dev, d3} <= set(by_id), listed
    assert by_id[d3]["description"] == "v2" and by_id[d1]["autoDeployed"] is False
    assert any(d["autoDeployed"] for d in listed)  # the $default stage's
    table = server.cli("api", "deployments", api_id).stdout
    assert d1 in table and d3 in table

    server.cli("api", "rollback", api_id, "--stage", "prod", "--to", d1)
    assert serve("/prod") == (200, "v1")
    assert serve("/dev") == (200, "v1")
    assert serve("") == (200, "v2")
    stages = {s["stageName"]: s for s in json.loads(server.cli("api", "stages", api_id, "--json").stdout)}
    assert stages["prod"]["deploymentId"] == d1
    assert stages["dev"]["deploymentId"] == d_dev
    # Rolling back to something that is not a deployment of the API fails and changes nothing.
    r = server.cli("api", "rollback", api_id, "--stage", "prod", "--to", "nosuchdep", check=False)
    assert r.returncode != 0 and "nosuchdep" in (r.stdout + r.stderr)
    assert serve("/prod") == (200, "v1")

    # `api ls --json`: exactly [{"id","name","stages":[{"name","invokeUrl"}]}].
    ls = json.loads(server.cli("api", "ls", "--json").stdout)
    assert isinstance(ls, list)
    for a in ls:
        assert set(a) == {"id", "name", "stages"}, a
        for s in a["stages"]:
            assert set(s) == {"name", "invokeUrl"}, s
    mine = [a for a in ls if a["id"] == api_id]
    assert len(mine) == 1 and mine[0]["name"] == name
    port = gateway_port(server)
    urls = {s["name"]: s["invokeUrl"] for s in mine[0]["stages"]}
    assert urls == {
        "$default": f"http://{api_id}.execute-api.localhost:{port}/",
        "dev": f"http://{api_id}.execute-api.localhost:{port}/dev",
        "prod": f"http://{api_id}.execute-api.localhost:{port}/prod",
    }
    # The printed URLs work with curl as printed.
    assert curl(urls["$default"] + "hello") == "v2"
    assert curl(urls["prod"] + "/hello") == "v1"
    assert curl(urls["dev"] + "/hello") == "v1"
    assert json.loads(curl(urls["prod"] + "/nope")) == NOT_FOUND
    text = server.cli("api", "ls").stdout
    assert api_id in text and urls["prod"] in text

    server.cli("api", "rm", api_id)
    assert api_id not in {a["id"] for a in json.loads(server.cli("api", "ls", "--json").stdout)}


# ---------------------------------------------------------------------------------------------
# 5. Host-based mapping


def test_hosts_custom_domains_and_stage_variables(server, echo_fn):
    c = apigw(server)
    api_id = new_api(server, default_stage=False)
    add_function_route(server, api_id, "GET /who", echo_fn)
    c.create_stage(ApiId=api_id, StageName="prod", StageVariables={"color": "blue", "url": "http://127.0.0.1:9/x?y=1"})
    c.create_stage(ApiId=api_id, StageName="dev", StageVariables={"color": "green"})
    c.create_deployment(ApiId=api_id, StageName="prod")
    c.create_deployment(ApiId=api_id, StageName="dev")

    r = api_call(server, api_id, "GET", "/prod/who")
    assert r.status == 200, r
    ev = r.json()
    assert ev["stageVariables"] == {"color": "blue", "url": "http://127.0.0.1:9/x?y=1"}
    assert ev["requestContext"]["stage"] == "prod"
    assert ev["requestContext"]["domainName"] == api_host(api_id)
    assert ev["requestContext"]["domainPrefix"] == api_id
    assert api_call(server, api_id, "GET", "/dev/who").json()["stageVariables"] == {"color": "green"}
    # No $default stage: a path without a stage prefix finds nothing.
    assert api_call(server, api_id, "GET", "/who").json() == NOT_FOUND

    # Unknown API id, other hosts.
    for host in ("nosuchapi9.execute-api.localhost", "127.0.0.1", f"127.0.0.1:{gateway_port(server)}",
                 "localhost", f"{api_id}.example.test"):
        r = call(server, "GET", "/prod/who", host)
        assert (r.status, r.json()) == (404, NOT_FOUND), (host, r)
        assert r.headers["content-type"] == "application/json"
    # Host names compare case-insensitively, with or without the port.
    r = call(server, "GET", "/prod/who", f"{api_id.upper()}.EXECUTE-API.LOCALHOST:{gateway_port(server)}")
    assert r.status == 200, r

    # A custom domain mapped to the prod stage at its root.
    d1 = f"shop-{uuid.uuid4().hex[:8]}.example.test"
    c.create_domain_name(DomainName=d1)
    m = c.create_api_mapping(DomainName=d1, ApiId=api_id, Stage="prod")
    assert m["ApiId"] == api_id and m["Stage"] == "prod"
    r = call(server, "GET", "/who", d1)
    assert r.status == 200, r
    ev = r.json()
    assert ev["requestContext"]["stage"] == "prod" and ev["stageVariables"]["color"] == "blue"
    assert ev["requestContext"]["domainName"] == d1
    assert call(server, "GET", "/prod/who", d1).json() == NOT_FOUND  # no stage prefix here
    assert call(server, "GET", "/who", d1.upper()).status == 200

    # A mapping key: the stage is served under it, the key removed from the routed path.
    d2 = f"api-{uuid.uuid4().hex[:8]}.example.test"
    c.create_domain_name(DomainName=d2)
    c.create_api_mapping(DomainName=d2, ApiId=api_id, Stage="dev", ApiMappingKey="v1")
    r = call(server, "GET", "/v1/who", d2)
    assert r.status == 200, r
    assert r.json()["requestContext"]["stage"] == "dev" and r.json()["stageVariables"] == {"color": "green"}
    assert call(server, "GET", "/v1x/who", d2).json() == NOT_FOUND
    assert call(server, "GET", "/who", d2).json() == NOT_FOUND
    with pytest.raises(c.exceptions.ConflictException):
        c.create_api_mapping(DomainName=d2, ApiId=api_id, Stage="prod", ApiMappingKey="v1")
    with pytest.raises(c.exceptions.BadRequestException):
        c.create_api_mapping(DomainName=d2, ApiId=api_id, Stage="nosuchstage", ApiMappingKey="v9")
    # "If no path matches the request, API Gateway sends the request to the API that you've
    # mapped to the empty path (none)" (Map API stages to a custom domain name for HTTP APIs).
    c.create_api_mapping(DomainName=d2, ApiId=api_id, Stage="prod")
    r = call(server, "GET", "/v1/who", d2)
    assert r.status == 200 and r.json()["requestContext"]["stage"] == "dev", r
    r = call(server, "GET", "/who", d2)
    assert r.status == 200, r
    assert r.json()["requestContext"]["stage"] == "prod"


# ---------------------------------------------------------------------------------------------
# 6. CORS


CORS = {
    "AllowOrigins": ["https://a.example"],
    "AllowMethods": ["GET", "POST"],
    "AllowHeaders": ["content-type", "x-token"],
    "ExposeHeaders": ["x-id"],
    "MaxAge": 600,
    "AllowCredentials": True,
}


def header_set(value):
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


def test_cors_preflight_and_simple_requests(server):
    c = apigw(server)
    api_id = new_api(server, CorsConfiguration=CORS)
    got = c.get_api(ApiId=api_id)["CorsConfiguration"]
    assert got == CORS, got
    add_mock(server, api_id, "GET /r", headers={"content-type": "text/plain", "x-id": "7",
                                               "access-control-allow-origin": "https://backend.example"})
    add_mock(server, api_id, "POST /r")

    # Preflight, answered by the gateway although no OPTIONS route exists.
    r = api_call(server, api_id, "OPTIONS", "/r", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type, X-Token"})
    assert r.status == 204, r
    assert r.body == b""
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert header_set(r.headers.get("access-control-allow-methods")) == {"get", "post"}
    assert header_set(r.headers.get("access-control-allow-headers")) == {"content-type", "x-token"}
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true"
    # On a path with no route at all too.
    r = api_call(server, api_id, "OPTIONS", "/no/route/here", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "GET"})
    assert r.status == 204 and r.headers["access-control-allow-origin"] == "https://a.example", r

    # A disallowed origin gets no allow-origin header.
    for origin in ("https://evil.example", "http://a.example", "null"):
        r = api_call(server, api_id, "OPTIONS", "/r", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers, (origin, r)
        assert "access-control-allow-credentials" not in r.headers, (origin, r)
        r = api_call(server, api_id, "GET", "/r", headers={"Origin": origin})
        assert r.status == 200 and "access-control-allow-origin" not in r.headers, (origin, r)
    # A method or header outside the configuration: no grant either.
    r = api_call(server, api_id, "OPTIONS", "/r", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "DELETE"})
    assert "access-control-allow-origin" not in r.headers, r
    r = api_call(server, api_id, "OPTIONS", "/r", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-other"})
    assert "access-control-allow-origin" not in r.headers, r

    # A normal request with an allowed Origin; the backend's own CORS headers are ignored.
    r = api_call(server, api_id, "GET", "/r", headers={"Origin": "https://a.example"})
    assert (r.status, r.text) == (200, "GET /r"), r
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert header_set(r.headers.get("access-control-expose-headers")) == {"x-id"}
    assert r.headers["x-id"] == "7"
    r = api_call(server, api_id, "POST", "/r", headers={"Origin": "https://a.example"}, body=b"{}")
    assert r.status == 200 and r.headers["access-control-allow-origin"] == "https://a.example"
    # Without an Origin header, no CORS headers at all.
    r = api_call(server, api_id, "GET", "/r")
    assert r.status == 200
    assert not [h for h in r.headers if h.startswith("access-control-")], r
    # An OPTIONS request that is not a preflight is routed like any other (no route: 404).
    r = api_call(server, api_id, "OPTIONS", "/r")
    assert (r.status, r.json()) == (404, NOT_FOUND), r
    c.delete_api(ApiId=api_id)


# ---------------------------------------------------------------------------------------------
# 7. Request ids


def test_every_response_has_a_distinct_request_id(server, echo_fn):
    api_id = new_api(server, CorsConfiguration={"AllowOrigins": ["https://a.example"]})
    add_mock(server, api_id, "GET /ok")
    add_function_route(server, api_id, "GET /fn/{x}", echo_fn)
    seen = []

    def rid(r, status):
        assert r.status == status, r
        v = r.headers.get("apigw-requestid")
        assert v and re.fullmatch(r"[A-Za-z0-9+/=]{8,}", v), r
        seen.append(v)
        return v

    rid(api_call(server, api_id, "GET", "/ok"), 200)
    rid(api_call(server, api_id, "GET", "/ok"), 200)
    rid(api_call(server, api_id, "GET", "/nope"), 404)
    rid(call(server, "GET", "/ok", "nosuchapi7.execute-api.localhost"), 404)
    rid(call(server, "GET", "/ok", "127.0.0.1"), 404)
    rid(api_call(server, api_id, "GET", "/a//b"), 400)
    rid(api_call(server, api_id, "GET", "/fn/bad"), 502)
    rid(api_call(server, api_id, "GET", "/fn/boom"), 500)
    r = api_call(server, api_id, "GET", "/fn/ok")
    fn_id = rid(r, 200)
    assert r.json()["requestContext"]["requestId"] == fn_id  # the event carries the same id
    rid(api_call(server, api_id, "OPTIONS", "/ok", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "GET"}), 204)
    assert len(set(seen)) == len(seen), seen
    apigw(server).delete_api(ApiId=api_id)


# ---------------------------------------------------------------------------------------------
# 8. Access logs

CUSTOM_FORMAT = ('{"rid":"$context.requestId","status":"$context.status","route":"$context.routeKey",'
                 '"il":"$context.integrationLatency","ip":"$context.identity.sourceIp",'
                 '"method":"$context.httpMethod","proto":"$context.protocol","len":"$context.responseLength",'
                 '"time":"$context.requestTime","err":"$context.integrationErrorMessage"}')
REQUEST_TIME_RE = r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000"


def read_log_lines(server, api_id, stage, want_ids, timeout=5):
    path = os.path.join(server.data_dir, "gateway-logs", api_id, f"{stage}.log")
    lines = {}
    deadline = time.time() + timeout
    while True:
        lines = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        doc = json.loads(line)  # every line is JSON
                        lines[doc.get("rid") or doc.get("requestId")] = doc
        if set(want_ids) <= set(lines) or time.time() >= deadline:
            return lines
        time.sleep(0.1)


def test_access_logs_default_and_custom_formats(server, echo_fn):
    c = apigw(server)
    api_id = new_api(server, default_stage=False)
    add_mock(server, api_id, "GET /x", body="hello")
    add_function_route(server, api_id, "GET /fn/{x}", echo_fn)

    # The CLI's default format.
    server.cli("api", "deploy", api_id, "--stage", "prod", "--access-log-format", "default")
    stage = c.get_stage(ApiId=api_id, StageName="prod")
    assert "$context.requestId" in stage["AccessLogSettings"]["Format"]
    r1 = api_call(server, api_id, "GET", "/prod/x")
    r2 = api_call(server, api_id, "POST", "/prod/missing", body=b"abc")
    assert (r1.status, r2.status) == (200, 404)
    id1, id2 = r1.headers["apigw-requestid"], r2.headers["apigw-requestid"]
    lines = read_log_lines(server, api_id, "prod", [id1, id2])
    assert set(lines) >= {id1, id2}, lines
    a, b = lines[id1], lines[id2]
    assert set(a) == {"requestId", "ip", "requestTime", "httpMethod", "routeKey", "status", "protocol",
                      "responseLength", "integrationLatency", "integrationError"}, a
    assert (a["httpMethod"], a["routeKey"], a["status"], a["protocol"], a["ip"]) == ("GET", "GET /x", "200", "HTTP/1.1", "127.0.0.1")
    assert a["responseLength"] == "5"
    assert re.fullmatch(REQUEST_TIME_RE, a["requestTime"]), a
    assert (b["httpMethod"], b["routeKey"], b["status"]) == ("POST", "-", "404")

    # A custom format through update_stage.
    c.update_stage(ApiId=api_id, StageName="prod", AccessLogSettings={
        "DestinationArn": "arn:aws:logs:us-east-1:000000000000:log-group:x", "Format": CUSTOM_FORMAT})
    got = c.get_stage(ApiId=api_id, StageName="prod")["AccessLogSettings"]
    assert got == {"DestinationArn": "arn:aws:logs:us-east-1:000000000000:log-group:x", "Format": CUSTOM_FORMAT}
    rs = [api_call(server, api_id, "GET", "/prod/x"),
          api_call(server, api_id, "GET", "/prod/fn/ok"),
          api_call(server, api_id, "GET", "/prod/fn/boom"),
          api_call(server, api_id, "GET", "/prod/nope")]
    assert [r.status for r in rs] == [200, 200, 500, 404], rs
    ids = [r.headers["apigw-requestid"] for r in rs]
    lines = read_log_lines(server, api_id, "prod", ids)
    assert set(ids) <= set(lines), (ids, lines)
    for r, i in zip(rs, ids):
        line = lines[i]
        assert set(line) == {"rid", "status", "route", "il", "ip", "method", "proto", "len", "time", "err"}, line
        assert line["status"] == str(r.status) and line["ip"] == "127.0.0.1", line
        assert line["method"] == "GET" and line["proto"] == "HTTP/1.1", line
        assert re.fullmatch(REQUEST_TIME_RE, line["time"]), line
        if "content-length" in r.headers:
            assert line["len"] == r.headers["content-length"], (line, r.headers)
    mock_line, fn_line, boom_line, miss_line = (lines[i] for i in ids)
    assert (mock_line["route"], mock_line["len"], mock_line["err"]) == ("GET /x", "5", "-")
    assert fn_line["route"] == "GET /fn/{x}" and re.fullmatch(r"\d+", fn_line["il"]), fn_line
    assert fn_line["err"] == "-"
    assert boom_line["route"] == "GET /fn/{x}" and boom_line["err"] not in ("-", ""), boom_line
    assert re.fullmatch(r"\d+", boom_line["il"]), boom_line
    assert miss_line["route"] == "-" and miss_line["status"] == "404"

    # A format without $context.requestId is refused, and the stage keeps its format.
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.update_stage(ApiId=api_id, StageName="prod", AccessLogSettings={"Format": '{"s":"$context.status"}'})
    assert "$context.requestId" in err(e)[1]
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.update_stage(ApiId=api_id, StageName="prod", AccessLogSettings={"Format": "$context.requestId $context.nope"})
    assert "$context.nope" in err(e)[1]
    r = server.cli("api", "deploy", api_id, "--stage", "prod", "--access-log-format", "$context.status", check=False)
    assert r.returncode != 0 and "requestId" in (r.stdout + r.stderr)
    assert c.get_stage(ApiId=api_id, StageName="prod")["AccessLogSettings"]["Format"] == CUSTOM_FORMAT
    c.delete_api(ApiId=api_id)


# ---------------------------------------------------------------------------------------------
# 9. Metrics


def gateway_samples(server, api_id):
    text = requests.get(server.endpoint + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(nimbus_gateway_\w+)\{api="([^"]*)",stage="((?:[^"\\]|\\.)*)",route="((?:[^"\\]|\\.)*)"(?:,le="[^"]*")?\} (\S+)$', line)
        if m and m.group(2) == api_id and "le=" not in line:
            out[(m.group(1), m.group(3), m.group(4))] = float(m.group(5))
    return out


def test_route_metrics_count_statuses_and_latencies(server, echo_fn):
    api_id = new_api(server)
    add_mock(server, api_id, "GET /x", body="x")
    add_function_route(server, api_id, "GET /fn/{x}", echo_fn)
    statuses = [api_call(server, api_id, "GET", "/x").status for _ in range(3)]
    statuses += [api_call(server, api_id, "GET", "/nope").status, api_call(server, api_id, "DELETE", "/x").status]
    statuses += [api_call(server, api_id, "GET", "/fn/ok").status, api_call(server, api_id, "GET", "/fn/boom").status,
                 api_call(server, api_id, "GET", "/fn/bad").status]
    assert statuses == [200, 200, 200, 404, 404, 200, 500, 502]
    s = gateway_samples(server, api_id)
    st = "$default"
    expected = {
        ("nimbus_gateway_requests_total", st, "GET /x"): 3,
        ("nimbus_gateway_4xx_total", st, "GET /x"): 0,
        ("nimbus_gateway_5xx_total", st, "GET /x"): 0,
        ("nimbus_gateway_latency_seconds_count", st, "GET /x"): 3,
        ("nimbus_gateway_integration_latency_seconds_count", st, "GET /x"): 0,  # a mock calls nothing
        ("nimbus_gateway_requests_total", st, "-"): 2,
        ("nimbus_gateway_4xx_total", st, "-"): 2,
        ("nimbus_gateway_5xx_total", st, "-"): 0,
        ("nimbus_gateway_latency_seconds_count", st, "-"): 2,
        ("nimbus_gateway_requests_total", st, "GET /fn/{x}"): 3,
        ("nimbus_gateway_4xx_total", st, "GET /fn/{x}"): 0,
        ("nimbus_gateway_5xx_total", st, "GET /fn/{x}"): 2,
        ("nimbus_gateway_latency_seconds_count", st, "GET /fn/{x}"): 3,
        ("nimbus_gateway_integration_latency_seconds_count", st, "GET /fn/{x}"): 3,
    }
    got = {k: s.get(k) for k in expected}
    assert got == expected, s
    assert s[("nimbus_gateway_latency_seconds_sum", st, "GET /x")] >= 0
    assert s[("nimbus_gateway_integration_latency_seconds_sum", st, "GET /fn/{x}")] > 0
    # Requests for unknown APIs are not counted under any API; a deleted API's series go.
    call(server, "GET", "/x", "nosuchapi5.execute-api.localhost")
    assert 'api="nosuchapi5"' not in requests.get(server.endpoint + "/metrics", timeout=10).text
    apigw(server).delete_api(ApiId=api_id)
    assert gateway_samples(server, api_id) == {}


# ---------------------------------------------------------------------------------------------
# 10. TLS


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-days", "1", "-keyout", str(key), "-out", str(cert),
                        "-addext", "subjectAltName=DNS:localhost,DNS:*.execute-api.localhost,IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return str(cert), str(key)


def test_tls_termination_with_a_self_signed_certificate(new_server, tmp_path):
    cert, key = make_cert(tmp_path)
    s = new_server("--tls-cert", cert, "--tls-key", key)
    assert s.gateway.startswith("https://127.0.0.1:"), s.gateway
    port = urllib.parse.urlsplit(s.gateway).port
    api_id = new_api(s)
    add_mock(s, api_id, "GET /secure", body="over tls")
    assert apigw(s).get_api(ApiId=api_id)["ApiEndpoint"] == f"https://{api_id}.execute-api.localhost:{port}"

    r = requests.get(f"https://127.0.0.1:{port}/secure", headers={"Host": api_host(api_id)}, verify=cert, timeout=30)
    assert (r.status_code, r.text) == (200, "over tls"), r.text
    assert r.headers.get("apigw-requestid")
    r = requests.get(f"https://127.0.0.1:{port}/nope", headers={"Host": api_host(api_id)}, verify=cert, timeout=30)
    assert (r.status_code, r.json()) == (404, NOT_FOUND)
    # Without trusting the certificate, the client refuses it.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/secure", headers={"Host": api_host(api_id)}, timeout=30)
    # curl with the invoke URL as printed (HTTP/2 by ALPN) and as HTTP/1.1.
    url = f"https://{api_id}.execute-api.localhost:{port}/secure"
    assert curl(url, "--cacert", cert) == "over tls"
    assert curl(url, "--cacert", cert, "--http1.1") == "over tls"
    out = curl(url, "--cacert", cert, "-o", "/dev/null", "-w", "%{http_version}")
    assert out == "2", out
    # Plain HTTP to the TLS listener does not get a response served.
    raw = raw_exchange(s, f"GET /secure HTTP/1.1\r\nHost: {api_host(api_id)}\r\n\r\n".encode(), read_timeout=5)
    assert b"over tls" not in raw
    r = requests.get(f"https://127.0.0.1:{port}/secure", headers={"Host": api_host(api_id)}, verify=cert, timeout=30)
    assert r.status_code == 200


def test_bad_tls_files_stop_nimbus_up_naming_the_file(tmp_path):
    cert, key = make_cert(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    missing = str(tmp_path / "missing-cert.pem")
    for args, named in (
        (["--tls-cert", missing, "--tls-key", key], missing),
        (["--tls-cert", cert, "--tls-key", str(tmp_path / "missing-key.pem")], str(tmp_path / "missing-key.pem")),
        (["--tls-cert", str(garbage), "--tls-key", key], str(garbage)),
        (["--tls-cert", cert, "--tls-key", str(garbage)], str(garbage)),
    ):
        r = subprocess.run([NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0",
                            "--data-dir", str(tmp_path / "d"), *args],
                           capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode != 0, (args, out)
        assert named in out, (args, out)
        assert "nimbus listening" not in out, out
    r = subprocess.run([NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0",
                        "--data-dir", str(tmp_path / "d"), "--tls-cert", cert],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "tls" in (r.stdout + r.stderr).lower()


# ---------------------------------------------------------------------------------------------
# 11. Bad input on the data plane


@pytest.fixture(scope="module")
def catch_all(server):
    """An API whose every path is routed to a mock answering `routed`."""
    api_id = new_api(server)
    add_mock(server, api_id, "ANY /{proxy+}", body="routed")
    healthy(server, api_id, "/ok", "routed")
    return api_id


def test_malformed_request_lines_are_refused_without_harm(server, catch_all):
    api_id, host = catch_all, api_host(catch_all)

    # A request line that is not HTTP.
    for junk in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
                 b"GET /ok HTTP/9.9\r\nHost: x\r\n\r\n", b"GET /ok HTTP/1.1\r\nHost: " + host.encode() + b"\r\nBad Header\r\n\r\n"):
        raw = raw_exchange(server, junk, read_timeout=5)
        assert raw == b"" or status_of(raw) in (400, 505), (junk, raw[:200])
        assert b"routed" not in raw
    healthy(server, api_id, "/ok", "routed")


def test_a_100kb_header_is_refused(server, catch_all):
    api_id, host = catch_all, api_host(catch_all)
    # A 100 KB header: API Gateway bounds the request line and headers to 10 KB for HTTP APIs.
    big = f"GET /ok HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * 100_000}\r\nConnection: close\r\n\r\n".encode()
    raw = raw_exchange(server, big, read_timeout=10)
    assert raw == b"" or status_of(raw) in (400, 431), raw[:300]
    assert b"routed" not in raw, raw[:300]
    healthy(server, api_id, "/ok", "routed")


def test_path_traversal_and_empty_segments_are_400_before_routing(server, catch_all):
    api_id = catch_all
    # Path traversal and empty segments: 400 naming the problem, before any route is consulted.
    for path, needle in (("/../x", "`..`"), ("/%2e%2e/x", "%2e%2e"), ("/a/%2E%2E/b", "%2E%2E"), ("/a/./b", "`.`"),
                         ("/a//b", "empty"), ("//x", "empty"), ("/a/..%2Fetc", "..%2Fetc"), ("/a/%zz", "percent"),
                         ("/a/%00", "NUL")):
        r = api_call(server, api_id, "GET", path)
        assert r.status == 400, (path, r)
        assert r.headers.get("content-type") == "application/json", (path, r)
        msg = r.json()["message"]
        assert needle in msg and r.text != "routed", (path, msg)
        assert r.headers.get("apigw-requestid")
    healthy(server, api_id, "/ok", "routed")


def test_a_body_over_10mb_is_413(server, catch_all):
    api_id, host = catch_all, api_host(catch_all)
    # A body over 10 MB, announced and sent: 413 Request Entity Too Large.
    limit = 10 * 1024 * 1024
    head = (f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", gateway_port(server)), timeout=20)
    received = []

    def reader():
        deadline = time.time() + 20
        buf = b""
        while time.time() < deadline:
            try:
                chunk = sock.recv(65536)
            except (OSError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf and _complete(buf):
                break
        received.append(buf)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        sock.sendall(head)
        chunk = b"z" * 65536
        sent = 0
        while sent < limit + 1:
            n = min(len(chunk), limit + 1 - sent)
            sock.sendall(chunk[:n])
            sent += n
    except OSError:
        pass  # the server answered and stopped reading: fine
    t.join(25)
    sock.close()
    raw = received[0] if received else b""
    assert status_of(raw) == 413, raw[:300]
    assert json.loads(raw.partition(b"\r\n\r\n")[2]) == {"message": "Request Entity Too Large"}
    assert re.search(rb"(?im)^apigw-requestid: \S+", raw)
    # Exactly 10 MB is accepted.
    r = requests.post(f"{server.gateway}/upload", data=b"y" * limit, headers={"Host": host}, timeout=60)
    assert (r.status_code, r.text) == (200, "routed")
    healthy(server, api_id, "/ok", "routed")


def test_chunked_body_over_10mb_to_a_function_is_413(server, echo_fn):
    api_id = new_api(server)
    add_function_route(server, api_id, "POST /fn", echo_fn)

    def gen():
        block = b"q" * (1024 * 1024)
        for _ in range(11):
            yield block

    try:
        r = requests.post(f"{server.gateway}/fn", data=gen(), headers={"Host": api_host(api_id)}, timeout=60)
        assert (r.status_code, r.json()) == (413, {"message": "Request Entity Too Large"}), r.text[:300]
    except requests.exceptions.ConnectionError:
        pytest.fail("the gateway closed the connection instead of answering 413")
    r = requests.post(f"{server.gateway}/fn", data=b"small", headers={"Host": api_host(api_id), "Content-Type": "text/plain"}, timeout=60)
    assert r.status_code == 200 and r.json()["body"] == "small"
