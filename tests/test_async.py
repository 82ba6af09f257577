"""Durable asynchronous invocation (InvocationType=Event): the event invoke configuration API,
retries with backoff, maximum event age, both destinations with Lambda's record shape, metrics,
and accepted events surviving SIGKILL of the server."""

import http.server
import json
import random
import threading
import time
import urllib.request

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import NimbusServer, create, unique
from lambda_helpers import wait_until

ARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"

SINK = {"app.py": "import json\n\ndef handler(event, context):\n    print('RECORD ' + json.dumps(event))\n    return {}\n"}
OK = {"app.py": "def handler(event, context):\n    print('attempt', context.aws_request_id)\n    return {'done': event}\n"}
FAIL = {"app.py": "def handler(event, context):\n    print('attempt', context.aws_request_id)\n    raise ValueError('boom ' + str(event.get('n')))\n"}


def log_messages(server, name, text):
    url = f"{server.endpoint}/nimbus/v1/functions/{name}/logs?filter={urllib.request.quote(text)}&limit=10000"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)["events"]


def records(server, sink):
    return [json.loads(e["message"].split("RECORD ", 1)[1]) for e in log_messages(server, sink, "RECORD ")]


def wait_records(server, sink, n, timeout=30):
    assert wait_until(lambda: len(records(server, sink)) >= n, timeout), f"{sink} got {records(server, sink)}"
    return records(server, sink)


def async_invoke(lam, name, event):
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event).encode())
    assert r["StatusCode"] == 202
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """A server whose retries wait 200 ms, 400 ms, ... instead of 1 s, 2 s."""
    s = NimbusServer(tmp_path_factory.mktemp("async"), ["--async-retry-base", "200ms"]).start()
    yield s
    s.stop()


