"""The gateway's mapping between HTTP and integrations, against the real server.

1. The events a function integration receives (payload format 2.0 and 1.0), compared field by
   field with the example events of AWS's "Working with AWS Lambda proxy integrations for HTTP
   APIs", plus the cases those examples do not show (several values, cookies, binary, JSON and
   empty bodies, percent-encoded paths, named and `$default` stages).
2. How a function's result becomes the HTTP response (the documented 2.0 and 1.0 rules, and the
   5xx answers for results that break them).
3. The HTTP_PROXY integration against a real backend this module starts on loopback.

Every function is a real python function deployed with boto3; every API is built with boto3's
apigatewayv2 client against the management API; requests go to the gateway listener with the
Host `{apiId}.execute-api.localhost`.
"""

import base64
import calendar
import hashlib
import http.client
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from conftest import create, unique

ACCOUNT_ID = "000000000000"
INTERNAL_ERROR = {"message": "Internal Server Error"}
TIMED_OUT = {"message": "Endpoint request timed out"}
UNAVAILABLE = {"message": "Service Unavailable"}

# ---------------------------------------------------------------------------------------------
# Helpers

ECHO = """
import json
def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
"""

SLEEPER = """
import time
def handler(event, context):
    time.sleep(3)
    return {"statusCode": 200, "body": "late"}
"""

RAISES = """
def handler(event, context):
    raise ValueError("boom")
"""


def fixed_result(value):
    """A function that returns `value` (any JSON value) as is."""
    return f"import json\nRESULT = json.loads({json.dumps(value)!r})\ndef handler(event, context):\n    return RESULT\n"


class Resp:
    def __init__(self, status, msg, body):
        self.status = status
        self.msg = msg
        self.body = body

    def header(self, name):
        return self.msg.get(name)

    def headers_all(self, name):
        return self.msg.get_all(name) or []

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Resp({self.status}, {dict(self.msg.items())}, {self.body[:300]!r})"


def call(server, api_id, method, path, headers=(), body=None, timeout=30):
    """One request to the gateway with exactly these headers (repeats allowed) and no others but
    Host and, with a body, Content-Length."""
    url = urlsplit(server.gateway)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{api_id}.execute-api.localhost")
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return Resp(r.status, r.msg, r.read())
    finally:
        conn.close()


def event_of(resp):
    """The event the echo function received, from its response."""
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/json", resp
    return resp.json()


def differences(actual, expected, at="event"):
    """Every place where `actual` differs from `expected`, field by field."""
    out = []
    if isinstance(actual, dict) and isinstance(expected, dict):
        for key in expected:
            if key not in actual:
                out.append(f"{at}.{key} is missing (expected {expected[key]!r})")
            else:
                out.extend(differences(actual[key], expected[key], f"{at}.{key}"))
        for key in actual:
            if key not in expected:
                out.append(f"{at}.{key} is unexpected ({actual[key]!r})")
    elif actual != expected or type(actual) is not type(expected):
        out.append(f"{at} is {actual!r}, expected {expected!r}")
    return out


def assert_same(actual, expected):
    diffs = differences(actual, expected)
    assert not diffs, "\n".join(diffs) + "\n\nwhole event: " + json.dumps(actual, indent=1)


def aws_time(epoch_ms):
    """API Gateway's request time format, UTC: 12/Mar/2020:19:03:58 +0000."""
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms // 1000))


def check_clock(text, epoch_ms, before, after):
    """`time`/`timeEpoch` are necessarily the request's own: they must describe one instant, taken
    while the request was in flight (this machine's clock on both sides)."""
    assert isinstance(epoch_ms, int), epoch_ms
    assert int(before * 1000) - 1000 <= epoch_ms <= int(after * 1000) + 1000, (epoch_ms, before, after)
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", text), text
    assert text == aws_time(epoch_ms), (text, epoch_ms)
    assert calendar.timegm(time.strptime(text, "%d/%b/%Y:%H:%M:%S +0000")) == epoch_ms // 1000


