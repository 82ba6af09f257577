"""SigV4: with credentials configured, only requests signed by them get through, whether they
come from boto3 or from Nimbus's own CLI."""

import json
import os
import subprocess
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import NIMBUS_BIN, make_zip, unique

ROLE = "arn:aws:iam::000000000000:role/test"


@pytest.fixture
def authed(new_server):
    return new_server("--access-key", "AK", "--secret-key", "SK")


def client(server, key="AK", secret="SK"):
    return boto3.client(
        "lambda", endpoint_url=server.endpoint, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60),
    )


def raw(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_signed_requests_work_and_bad_ones_are_refused(authed):
    lam = client(authed)
    name = unique("auth")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return {'got': e}\n"})})
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"x": 1}))
    assert json.loads(r["Payload"].read()) == {"got": {"x": 1}}
    # A query string and a path that needs encoding are signed correctly too.
    lam.publish_version(FunctionName=name)
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name, MaxItems=5)["Versions"]] == ["$LATEST", "1"]
    r = lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=b"{}")
    assert r["StatusCode"] == 200

    wrong = client(authed, secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        wrong.invoke(FunctionName=name, Payload=b"{}")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Code"] in ("InvalidSignatureException", "UnrecognizedClientException")
    assert e.value.response["Error"]["Message"]

    unknown = client(authed, key="NOBODY")
    with pytest.raises(ClientError) as e:
        unknown.list_functions()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Code"] in ("UnrecognizedClientException", "InvalidSignatureException")

    # A refused request changed nothing.
    with pytest.raises(ClientError):
        wrong.delete_function(FunctionName=name)
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_unsigned_requests_are_refused(authed):
    for method, path, body in [
        ("GET", "/2015-03-31/functions", None),
        ("POST", "/2015-03-31/functions/x/invocations", b"{}"),
        ("GET", "/nimbus/v1/status", None),
    ]:
        status, headers, data = raw(authed.endpoint + path, method, body)
        assert status == 403, (path, status)
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower.get("x-amzn-errortype"), headers
        assert json.loads(data)["Message"]
    # A forged Authorization header with a bogus signature is refused too.
    status, _, _ = raw(authed.endpoint + "/2015-03-31/functions", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/lambda/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "X-Amz-Date": "20240101T000000Z",
    })
    assert status == 403


def test_healthz_stays_open(authed):
    status, _, data = raw(authed.endpoint + "/healthz")
    assert status == 200
    assert json.loads(data)["status"] == "ok"


def test_code_location_downloads_without_credentials(authed):
    # Lambda's Code.Location is a presigned URL: a plain GET fetches the zip.
    lam = client(authed)
    name = unique("loc")
    zip_bytes = make_zip({"app.py": "def handler(e, c):\n    return 1\n"})
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": zip_bytes})
    location = lam.get_function(FunctionName=name)["Code"]["Location"]
    status, _, data = raw(location)
    assert status == 200 and data == zip_bytes
    # The URL grants that archive only: another name, or a tampered token, is refused.
    base, _, query = location.partition("?")
    status, _, _ = raw(base)
    assert status == 403
    other = base.rsplit("/", 1)[0] + "/" + "0" * 64 + ".zip" + ("?" + query if query else "")
    status, _, _ = raw(other)
    assert status in (403, 404)


def test_cli_signs_with_the_configured_credentials(authed, tmp_path):
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return {'signed': event}\n")
    name = unique("cli-signed")
    creds = ("--access-key", "AK", "--secret-key", "SK")
    authed.cli(*creds, "deploy", str(tmp_path), "--name", name, "--runtime", "python3", "--handler", "app.handler")
    out = authed.cli(*creds, "invoke", name, "--payload", '{"x": 1}')
    assert json.loads(out.stdout) == {"signed": {"x": 1}}
    # Credentials from the environment work the same way.
    env = dict(os.environ, NIMBUS_ENDPOINT=authed.endpoint, NIMBUS_ACCESS_KEY="AK", NIMBUS_SECRET_KEY="SK")
    r = subprocess.run([NIMBUS_BIN, "ls", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and name in r.stdout, r.stderr
    # Without credentials, or with the wrong secret: one clear sentence and a non-zero exit.
    unsigned = authed.cli("ls", check=False)
    assert unsigned.returncode != 0 and "MissingAuthenticationTokenException" in unsigned.stderr
    wrong = authed.cli("--access-key", "AK", "--secret-key", "nope", "ls", check=False)
    assert wrong.returncode != 0 and "InvalidSignatureException" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


def test_sqs_requests_are_verified_and_refused_in_sqs_terms(authed):
    def sqs(key="AK", secret="SK"):
        return boto3.client("sqs", endpoint_url=authed.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}))
    url = sqs().create_queue(QueueName=unique("signed"))["QueueUrl"]
    assert sqs().send_message(QueueUrl=url, MessageBody="ok")["MessageId"]
    for key, secret, code in [("AK", "wrong", "SignatureDoesNotMatch"), ("NOPE", "SK", "InvalidClientTokenId")]:
        with pytest.raises(ClientError) as e:
            sqs(key, secret).send_message(QueueUrl=url, MessageBody="refused")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.value.response["Error"]["Code"] == code, e.value.response["Error"]
    # Unsigned SQS calls are refused too; nothing refused was stored.
    status, headers, body = raw(authed.endpoint + "/", "POST", b"{}", {
        "X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"})
    assert status == 403 and headers.get("x-amzn-query-error", "").startswith("MissingAuthenticationToken")
    got = sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["ok"]
