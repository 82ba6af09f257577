"""Event source mappings (a built-in queue polled into a function) through boto3's `lambda`
client, the SQS event shape, ReportBatchItemFailures, failures reaching the dead-letter queue by
the queue's redrive policy, queue destinations of asynchronous invocations, and accepted queue
messages and async events surviving SIGKILL of the server."""

import hashlib
import http.server
import json
import random
import threading
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import NimbusServer, create, unique
from lambda_helpers import wait_until
from test_async import Collector, records

QARN = "arn:aws:sqs:us-east-1:000000000000:{}"
FARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"

SINK = {"app.py": "import json\n\ndef handler(event, context):\n    print('RECORD ' + json.dumps(event))\n    return {}\n"}
# Fails the messages whose body starts with "bad", reporting them item by item.
PARTIAL = {"app.py": (
    "import json\n\n"
    "def handler(event, context):\n"
    "    print('RECORD ' + json.dumps(event))\n"
    "    return {'batchItemFailures': [{'itemIdentifier': r['messageId']}\n"
    "                                  for r in event['Records'] if r['body'].startswith('bad')]}\n")}
RAISE = {"app.py": "def handler(event, context):\n    raise RuntimeError('cannot process')\n"}


def sqs_client(server):
    return boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 1}, read_timeout=60))


def new_queue(sqs, prefix="q", **attributes):
    name = unique(prefix)
    url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    return name, url