def free_port():
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def gw(server):
    return boto3.client(
        "apigatewayv2",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60),
    )


@pytest.fixture(scope="module")
def lam_m(server):
    return server.lambda_client()


def make_api(gw, routes, stages=(("$default", None),)):
    """An HTTP API with `routes` ({route key: create_integration kwargs}) and auto-deployed stages
    ((name, stage variables or None), ...); returns its id."""
    api_id = gw.create_api(Name=unique("api"), ProtocolType="HTTP")["ApiId"]
    for route_key, integration in routes.items():
        i = gw.create_integration(ApiId=api_id, **integration)
        gw.create_route(ApiId=api_id, RouteKey=route_key, Target="integrations/" + i["IntegrationId"])
    for name, variables in stages:
        extra = {"StageVariables": variables} if variables else {}
        gw.create_stage(ApiId=api_id, StageName=name, AutoDeploy=True, **extra)
    return api_id


def function_integration(name, version="2.0", **kw):
    return dict(IntegrationType="AWS_PROXY", IntegrationUri=name, PayloadFormatVersion=version, **kw)


def http_integration(uri, **kw):
    return dict(IntegrationType="HTTP_PROXY", IntegrationUri=uri, IntegrationMethod="ANY",
                PayloadFormatVersion="1.0", **kw)


@pytest.fixture(scope="module")
def echo(lam_m):
    return create(lam_m, {"app.py": ECHO}, Timeout=10)


STAGE_VARIABLES = {"stageVariable1": "value1", "stageVariable2": "value2"}


@pytest.fixture(scope="module")
def api_v2(gw, echo):
    """`$default` route → echo (2.0) on the `$default` stage, with the documented stage variables."""
    return make_api(gw, {"$default": function_integration(echo)}, stages=(("$default", STAGE_VARIABLES),))


@pytest.fixture(scope="module")
def api_v1(gw, echo):
    """`GET /my/path` and `$default` → echo (1.0) on the `$default` stage."""
    return make_api(gw, {
        "GET /my/path": function_integration(echo, "1.0"),
        "$default": function_integration(echo, "1.0"),
    })


# ---------------------------------------------------------------------------------------------
# 1. Events