def test_event_invoke_config_api(lam):
    fn = create(lam, OK)
    sink = create(lam, SINK)
    with pytest.raises(ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=fn)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"

    put = lam.put_function_event_invoke_config(
        FunctionName=fn, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": ARN.format(sink)}})
    assert put["FunctionArn"] == ARN.format(fn) + ":$LATEST"
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == ARN.format(sink)
    assert "Destination" not in put["DestinationConfig"]["OnSuccess"]

    # Update merges; Put replaces.
    upd = lam.update_function_event_invoke_config(
        FunctionName=fn, DestinationConfig={"OnSuccess": {"Destination": ARN.format(sink)}})
    assert upd["MaximumRetryAttempts"] == 1
    assert upd["DestinationConfig"]["OnSuccess"]["Destination"] == ARN.format(sink)
    assert upd["DestinationConfig"]["OnFailure"]["Destination"] == ARN.format(sink)
    got = lam.get_function_event_invoke_config(FunctionName=fn)
    assert got["DestinationConfig"] == upd["DestinationConfig"]
    again = lam.put_function_event_invoke_config(FunctionName=fn, MaximumRetryAttempts=0)
    assert again["MaximumEventAgeInSeconds"] == 21600 and again["MaximumRetryAttempts"] == 0
    assert "Destination" not in again["DestinationConfig"]["OnFailure"]
    listed = lam.list_function_event_invoke_configs(FunctionName=fn)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [ARN.format(fn) + ":$LATEST"]

    # Out-of-range numbers: boto3 refuses them itself, so they go raw.
    for body, field in [({"MaximumRetryAttempts": 3}, "MaximumRetryAttempts"),
                        ({"MaximumEventAgeInSeconds": 59}, "MaximumEventAgeInSeconds"),
                        ({"MaximumEventAgeInSeconds": 21601}, "MaximumEventAgeInSeconds"),
                        ({"MaximumRetryAttempts": "two"}, "MaximumRetryAttempts"),
                        ({"Nope": 1}, "Nope")]:
        r = requests.put(f"{lam.meta.endpoint_url}/2019-09-25/functions/{fn}/event-invoke-config", json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["x-amzn-errortype"] == "InvalidParameterValueException", body
        assert field in r.text, (body, r.text)
    bad = [
        (dict(DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}),
         "InvalidParameterValueException", "queue"),
        (dict(DestinationConfig={"OnSuccess": {"Destination": ARN.format("no-such-fn")}}),
         "InvalidParameterValueException", "no-such-fn"),
        (dict(DestinationConfig={"OnSuccess": {"Destination": "just-a-name"}}),
         "InvalidParameterValueException", "ARN"),
    ]
    for kw, code, text in bad:
        with pytest.raises(ClientError) as e:
            lam.put_function_event_invoke_config(FunctionName=fn, **kw)
        assert e.value.response["Error"]["Code"] == code, kw
        assert text in e.value.response["Error"]["Message"], (kw, e.value.response["Error"]["Message"])
    # Nothing refused replaced what was stored.
    assert lam.get_function_event_invoke_config(FunctionName=fn)["MaximumRetryAttempts"] == 0
    with pytest.raises(ClientError) as e:
        lam.put_function_event_invoke_config(FunctionName="no-such-fn", MaximumRetryAttempts=1)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.put_function_event_invoke_config(FunctionName=fn, Qualifier="7", MaximumRetryAttempts=1)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"

    lam.delete_function_event_invoke_config(FunctionName=fn)
    with pytest.raises(ClientError) as e:
        lam.delete_function_event_invoke_config(FunctionName=fn)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_success_goes_to_the_on_success_destination(fast):
    lam = fast.lambda_client()
    fn, sink = create(lam, OK), create(lam, SINK)
    lam.put_function_event_invoke_config(
        FunctionName=fn, DestinationConfig={"OnSuccess": {"Destination": ARN.format(sink)}})
    request_id = async_invoke(lam, fn, {"n": 1})
    [rec] = wait_records(fast, sink, 1)
    assert rec["version"] == "1.0"
    assert rec["timestamp"].endswith("Z")
    assert rec["requestContext"] == {
        "requestId": request_id,
        "functionArn": ARN.format(fn) + ":$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert rec["requestPayload"] == {"n": 1}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert rec["responsePayload"] == {"done": {"n": 1}}


def test_failures_are_retried_with_backoff_then_sent_to_on_failure(fast):
    lam = fast.lambda_client()
    fn, sink = create(lam, FAIL), create(lam, SINK)
    lam.put_function_event_invoke_config(
        FunctionName=fn, MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": ARN.format(sink)}})
    request_id = async_invoke(lam, fn, {"n": 7})
    [rec] = wait_records(fast, sink, 1)
    assert rec["requestContext"]["condition"] == "RetriesExhausted"
    assert rec["requestContext"]["approximateInvokeCount"] == 3
    assert rec["requestContext"]["requestId"] == request_id
    assert rec["requestPayload"] == {"n": 7}
    assert rec["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                      "functionError": "Unhandled"}
    assert rec["responsePayload"]["errorType"] == "ValueError"
    assert rec["responsePayload"]["errorMessage"] == "boom 7"
    # Three attempts, all with the event's request id, each retry waiting longer than the last
    # (200 ms, then 400 ms: lower bounds only).
    attempts = [e for e in log_messages(fast, fn, "attempt") if request_id in e["message"]]
    assert len(attempts) == 3, attempts
    t = [e["timestamp"] for e in attempts]
    assert t[1] - t[0] >= 190 and t[2] - t[1] >= 390, t


def test_zero_retries_means_one_attempt(fast):
    lam = fast.lambda_client()
    fn, sink = create(lam, FAIL), create(lam, SINK)
    lam.put_function_event_invoke_config(
        FunctionName=fn, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": ARN.format(sink)}})
    request_id = async_invoke(lam, fn, {"n": 0})
    [rec] = wait_records(fast, sink, 1)
    assert rec["requestContext"]["approximateInvokeCount"] == 1
    time.sleep(1.0)  # no retry may follow
    assert len([e for e in log_messages(fast, fn, "attempt") if request_id in e["message"]]) == 1


def test_an_event_older_than_its_maximum_age_is_dropped_to_on_failure(fast):
    """A function with reserved concurrency 0 throttles every attempt: the event waits (a
    throttle is not an attempt) until it is older than MaximumEventAgeInSeconds (60 s at least)."""
    lam = fast.lambda_client()
    fn, sink = create(lam, OK), create(lam, SINK)
    lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=0)
    lam.put_function_event_invoke_config(
        FunctionName=fn, MaximumEventAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": ARN.format(sink)}})
    request_id = async_invoke(lam, fn, {"old": True})
    [rec] = wait_records(fast, sink, 1, timeout=90)
    assert rec["requestContext"]["condition"] == "EventAgeExceeded"
    assert rec["requestContext"]["requestId"] == request_id
    assert rec["requestContext"]["approximateInvokeCount"] == 0
    assert rec["requestPayload"] == {"old": True}
    assert "responseContext" not in rec
    with urllib.request.urlopen(f"{fast.endpoint}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert f'nimbus_async_events_dropped_total{{function="{fn}",reason="EventAgeExceeded"}} 1' in text
    assert f'nimbus_async_events_received_total{{function="{fn}"}} 1' in text
    assert f'nimbus_async_destination_deliveries_total{{function="{fn}"}} 1' in text


def test_a_paused_function_holds_its_events_until_its_concurrency_changes(fast):
    """Reserved concurrency 0 (Lambda's "throttle") keeps accepted events waiting, not failing
    and not retried in a loop; removing it runs them at once."""
    lam = fast.lambda_client()
    fn = create(lam, OK)
    async_invoke(lam, fn, {"before": 1})
    lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=0)
    ids = [async_invoke(lam, fn, {"n": i}) for i in range(3)]
    time.sleep(1.5)
    ran = [e["message"] for e in log_messages(fast, fn, "attempt")]
    assert not any(i in m for i in ids for m in ran), ran
    lam.delete_function_concurrency(FunctionName=fn)
    assert wait_until(lambda: all(any(i in e["message"] for e in log_messages(fast, fn, "attempt")) for i in ids), 10)
    # Each ran once: holding is not an attempt.
    for i in ids:
        assert len([e for e in log_messages(fast, fn, "attempt") if i in e["message"]]) == 1


def test_oversized_async_events_are_refused_and_not_stored(lam):
    fn = create(lam, OK)
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=fn, InvocationType="Event",
                   Payload=json.dumps({"x": "a" * (256 * 1024)}).encode())
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName="no-such-function", InvocationType="Event", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


class Collector(http.server.BaseHTTPRequestHandler):
    seen = []
    lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        # A function killed with its server mid-request leaves a cut-off body: not a report.
        if length and len(body) == length:
            with Collector.lock:
                Collector.seen.append(body.decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_accepted_events_survive_sigkill(tmp_path):
    """Async events are sent while the server is killed with SIGKILL at random moments and
    restarted on the same data directory; every accepted event is processed at least once."""
    # The collector is shared with test_event_sources: start from nothing whatever ran before.
    Collector.seen = []
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = collector.server_address[1]
    reporter = {"app.py": (
        "import json, time, urllib.request\n\n"
        "def handler(event, context):\n"
        f"    req = urllib.request.Request('http://127.0.0.1:{port}/', data=str(event['id']).encode(), method='POST')\n"
        "    urllib.request.urlopen(req, timeout=10).read()\n"
        "    time.sleep(0.02)\n"
        "    return {}\n")}
    data = tmp_path / "data"
    server = NimbusServer(data).start()
    name = unique("crash")
    try:
        create(server.lambda_client(), reporter, name=name)
        accepted = set()
        rng = random.Random(7)
        next_id = 0
        for round_ in range(3):
            lam = server.lambda_client()
            kill_at = time.time() + rng.uniform(0.3, 1.2)
            while time.time() < kill_at and next_id < 2000:
                try:
                    lam.invoke(FunctionName=name, InvocationType="Event",
                               Payload=json.dumps({"id": next_id}).encode())
                    accepted.add(next_id)
                except Exception:
                    pass  # not accepted: not promised
                next_id += 1
            server.kill()
            server = NimbusServer(data).start()
        # After the last restart: wait for every accepted event to be reported.
        def all_seen():
            with Collector.lock:
                seen = {int(x) for x in Collector.seen}
            return accepted <= seen
        assert accepted, "no event was accepted"
        assert wait_until(all_seen, 120), (
            f"{len(accepted - {int(x) for x in Collector.seen})} of {len(accepted)} accepted events were never processed")
        with Collector.lock:
            total = len(Collector.seen)
        print(f"accepted {len(accepted)} of {next_id} sent across 3 SIGKILLs; {total} runs reported "
              f"({total - len(accepted)} duplicates)")
        # At least once: duplicates (events running when the server died) are allowed, and bounded
        # by what can be in flight when it dies.
        assert total - len(accepted) <= 3 * 64 + 50, (total, len(accepted))
    finally:
        server.stop()
        collector.shutdown()