def counts(sqs, url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def delivered(server, fn):
    """Every SQS record the function printed, in order."""
    return [r for event in records(server, fn) for r in event["Records"]]


def test_mapping_api_lifecycle_and_validation(server, lam):
    sqs = sqs_client(server)
    qname, _ = new_queue(sqs, VisibilityTimeout=30)
    fn = create(lam, SINK, Timeout=10)
    m = lam.create_event_source_mapping(EventSourceArn=QARN.format(qname), FunctionName=fn,
                                        BatchSize=5, Enabled=False)
    assert m["State"] == "Disabled" and m["BatchSize"] == 5
    assert m["EventSourceArn"] == QARN.format(qname) and m["FunctionArn"] == FARN.format(fn)
    assert m["MaximumBatchingWindowInSeconds"] == 0 and m["FunctionResponseTypes"] == []
    uuid = m["UUID"]
    got = lam.get_event_source_mapping(UUID=uuid)
    assert got["State"] == "Disabled" and got["LastProcessingResult"] == "No records processed"
    assert [x["UUID"] for x in lam.list_event_source_mappings(EventSourceArn=QARN.format(qname))["EventSourceMappings"]] == [uuid]
    assert [x["UUID"] for x in lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]] == [uuid]

    # Refused changes name the problem and change nothing.
    bad_updates = [
        (dict(BatchSize=20), "Maximum batch window"),
        (dict(MaximumBatchingWindowInSeconds=301), "MaximumBatchingWindowInSeconds"),
        (dict(FunctionResponseTypes=["Nope"]), "Nope"),
        (dict(FunctionName="no-such-function"), "no-such-function"),
    ]
    for kw, text in bad_updates:
        with pytest.raises(ClientError) as e:
            lam.update_event_source_mapping(UUID=uuid, **kw)
        assert text in e.value.response["Error"]["Message"], (kw, e.value.response["Error"])
    assert lam.get_event_source_mapping(UUID=uuid)["BatchSize"] == 5

    upd = lam.update_event_source_mapping(UUID=uuid, BatchSize=100, MaximumBatchingWindowInSeconds=2,
                                          FunctionResponseTypes=["ReportBatchItemFailures"],
                                          ScalingConfig={"MaximumConcurrency": 3})
    assert upd["State"] == "Updating"
    got = lam.get_event_source_mapping(UUID=uuid)
    assert (got["BatchSize"], got["MaximumBatchingWindowInSeconds"]) == (100, 2)
    assert got["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert got["ScalingConfig"] == {"MaximumConcurrency": 3}

    bad_creates = [
        (dict(EventSourceArn=QARN.format(qname), FunctionName=fn), "ResourceConflictException", uuid),
        (dict(EventSourceArn=QARN.format("no-such-queue"), FunctionName=fn), "InvalidParameterValueException", "no-such-queue"),
        (dict(EventSourceArn="arn:aws:kinesis:us-east-1:000000000000:stream/s", FunctionName=fn), "InvalidParameterValueException", "SQS"),
        (dict(EventSourceArn=QARN.format(qname), FunctionName="no-such-function"), "ResourceNotFoundException", "no-such-function"),
    ]
    for kw, code, text in bad_creates:
        with pytest.raises(ClientError) as e:
            lam.create_event_source_mapping(**kw)
        assert e.value.response["Error"]["Code"] == code, (kw, e.value.response["Error"])
        assert text in e.value.response["Error"]["Message"], (kw, e.value.response["Error"])
    # Lambda's rule: the queue must hide a batch at least as long as the function may run.
    short_name, _ = new_queue(sqs, VisibilityTimeout=5)
    with pytest.raises(ClientError) as e:
        lam.create_event_source_mapping(EventSourceArn=QARN.format(short_name), FunctionName=fn)
    assert "visibility timeout" in e.value.response["Error"]["Message"]
    # Out-of-range numbers that boto3 would refuse itself go raw.
    r = requests.post(f"{server.endpoint}/2015-03-31/event-source-mappings/", timeout=10,
                      json={"EventSourceArn": QARN.format(short_name), "FunctionName": fn, "BatchSize": 0})
    assert r.status_code == 400 and "BatchSize" in r.text
    r = requests.post(f"{server.endpoint}/2015-03-31/event-source-mappings/", timeout=10, data=b"{not json")
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "InvalidParameterValueException"

    assert lam.delete_event_source_mapping(UUID=uuid)["State"] == "Deleting"
    with pytest.raises(ClientError) as e:
        lam.get_event_source_mapping(UUID=uuid)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_messages_are_delivered_in_batches_in_the_sqs_event_shape(server, lam):
    sqs = sqs_client(server)
    qname, url = new_queue(sqs)
    fn = create(lam, SINK)
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}",
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": str(i)},
                               "bin": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}}}
        for i in range(7)])["Successful"]
    ids = {s["MessageId"]: s["Id"] for s in sent}
    lam.create_event_source_mapping(EventSourceArn=QARN.format(qname), FunctionName=fn,
                                    BatchSize=10, MaximumBatchingWindowInSeconds=1)
    assert wait_until(lambda: len(delivered(server, fn)) >= 7, 30), delivered(server, fn)
    got = delivered(server, fn)
    assert sorted(r["messageId"] for r in got) == sorted(ids)
    batches = records(server, fn)
    assert any(len(b["Records"]) > 1 for b in batches), "every message came alone despite the batching window"
    r = next(r for r in got if r["body"] == "m3")
    assert r["eventSource"] == "aws:sqs" and r["eventSourceARN"] == QARN.format(qname)
    assert r["awsRegion"] == "us-east-1"
    assert r["md5OfBody"] == hashlib.md5(b"m3").hexdigest()
    assert r["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(r["attributes"])
    assert r["messageAttributes"]["n"] == {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}
    assert r["messageAttributes"]["bin"]["binaryValue"] == "AQI="
    assert r["receiptHandle"]
    # Successful batches are deleted from the queue.
    assert wait_until(lambda: counts(sqs, url) == (0, 0), 10), counts(sqs, url)
    m = lam.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"][0]
    assert m["LastProcessingResult"] == "OK"


def test_failed_messages_come_back_and_reach_the_dead_letter_queue(server, lam):
    sqs = sqs_client(server)
    dlq_name, dlq_url = new_queue(sqs, "dlq")
    policy = json.dumps({"deadLetterTargetArn": QARN.format(dlq_name), "maxReceiveCount": 2})
    # Reported item failures: only the bad message is retried and dead-lettered.
    qname, url = new_queue(sqs, VisibilityTimeout=1, RedrivePolicy=policy)
    fn = create(lam, PARTIAL, Timeout=1)
    ids = {b: sqs.send_message(QueueUrl=url, MessageBody=b)["MessageId"] for b in ["good-1", "bad-1", "good-2"]}
    lam.create_event_source_mapping(EventSourceArn=QARN.format(qname), FunctionName=fn, BatchSize=10,
                                    FunctionResponseTypes=["ReportBatchItemFailures"])
    dead = []

    def dead_lettered():
        r = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        dead.extend(r.get("Messages", []))
        return dead
    assert wait_until(dead_lettered, 30), delivered(server, fn)
    assert [(m["Body"], m["MessageId"]) for m in dead] == [("bad-1", ids["bad-1"])]
    runs = {}
    for r in delivered(server, fn):
        runs.setdefault(r["body"], []).append(int(r["attributes"]["ApproximateReceiveCount"]))
    assert runs["good-1"] == [1] and runs["good-2"] == [1], runs
    assert runs["bad-1"] == [1, 2], runs
    assert wait_until(lambda: counts(sqs, url) == (0, 0), 10)

    # A function error fails the whole batch: everything comes back, then is dead-lettered.
    qname2, url2 = new_queue(sqs, VisibilityTimeout=1, RedrivePolicy=policy)
    fn2 = create(lam, RAISE, Timeout=1)
    ids2 = {sqs.send_message(QueueUrl=url2, MessageBody=f"x{i}")["MessageId"] for i in range(3)}
    lam.create_event_source_mapping(EventSourceArn=QARN.format(qname2), FunctionName=fn2)
    dead.clear()
    assert wait_until(lambda: len(dead_lettered()) >= 3, 30), dead
    assert {m["MessageId"] for m in dead} == ids2
    m = lam.list_event_source_mappings(FunctionName=fn2)["EventSourceMappings"][0]
    assert m["LastProcessingResult"].startswith("PROBLEM"), m


def test_a_fifo_queue_is_delivered_in_order_within_each_group(server, lam):
    sqs = sqs_client(server)
    name = unique("order") + ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    fn = create(lam, SINK)
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=f"{'ab'[i % 2]}-{i}", MessageGroupId="ab"[i % 2])
    lam.create_event_source_mapping(EventSourceArn=QARN.format(name), FunctionName=fn, BatchSize=3)
    assert wait_until(lambda: len(delivered(server, fn)) >= 12, 30), delivered(server, fn)
    got = delivered(server, fn)
    for group in "ab":
        seen = [int(r["body"].split("-")[1]) for r in got if r["attributes"]["MessageGroupId"] == group]
        assert seen == sorted(seen) and len(seen) == 6, (group, seen)
    assert all("SequenceNumber" in r["attributes"] and "MessageDeduplicationId" in r["attributes"] for r in got)