def test_v2_event_matches_the_documented_example(server, api_v2):
    # The 2.0 example event of "Working with AWS Lambda proxy integrations for HTTP APIs".
    documented = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/my/path",
        "rawQueryString": "parameter1=value1&parameter1=value2&parameter2=value",
        "cookies": ["cookie1", "cookie2"],
        "headers": {"header1": "value1", "header2": "value1,value2"},
        "queryStringParameters": {"parameter1": "value1,value2", "parameter2": "value"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "authentication": {
                "clientCert": {
                    "clientCertPem": "CERT_CONTENT",
                    "subjectDN": "www.example.com",
                    "issuerDN": "Example issuer",
                    "serialNumber": "a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1",
                    "validity": {"notBefore": "May 28 12:30:02 2019 GMT", "notAfter": "Aug  5 09:36:04 2021 GMT"},
                }
            },
            "authorizer": {
                "jwt": {"claims": {"claim1": "value1", "claim2": "value2"}, "scopes": ["scope1", "scope2"]}
            },
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "http": {
                "method": "POST",
                "path": "/my/path",
                "protocol": "HTTP/1.1",
                "sourceIp": "IP",
                "userAgent": "agent",
            },
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": "Hello from Lambda",
        "pathParameters": {"parameter1": "value1"},
        "isBase64Encoded": False,
        "stageVariables": {"stageVariable1": "value1", "stageVariable2": "value2"},
    }
    body = b"Hello from Lambda"
    before = time.time()
    resp = call(server, api_v2, "POST", "/my/path?parameter1=value1&parameter1=value2&parameter2=value", [
        ("Header1", "value1"),
        ("Header2", "value1"),
        ("Header2", "value2"),
        ("Cookie", "cookie1; cookie2"),
        ("Content-Type", "text/plain"),
        ("User-Agent", "agent"),
    ], body)
    after = time.time()
    event = event_of(resp)
    ctx = event.get("requestContext", {})
    request_id = resp.header("apigw-requestid")
    assert request_id, resp

    expected = json.loads(json.dumps(documented))
    exp_ctx = expected["requestContext"]
    # Accepted differences, each because it necessarily differs here:
    # - Ids, names and addresses of this server and this request: accountId is Nimbus's fixed
    #   account, apiId/domainName/domainPrefix are this API's, sourceIp is the loopback client,
    #   requestId is the one the gateway answers in apigw-requestid.
    exp_ctx["accountId"] = ACCOUNT_ID
    exp_ctx["apiId"] = api_v2
    exp_ctx["domainName"] = f"{api_v2}.execute-api.localhost"
    exp_ctx["domainPrefix"] = api_v2
    exp_ctx["http"]["sourceIp"] = "127.0.0.1"
    exp_ctx["requestId"] = request_id
    # - time/timeEpoch are the request's own (checked below to be one instant, now). The
    #   example's two do not even agree (1583348638390 is 04/Mar/2020, not 12/Mar).
    check_clock(ctx.get("time"), ctx.get("timeEpoch"), before, after)
    exp_ctx["time"] = ctx.get("time")
    exp_ctx["timeEpoch"] = ctx.get("timeEpoch")
    # - No mutual TLS on this listener, so no `authentication`; no authorizer on the route, so
    #   no `authorizer` (AWS leaves it out then).
    del exp_ctx["authentication"]
    del exp_ctx["authorizer"]
    # - The `$default` route captures no path parameters, so there is no `pathParameters` (a
    #   route that captured `parameter1` could not also be `$default` with rawPath /my/path).
    del expected["pathParameters"]
    # - The example's headers are schematic; a real request also carries host and
    #   content-length, and this one sends the user agent the example shows in
    #   requestContext.http and a text content type (so the body is text, as shown).
    expected["headers"].update({
        "host": f"{api_v2}.execute-api.localhost",
        "content-length": str(len(body)),
        "content-type": "text/plain",
        "user-agent": "agent",
    })
    assert_same(event, expected)


def test_v1_event_matches_the_documented_example(server, api_v1):
    # The 1.0 example event of "Working with AWS Lambda proxy integrations for HTTP APIs".
    documented = {
        "version": "1.0",
        "resource": "/my/path",
        "path": "/my/path",
        "httpMethod": "GET",
        "headers": {"Header1": "value1", "Header2": "value2"},
        "multiValueHeaders": {"Header1": ["value1"], "Header2": ["value1", "value2"]},
        "queryStringParameters": {"parameter1": "value1", "parameter2": "value"},
        "multiValueQueryStringParameters": {"parameter1": ["value1", "value2"], "parameter2": ["value"]},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "id",
            "authorizer": {"claims": None, "scopes": None},
            "domainName": "id.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "id",
            "extendedRequestId": "request-id",
            "httpMethod": "GET",
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": "IP",
                "user": None,
                "userAgent": "user-agent",
                "userArn": None,
                "clientCert": {
                    "clientCertPem": "CERT_CONTENT",
                    "subjectDN": "www.example.com",
                    "issuerDN": "Example issuer",
                    "serialNumber": "a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1:a1",
                    "validity": {"notBefore": "May 28 12:30:02 2019 GMT", "notAfter": "Aug  5 09:36:04 2021 GMT"},
                },
            },
            "path": "/my/path",
            "protocol": "HTTP/1.1",
            "requestId": "id=",
            "requestTime": "04/Mar/2020:19:15:17 +0000",
            "requestTimeEpoch": 1583349317135,
            "resourceId": None,
            "resourcePath": "/my/path",
            "stage": "$default",
        },
        "pathParameters": None,
        "stageVariables": None,
        "body": "Hello from Lambda!",
        "isBase64Encoded": False,
    }
    body = b"Hello from Lambda!"
    before = time.time()
    resp = call(server, api_v1, "GET", "/my/path?parameter1=value1&parameter1=value2&parameter2=value", [
        ("Header1", "value1"),
        ("Header2", "value1"),
        ("Header2", "value2"),
        ("User-Agent", "user-agent"),
        ("Content-Type", "text/plain"),
    ], body)
    after = time.time()
    event = event_of(resp)
    ctx = event.get("requestContext", {})
    request_id = resp.header("apigw-requestid")
    assert request_id, resp

    expected = json.loads(json.dumps(documented))
    exp_ctx = expected["requestContext"]
    # Accepted differences, each because it necessarily differs here (see the 2.0 test too):
    exp_ctx["accountId"] = ACCOUNT_ID
    exp_ctx["apiId"] = api_v1
    exp_ctx["domainName"] = f"{api_v1}.execute-api.localhost"
    exp_ctx["domainPrefix"] = api_v1
    exp_ctx["identity"]["sourceIp"] = "127.0.0.1"
    exp_ctx["requestId"] = request_id
    # - extendedRequestId is an id of this request too; HTTP APIs have no separate extended id,
    #   so the gateway repeats the request id (event.rs).
    exp_ctx["extendedRequestId"] = request_id
    check_clock(ctx.get("requestTime"), ctx.get("requestTimeEpoch"), before, after)
    exp_ctx["requestTime"] = ctx.get("requestTime")
    exp_ctx["requestTimeEpoch"] = ctx.get("requestTimeEpoch")
    # - No authorizer on the route and no mutual TLS: no `authorizer`, no `identity.clientCert`.
    del exp_ctx["authorizer"]
    del exp_ctx["identity"]["clientCert"]
    # - resourceId: the example's null is schematic; HTTP APIs report the route key (event.rs).
    exp_ctx["resourceId"] = "GET /my/path"
    # - Header names: the guide says of these examples "All header names are lowercase", though
    #   the 1.0 example spells Header1/Header2; plus the headers a real request carries (host,
    #   content-length) and those this one sends (user agent, a text content type so the body
    #   is text as shown).
    extra = {
        "host": f"{api_v1}.execute-api.localhost",
        "content-length": str(len(body)),
        "user-agent": "user-agent",
        "content-type": "text/plain",
    }
    expected["headers"] = {"header1": "value1", "header2": "value2", **extra}
    expected["multiValueHeaders"] = {"header1": ["value1"], "header2": ["value1", "value2"],
                                     **{k: [v] for k, v in extra.items()}}
    # - queryStringParameters: the example shows the first of two values but, for headers, the
    #   last; the gateway takes the last for both, as API Gateway does for REST API events.
    expected["queryStringParameters"]["parameter1"] = "value2"
    assert_same(event, expected)


def test_multi_value_query_strings(server, api_v2, api_v1):
    raw = "a=1&a=2&b=x%20y&c=p+q&d"
    v2 = event_of(call(server, api_v2, "GET", "/q?" + raw))
    assert v2["rawQueryString"] == raw
    assert v2["queryStringParameters"] == {"a": "1,2", "b": "x y", "c": "p q", "d": ""}
    assert "multiValueQueryStringParameters" not in v2

    v1 = event_of(call(server, api_v1, "GET", "/q?" + raw))
    assert v1["queryStringParameters"] == {"a": "2", "b": "x y", "c": "p q", "d": ""}
    assert v1["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x y"], "c": ["p q"], "d": [""]}


def test_no_query_string(server, api_v2, api_v1):
    v2 = event_of(call(server, api_v2, "GET", "/q"))
    assert v2["rawQueryString"] == ""
    assert "queryStringParameters" not in v2
    v1 = event_of(call(server, api_v1, "GET", "/q"))
    assert v1["queryStringParameters"] is None
    assert v1["multiValueQueryStringParameters"] is None