def test_a_disabled_mapping_leaves_messages_in_the_queue(server, lam):
    sqs = sqs_client(server)
    qname, url = new_queue(sqs)
    fn = create(lam, SINK)
    m = lam.create_event_source_mapping(EventSourceArn=QARN.format(qname), FunctionName=fn)
    sqs.send_message(QueueUrl=url, MessageBody="first")
    assert wait_until(lambda: len(delivered(server, fn)) == 1, 20)
    lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
    assert lam.get_event_source_mapping(UUID=m["UUID"])["State"] == "Disabled"
    sqs.send_message(QueueUrl=url, MessageBody="second")
    time.sleep(2)
    assert counts(sqs, url) == (1, 0) and len(delivered(server, fn)) == 1
    lam.update_event_source_mapping(UUID=m["UUID"], Enabled=True)
    assert wait_until(lambda: len(delivered(server, fn)) == 2, 20)
    # Deleting the mapping stops delivery; messages stay queued.
    lam.delete_event_source_mapping(UUID=m["UUID"])
    sqs.send_message(QueueUrl=url, MessageBody="third")
    time.sleep(1.5)
    assert counts(sqs, url) == (1, 0) and len(delivered(server, fn)) == 2


def test_async_invocation_records_go_to_queue_destinations(server, lam):
    sqs = sqs_client(server)
    ok_name, ok_url = new_queue(sqs, "ok")
    fail_name, fail_url = new_queue(sqs, "failed")
    fn = create(lam, {"app.py": "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('no')\n    return {'ok': 1}\n"})
    lam.put_function_event_invoke_config(
        FunctionName=fn, MaximumRetryAttempts=0,
        DestinationConfig={"OnSuccess": {"Destination": QARN.format(ok_name)},
                           "OnFailure": {"Destination": QARN.format(fail_name)}})
    lam.invoke(FunctionName=fn, InvocationType="Event", Payload=b'{"n": 1}')
    lam.invoke(FunctionName=fn, InvocationType="Event", Payload=b'{"fail": true}')

    def one(url):
        r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
        return json.loads(r["Messages"][0]["Body"])
    success = one(ok_url)
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestPayload"] == {"n": 1} and success["responsePayload"] == {"ok": 1}
    failure = one(fail_url)
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 1
    assert failure["responseContext"]["functionError"] == "Unhandled"
    # A destination queue that does not exist is refused when configured.
    with pytest.raises(ClientError) as e:
        lam.put_function_event_invoke_config(
            FunctionName=fn, DestinationConfig={"OnFailure": {"Destination": QARN.format("no-such-queue")}})
    assert "no-such-queue" in e.value.response["Error"]["Message"]