def test_cookies_become_the_cookies_array(server, api_v2, api_v1):
    headers = [("Cookie", "a=1; b=2"), ("Cookie", "c=3"), ("X-Other", "o")]
    v2 = event_of(call(server, api_v2, "GET", "/c", headers))
    assert v2["cookies"] == ["a=1", "b=2", "c=3"]
    assert "cookie" not in v2["headers"]
    assert v2["headers"]["x-other"] == "o"

    # 1.0 has no cookies field: the Cookie header stays a header.
    v1 = event_of(call(server, api_v1, "GET", "/c", headers))
    assert "cookies" not in v1
    assert v1["multiValueHeaders"]["cookie"] == ["a=1; b=2", "c=3"]
    assert v1["headers"]["cookie"] == "c=3"


def test_no_cookies_no_cookies_field(server, api_v2):
    v2 = event_of(call(server, api_v2, "GET", "/c"))
    assert "cookies" not in v2


def test_binary_body_is_base64(server, api_v2, api_v1):
    data = bytes(range(256))
    for api in (api_v2, api_v1):
        event = event_of(call(server, api, "POST", "/upload", [("Content-Type", "image/png")], data))
        assert event["isBase64Encoded"] is True, event
        assert base64.b64decode(event["body"], validate=True) == data


def test_json_body_is_text(server, api_v2, api_v1):
    text = '{"name": "café", "n": [1, 2]}'
    for api in (api_v2, api_v1):
        event = event_of(call(server, api, "POST", "/items", [("Content-Type", "application/json")],
                              text.encode()))
        assert event["isBase64Encoded"] is False, event
        assert event["body"] == text


def test_empty_body(server, api_v2, api_v1):
    v2 = event_of(call(server, api_v2, "POST", "/empty", [("Content-Type", "application/json")], b""))
    assert "body" not in v2, v2
    assert v2["isBase64Encoded"] is False
    v2 = event_of(call(server, api_v2, "GET", "/empty"))
    assert "body" not in v2, v2

    v1 = event_of(call(server, api_v1, "POST", "/empty", [("Content-Type", "application/json")], b""))
    assert "body" in v1 and v1["body"] is None, v1
    assert v1["isBase64Encoded"] is False


def test_unicode_path_arrives_decoded(server, api_v2, api_v1):
    v2 = event_of(call(server, api_v2, "GET", "/caf%C3%A9"))
    assert v2["rawPath"] == "/café"
    assert v2["requestContext"]["http"]["path"] == "/café"
    v1 = event_of(call(server, api_v1, "GET", "/caf%C3%A9"))
    assert v1["path"] == "/café"
    assert v1["requestContext"]["path"] == "/café"
    assert v1["resource"] == "$default"


@pytest.fixture(scope="module")
def api_staged(gw, echo):
    return make_api(gw, {"GET /hello": function_integration(echo)},
                    stages=(("$default", None), ("prod", {"env": "production"})))


def test_named_stage_is_in_raw_path(server, api_staged):
    event = event_of(call(server, api_staged, "GET", "/prod/hello?x=1"))
    assert event["rawPath"] == "/prod/hello"
    assert event["requestContext"]["http"]["path"] == "/prod/hello"
    assert event["requestContext"]["stage"] == "prod"
    assert event["routeKey"] == "GET /hello"
    assert event["requestContext"]["routeKey"] == "GET /hello"
    assert event["stageVariables"] == {"env": "production"}
    assert event["rawQueryString"] == "x=1"


def test_default_stage(server, api_staged):
    event = event_of(call(server, api_staged, "GET", "/hello"))
    assert event["rawPath"] == "/hello"
    assert event["requestContext"]["stage"] == "$default"
    assert event["routeKey"] == "GET /hello"
    assert "stageVariables" not in event


# ---------------------------------------------------------------------------------------------
# 2. Response mapping

PNG = bytes(range(256))

# name → (payload format, the function's result, expected status, expected headers, expected body)
# A body of None means "checked separately" (JSON compared by value).
RESPONSE_CASES = {
    "full": ("2.0", {"statusCode": 201, "headers": {"content-type": "text/plain", "x-custom": "yes"},
                     "body": "created"},
             201, {"content-type": "text/plain", "x-custom": "yes"}, b"created"),
    "cookies": ("2.0", {"statusCode": 200, "headers": {"content-type": "text/plain"},
                        "cookies": ["a=1; Path=/", "b=2"], "body": "ok"},
                200, {"content-type": "text/plain"}, b"ok"),
    "binary": ("2.0", {"statusCode": 200, "headers": {"content-type": "image/png"},
                       "body": base64.b64encode(PNG).decode(), "isBase64Encoded": True},
               200, {"content-type": "image/png"}, PNG),
    "bare-dict": ("2.0", {"message": "Hello from Lambda!", "n": 1},
                  200, {"content-type": "application/json"}, None),
    "bare-string": ("2.0", "hello", 200, {"content-type": "application/json"}, b"hello"),
    "number": ("2.0", 42, 200, {"content-type": "application/json"}, b"42"),
    "null": ("2.0", None, 200, {"content-type": "application/json"}, b"null"),
    "not-found": ("2.0", {"statusCode": 404}, 404, {}, b""),
    # Results that break the rules: 502 Internal Server Error.
    "status-abc": ("2.0", {"statusCode": "abc", "body": "x"}, 502, {"content-type": "application/json"}, None),
    "status-700": ("2.0", {"statusCode": 700, "body": "x"}, 502, {"content-type": "application/json"}, None),
    "headers-not-object": ("2.0", {"statusCode": 200, "headers": "x-a: 1", "body": "x"},
                           502, {"content-type": "application/json"}, None),
    "bad-base64": ("2.0", {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
                   502, {"content-type": "application/json"}, None),
    "header-newline": ("2.0", {"statusCode": 200, "headers": {"x-a": "a\nInjected: 1"}, "body": "x"},
                       502, {"content-type": "application/json"}, None),
    # Payload format 1.0.
    "v1-multi": ("1.0", {"statusCode": 200,
                         "headers": {"content-type": "text/plain", "x-single": "s"},
                         "multiValueHeaders": {"x-multi": ["a", "b"], "set-cookie": ["c=1", "d=2"]},
                         "body": "v1"},
                 200, {"content-type": "text/plain", "x-single": "s"}, b"v1"),
    "v1-no-status": ("1.0", {"headers": {"content-type": "text/plain"}, "body": "x"},
                     502, {"content-type": "application/json"}, None),
}

MALFORMED = {"status-abc", "status-700", "headers-not-object", "bad-base64", "header-newline", "v1-no-status"}


@pytest.fixture(scope="module")
def api_responses(gw, lam_m):
    routes = {}
    for case, (version, result, *_rest) in RESPONSE_CASES.items():
        fn = create(lam_m, {"app.py": fixed_result(result)}, Timeout=10)
        routes[f"GET /r/{case}"] = function_integration(fn, version)
    routes["GET /r/raises"] = function_integration(create(lam_m, {"app.py": RAISES}, Timeout=10))
    return make_api(gw, routes)


@pytest.mark.parametrize("case", list(RESPONSE_CASES))
def test_response_mapping(server, api_responses, case):
    _version, result, status, headers, body = RESPONSE_CASES[case]
    resp = call(server, api_responses, "GET", f"/r/{case}")
    assert resp.status == status, resp
    for name, value in headers.items():
        assert resp.headers_all(name) == [value], (name, resp)
    if case in MALFORMED:
        assert resp.json() == INTERNAL_ERROR, resp
    elif body is None:
        assert resp.json() == result, resp
    else:
        assert resp.body == body, resp
    assert resp.header("apigw-requestid"), resp


def test_response_cookies_become_set_cookie_headers(server, api_responses):
    resp = call(server, api_responses, "GET", "/r/cookies")
    assert resp.status == 200, resp
    assert resp.headers_all("set-cookie") == ["a=1; Path=/", "b=2"], resp


def test_v1_multi_value_headers_repeat(server, api_responses):
    resp = call(server, api_responses, "GET", "/r/v1-multi")
    assert resp.status == 200, resp
    assert resp.headers_all("x-multi") == ["a", "b"], resp
    assert resp.headers_all("set-cookie") == ["c=1", "d=2"], resp
    assert resp.headers_all("x-single") == ["s"], resp


def test_function_error_is_500(server, api_responses):
    resp = call(server, api_responses, "GET", "/r/raises")
    assert resp.status == 500, resp
    assert resp.header("content-type") == "application/json", resp
    assert resp.json() == INTERNAL_ERROR


def test_function_past_the_integration_timeout_is_504(server, gw, lam_m):
    sleeper = create(lam_m, {"app.py": SLEEPER}, Timeout=10)
    api = make_api(gw, {"GET /sleepy": function_integration(sleeper, TimeoutInMillis=1000)})
    resp = call(server, api, "GET", "/sleepy")
    assert resp.status == 504, resp
    assert resp.json() == TIMED_OUT


# ---------------------------------------------------------------------------------------------
# 3. HTTP_PROXY

BIG = 5 * 1024 * 1024
BIG_BODY = bytes(range(256)) * (BIG // 256)


class Backend(BaseHTTPRequestHandler):
    """Echoes what it got as JSON; `/big` answers 5 MB; paths ending in `/slow` answer after 3 s."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            for _ in range(1_000_000):
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self):
        body = self.read_body()
        path, _, query = self.path.partition("?")
        try:
            if path.endswith("/slow"):
                time.sleep(3)
            if path.endswith("/big"):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(BIG_BODY)))
                self.end_headers()
                for i in range(0, len(BIG_BODY), 65536):
                    self.wfile.write(BIG_BODY[i:i + 65536])
                return
            out = json.dumps({
                "method": self.command,
                "path": path,
                "query": query,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "bodyLength": len(body),
                "bodySha256": hashlib.sha256(body).hexdigest(),
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("X-Backend", "yes")
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway gave up (timeout tests)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any


@pytest.fixture(scope="module")
def backend():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    t.join(timeout=10)


@pytest.fixture(scope="module")
def api_proxy(gw, backend):
    base = f"http://127.0.0.1:{backend}"
    return make_api(gw, {
        "ANY /svc/{proxy+}": http_integration(base + "/{proxy}"),
        "ANY /m/{proxy+}": http_integration(base + "/{proxy}", RequestParameters={
            "append:header.x-stage": "$context.stage",
            "overwrite:path": "/fixed/$request.path.proxy",
        }),
        "GET /down": http_integration(f"http://127.0.0.1:{free_port()}/x"),
        "GET /slow": http_integration(base + "/slow", TimeoutInMillis=500),
    }, stages=(("$default", None), ("prod", None)))


def backend_saw(resp):
    assert resp.status == 200, resp
    assert resp.header("x-backend") == "yes", resp
    seen = resp.json()
    headers = {}
    for k, v in seen["headers"]:
        headers.setdefault(k, []).append(v)
    seen["headers"] = headers
    return seen


def forwarded_elements(value):
    """The parameters of each element of a Forwarded header (RFC 7239)."""
    out = []
    for element in value.split(","):
        params = {}
        for pair in element.strip().split(";"):
            k, _, v = pair.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        out.append(params)
    return out


def test_proxy_forwards_path_query_and_headers(server, api_proxy, backend):
    resp = call(server, api_proxy, "GET", "/svc/items/42?a=1&a=2&b=x%20y", [
        ("X-Custom", "keep"),
        ("Connection", "x-drop"),
        ("X-Drop", "1"),
        ("User-Agent", "tester"),
    ])
    seen = backend_saw(resp)
    assert seen["method"] == "GET"
    assert seen["path"] == "/items/42"
    assert seen["query"] == "a=1&a=2&b=x%20y"
    h = seen["headers"]
    assert h["host"] == [f"127.0.0.1:{backend}"]
    assert h["x-custom"] == ["keep"]
    assert h["user-agent"] == ["tester"]
    # Hop-by-hop: Connection and the header it names stay on the client's side.
    assert "x-drop" not in h, h
    assert all("x-drop" not in v.lower() for v in h.get("connection", [])), h
    # The backend learns who the client was.
    assert h["x-forwarded-for"] == ["127.0.0.1"], h
    assert len(h.get("forwarded", [])) == 1, h
    (element,) = forwarded_elements(h["forwarded"][0])
    assert element["for"] == "127.0.0.1", element
    assert element["proto"] == "http", element
    assert element["host"] == f"{api_proxy}.execute-api.localhost", element
    assert resp.header("apigw-requestid"), resp


def test_proxy_other_methods(server, api_proxy):
    seen = backend_saw(call(server, api_proxy, "DELETE", "/svc/items/7"))
    assert seen["method"] == "DELETE"
    assert seen["path"] == "/items/7"
    assert seen["query"] == ""


def test_proxy_streams_a_5mb_request_body(server, api_proxy):
    data = os.urandom(BIG)
    resp = call(server, api_proxy, "POST", "/svc/upload", [("Content-Type", "application/octet-stream")], data,
                timeout=60)
    seen = backend_saw(resp)
    assert seen["method"] == "POST"
    assert seen["path"] == "/upload"
    assert seen["bodyLength"] == BIG
    assert seen["bodySha256"] == hashlib.sha256(data).hexdigest()


def test_proxy_streams_a_5mb_response_body(server, api_proxy):
    resp = call(server, api_proxy, "GET", "/svc/big", timeout=60)
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/octet-stream"
    assert len(resp.body) == BIG
    assert hashlib.sha256(resp.body).hexdigest() == hashlib.sha256(BIG_BODY).hexdigest()


def test_default_route_forwards_the_full_path(server, gw, backend):
    api = make_api(gw, {"$default": http_integration(f"http://127.0.0.1:{backend}")})
    seen = backend_saw(call(server, api, "GET", "/some/deep/path?x=1&y=2"))
    assert seen["path"] == "/some/deep/path"
    assert seen["query"] == "x=1&y=2"

    api = make_api(gw, {"$default": http_integration(f"http://127.0.0.1:{backend}/base")})
    seen = backend_saw(call(server, api, "PUT", "/some/deep/path", [("Content-Type", "text/plain")], b"abc"))
    assert seen["method"] == "PUT"
    assert seen["path"] == "/base/some/deep/path"
    assert seen["bodyLength"] == 3


def test_request_parameter_mapping(server, api_proxy):
    seen = backend_saw(call(server, api_proxy, "GET", "/prod/m/a/b?q=1", [("X-Stage", "client")]))
    assert seen["path"] == "/fixed/a/b"
    assert seen["query"] == "q=1"
    # append keeps the client's value and adds the mapped one.
    assert seen["headers"]["x-stage"] in (["client", "prod"], ["client,prod"], ["client, prod"]), seen["headers"]

    seen = backend_saw(call(server, api_proxy, "GET", "/m/c"))
    assert seen["path"] == "/fixed/c"
    assert seen["headers"]["x-stage"] == ["$default"]


def test_backend_down_is_503(server, api_proxy):
    resp = call(server, api_proxy, "GET", "/down")
    assert resp.status == 503, resp
    assert resp.header("content-type") == "application/json", resp
    assert resp.json() == UNAVAILABLE


def test_slow_backend_is_504(server, api_proxy):
    resp = call(server, api_proxy, "GET", "/slow")
    assert resp.status == 504, resp
    assert resp.header("content-type") == "application/json", resp
    assert resp.json() == TIMED_OUT