def test_accepted_messages_and_events_survive_sigkill(tmp_path):
    """Queue messages (consumed by an event source mapping) and async invocations are sent while
    the server is SIGKILLed at random moments and restarted; every accepted one is processed at
    least once."""
    Collector.seen = []
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    port = collector.server_address[1]
    reporter = {"app.py": (
        "import json, urllib.request\n\n"
        "def report(text):\n"
        f"    req = urllib.request.Request('http://127.0.0.1:{port}/', data=text.encode(), method='POST')\n"
        "    urllib.request.urlopen(req, timeout=10).read()\n\n"
        "def handler(event, context):\n"
        "    for r in event.get('Records', []):\n"
        "        report(r['body'])\n"
        "    if 'id' in event:\n"
        "        report(event['id'])\n"
        "    return {}\n")}
    data = tmp_path / "data"
    server = NimbusServer(data).start()
    name = unique("crash")
    try:
        lam = server.lambda_client()
        sqs = sqs_client(server)
        create(lam, reporter, name=name, Timeout=5)
        qname, url = new_queue(sqs, "crash", VisibilityTimeout=5)
        lam.create_event_source_mapping(EventSourceArn=QARN.format(qname), FunctionName=name, BatchSize=10)
        accepted = set()
        rng = random.Random(11)
        n = 0
        for _ in range(3):
            lam, sqs = server.lambda_client(), sqs_client(server)
            kill_at = time.time() + rng.uniform(0.4, 1.5)
            while time.time() < kill_at and n < 3000:
                ident = f"{'m' if n % 2 else 'e'}{n}"
                try:
                    if n % 2:
                        if n % 6 == 1:
                            r = sqs.send_message_batch(QueueUrl=url, Entries=[
                                {"Id": str(k), "MessageBody": f"{ident}-{k}"} for k in range(5)])
                            accepted.update(f"{ident}-{k}" for k in range(5) if str(k) in {s["Id"] for s in r.get("Successful", [])})
                        else:
                            sqs.send_message(QueueUrl=url, MessageBody=ident)
                            accepted.add(ident)
                    else:
                        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": ident}).encode())
                        accepted.add(ident)
                except Exception:
                    pass  # not accepted: not promised
                n += 1
            server.kill()
            server = NimbusServer(data).start()

        def missing():
            with Collector.lock:
                seen = set(Collector.seen)
            return accepted - seen
        assert accepted, "nothing was accepted"
        assert wait_until(lambda: not missing(), 120), f"{len(missing())} of {len(accepted)} accepted never processed: {sorted(missing())[:10]}"
        with Collector.lock:
            total = len(Collector.seen)
        print(f"accepted {len(accepted)} across 3 SIGKILLs; {total} reports ({total - len(accepted)} duplicates)")
        # Duplicates are what was in flight at each kill: bounded by the pollers' batches
        # (5 pollers × 10 messages) and the async dispatcher's 64 running events, per kill.
        assert total - len(accepted) <= 3 * (5 * 10 + 64) + 50, (total, len(accepted))
        # Nothing is left behind in the queue.
        sqs = sqs_client(server)
        assert wait_until(lambda: counts(sqs, url) == (0, 0), 30), counts(sqs, url)
    finally:
        server.stop()
        collector.shutdown()
