"""Nimbus's built-in queues through boto3's `sqs` client (AWS JSON 1.0 with the query-compatible
error codes), checked against SQS's documented behaviour: queue lifecycle and attributes, message
attributes and their digests, batches, delays, long polling, visibility, redrive to a dead-letter
queue, purge, FIFO ordering, group locking and deduplication, and AWS-style errors that lose
nothing.

botocore does not check SQS's MD5 digests itself, so the tests compute them (the body's MD5, and
the documented encoding of message attributes) and compare."""

import hashlib
import json
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import unique

ACCOUNT = "000000000000"
ARN = "arn:aws:sqs:us-east-1:000000000000:{}"
COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")


@pytest.fixture
def sqs(server):
    return server.sqs_client()


def make_queue(sqs, name=None, fifo=False, **attributes):
    """Creates a queue (a unique name unless given) and returns its URL."""
    name = name or unique("q") + (".fifo" if fifo else "")
    attrs = {k: str(v) for k, v in attributes.items()}
    if fifo:
        attrs["FifoQueue"] = "true"
    return sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]


def queue_attrs(sqs, url, *names):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names) or ["All"])["Attributes"]


def counts(sqs, url):
    """(visible, in flight, delayed)."""
    a = queue_attrs(sqs, url, *COUNTS)
    return tuple(int(a[n]) for n in COUNTS)


def receive(sqs, url, **kw):
    """One ReceiveMessage; a short poll unless WaitTimeSeconds is given."""
    kw.setdefault("WaitTimeSeconds", 0)
    return sqs.receive_message(QueueUrl=url, **kw).get("Messages", [])


def receive_within(sqs, url, seconds, want=1, **kw):
    """Receives until `want` messages arrived or `seconds` passed."""
    got = []
    deadline = time.time() + seconds
    while len(got) < want and time.time() < deadline:
        got += receive(sqs, url, WaitTimeSeconds=1, MaxNumberOfMessages=min(10, want - len(got)), **kw)
    return got


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def md5_of_attributes(attributes):
    """SQS's digest of message attributes: by name in ascending order, each attribute's name,
    data type and value as 4-byte big-endian length + bytes, with a transport byte (1 for
    String/Number, 2 for Binary) before the value."""
    buf = bytearray()

    def part(data):
        buf.extend(len(data).to_bytes(4, "big"))
        buf.extend(data)

    for name in sorted(attributes):
        a = attributes[name]
        part(name.encode())
        part(a["DataType"].encode())
        if "BinaryValue" in a:
            buf.append(2)
            part(a["BinaryValue"])
        else:
            buf.append(1)
            part(a["StringValue"].encode())
    return md5_hex(bytes(buf))


def expect_error(call, code, *needles, exc=None):
    """Asserts `call` fails with the query-compatible `code` (and the modeled exception class
    `exc`), and that the message mentions each needle (a string or a tuple of alternatives,
    case-insensitive). Returns the error dict."""
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response["Error"]
    assert err["Code"] == code, err
    if exc is not None:
        assert isinstance(e.value, exc), (type(e.value), err)
    message = err.get("Message", "")
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(o.lower() in message.lower() for o in options), (code, needle, message)
    return err


ATTRIBUTES = {
    "Str": {"DataType": "String", "StringValue": "h\u00e9llo \u2603 \U0001f600"},
    "Num": {"DataType": "Number", "StringValue": "-1234.5"},
    "Bin": {"DataType": "Binary", "BinaryValue": bytes(range(256))},
    "Ref": {"DataType": "String.reference", "StringValue": "order-42"},
    "Price": {"DataType": "Number.float", "StringValue": "3.14"},
    "Img": {"DataType": "Binary.gif", "BinaryValue": b"GIF89a\x00\x01\xff"},
}


def assert_attributes(got, sent):
    assert set(got) == set(sent), got
    for name, a in sent.items():
        assert got[name]["DataType"] == a["DataType"], (name, got[name])
        key = "BinaryValue" if "BinaryValue" in a else "StringValue"
        assert got[name][key] == a[key], (name, got[name])


# 1. Lifecycle


def test_create_is_idempotent_and_a_conflicting_create_is_refused(sqs):
    name = unique("life")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    assert url == f"{sqs.meta.endpoint_url}/{ACCOUNT}/{name}"
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"] == url
    # Same name, different value: QueueNameExists in the model, QueueAlreadyExists on the wire.
    expect_error(lambda: sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "41"}),
                 "QueueAlreadyExists", "VisibilityTimeout", exc=sqs.exceptions.QueueNameExists)
    assert queue_attrs(sqs, url, "VisibilityTimeout") == {"VisibilityTimeout": "40"}
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert queue_attrs(sqs, url, "QueueArn") == {"QueueArn": ARN.format(name)}
    expect_error(lambda: sqs.get_queue_url(QueueName=unique("missing")),
                 "AWS.SimpleQueueService.NonExistentQueue", "exist", exc=sqs.exceptions.QueueDoesNotExist)


def test_list_queues_by_prefix_and_in_pages(sqs):
    prefix = unique("lst")
    urls = sorted(make_queue(sqs, name=f"{prefix}-{i}") for i in range(3))
    listed = sqs.list_queues(QueueNamePrefix=prefix)
    assert sorted(listed["QueueUrls"]) == urls
    assert "NextToken" not in listed
    assert sqs.list_queues(QueueNamePrefix=unique("none")).get("QueueUrls", []) == []
    assert set(urls) <= set(sqs.list_queues()["QueueUrls"])

    first = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert len(first["QueueUrls"]) == 2 and first.get("NextToken"), first
    second = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=first["NextToken"])
    assert len(second["QueueUrls"]) == 1 and "NextToken" not in second, second
    assert sorted(first["QueueUrls"] + second["QueueUrls"]) == urls


def test_every_settable_attribute_round_trips(sqs):
    dlq_name = unique("dlq")
    make_queue(sqs, name=dlq_name)
    name = unique("attrs")
    before = int(time.time()) - 2
    url = make_queue(sqs, name=name)
    a = queue_attrs(sqs, url)
    assert a["QueueArn"] == ARN.format(name)
    assert a["VisibilityTimeout"] == "30"
    assert a["DelaySeconds"] == "0"
    assert a["MaximumMessageSize"] == "1048576"  # 1 MiB since SQS raised its limit (2025)
    assert a["MessageRetentionPeriod"] == "345600"
    assert a["ReceiveMessageWaitTimeSeconds"] == "0"
    assert [a[n] for n in COUNTS] == ["0", "0", "0"]
    created = int(a["CreatedTimestamp"])
    assert before <= created <= int(time.time()) + 2, a
    assert int(a["LastModifiedTimestamp"]) >= created

    redrive = {"deadLetterTargetArn": ARN.format(dlq_name), "maxReceiveCount": 4}
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "all", "Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage",
        "Resource": ARN.format(name)}]}
    plain = {"VisibilityTimeout": "45", "DelaySeconds": "3", "MaximumMessageSize": "2048",
             "MessageRetentionPeriod": "7200", "ReceiveMessageWaitTimeSeconds": "7"}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        **plain, "RedrivePolicy": json.dumps(redrive), "Policy": json.dumps(policy)})
    got = queue_attrs(sqs, url)
    for k, v in plain.items():
        assert got[k] == v, (k, got)
    stored = json.loads(got["RedrivePolicy"])
    assert stored["deadLetterTargetArn"] == redrive["deadLetterTargetArn"]
    assert int(stored["maxReceiveCount"]) == 4
    assert json.loads(got["Policy"])["Statement"] == policy["Statement"]
    assert int(got["LastModifiedTimestamp"]) >= int(got["CreatedTimestamp"])
    # Asking for names returns those names only.
    assert queue_attrs(sqs, url, "VisibilityTimeout", "DelaySeconds") == {"VisibilityTimeout": "45", "DelaySeconds": "3"}

    # The same attributes given at creation are stored as given.
    url2 = make_queue(sqs, **plain)
    got2 = queue_attrs(sqs, url2)
    assert {k: got2[k] for k in plain} == plain


def test_message_counts_follow_send_receive_and_delete(sqs):
    url = make_queue(sqs)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    assert counts(sqs, url) == (3, 0, 1)
    got = receive_within(sqs, url, 5, want=2, VisibilityTimeout=60)
    assert len(got) == 2
    assert counts(sqs, url) == (1, 2, 1)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert counts(sqs, url) == (1, 1, 1)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[1]["ReceiptHandle"])
    assert counts(sqs, url) == (1, 0, 1)


def test_tags(sqs):
    name = unique("tags")
    url = sqs.create_queue(QueueName=name, tags={"team": "a", "env": "dev"})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a", "env": "dev"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "x": "1"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a", "env": "prod", "x": "1"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team", "x"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "prod"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["env"])
    assert sqs.list_queue_tags(QueueUrl=url).get("Tags", {}) == {}
    missing = f"{sqs.meta.endpoint_url}/{ACCOUNT}/{unique('missing')}"
    expect_error(lambda: sqs.tag_queue(QueueUrl=missing, Tags={"a": "b"}),
                 "AWS.SimpleQueueService.NonExistentQueue", "exist", exc=sqs.exceptions.QueueDoesNotExist)


def test_delete_queue(sqs):
    name = unique("del")
    url = make_queue(sqs, name=name)
    sqs.send_message(QueueUrl=url, MessageBody="gone with the queue")
    sqs.delete_queue(QueueUrl=url)
    for call in (lambda: sqs.get_queue_url(QueueName=name),
                 lambda: sqs.send_message(QueueUrl=url, MessageBody="x"),
                 lambda: sqs.receive_message(QueueUrl=url),
                 lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
                 lambda: sqs.delete_queue(QueueUrl=url)):
        expect_error(call, "AWS.SimpleQueueService.NonExistentQueue", "exist", exc=sqs.exceptions.QueueDoesNotExist)
    assert url not in sqs.list_queues(QueueNamePrefix=name).get("QueueUrls", [])


def test_a_deleted_queue_name_cannot_be_reused_for_60_seconds(sqs):
    """AWS: "If you delete a queue, you must wait at least 60 seconds before creating a queue with
    the same name" (QueueDeletedRecently)."""
    name = unique("recent")
    sqs.delete_queue(QueueUrl=make_queue(sqs, name=name))
    expect_error(lambda: sqs.create_queue(QueueName=name), "AWS.SimpleQueueService.QueueDeletedRecently",
                 exc=sqs.exceptions.QueueDeletedRecently)


# 2. Send and receive


def test_body_and_message_attributes_round_trip(sqs):
    url = make_queue(sqs)
    body = "Hello, \u00e9\u4e16\u754c \U0001f600 tab\t newline\n cr\r <xml/> {\"json\": 1}"
    t0 = int(time.time() * 1000)
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=ATTRIBUTES)
    t1 = int(time.time() * 1000)
    assert sent["MD5OfMessageBody"] == md5_hex(body.encode())
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(ATTRIBUTES)
    assert sent["MessageId"]

    [m] = receive_within(sqs, url, 5, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    assert m["MessageId"] == sent["MessageId"]
    assert m["Body"] == body
    assert m["MD5OfBody"] == md5_hex(body.encode())
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(ATTRIBUTES)
    assert_attributes(m["MessageAttributes"], ATTRIBUTES)
    a = m["Attributes"]
    assert a["ApproximateReceiveCount"] == "1"
    assert t0 - 1000 <= int(a["SentTimestamp"]) <= t1 + 1000, (t0, a)
    assert int(a["ApproximateFirstReceiveTimestamp"]) >= int(a["SentTimestamp"])
    assert a.get("SenderId"), a

    # Only the attributes asked for come back; none unless asked.
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageAttributes=ATTRIBUTES)
    [m2] = receive_within(sqs, url, 5, MessageAttributeNames=["Str", "Bin"])
    assert_attributes(m2["MessageAttributes"], {k: ATTRIBUTES[k] for k in ("Str", "Bin")})
    assert "Attributes" not in m2
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
    [m3] = receive_within(sqs, url, 5)
    assert m3["Body"] == "two" and "MessageAttributes" not in m3, m3


def test_max_number_of_messages(sqs):
    url = make_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"m{i}"} for i in range(5)])
    assert len(receive(sqs, url)) == 1  # the default is one
    seen = []
    deadline = time.time() + 10
    while len(seen) < 4 and time.time() < deadline:
        got = receive(sqs, url, MaxNumberOfMessages=3, WaitTimeSeconds=1)
        assert len(got) <= 3, got
        seen += [m["Body"] for m in got]
    assert len(seen) == 4 and len(set(seen)) == 4, seen
    assert receive(sqs, url, MaxNumberOfMessages=10) == []


def test_per_message_and_queue_delay(sqs):
    url = make_queue(sqs)
    sent_at = time.time()
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=2)
    assert receive(sqs, url) == []
    assert counts(sqs, url) == (0, 0, 1)
    [m] = receive_within(sqs, url, 8)
    assert m["Body"] == "delayed"
    assert time.time() - sent_at >= 1.9

    slow = make_queue(sqs, DelaySeconds=2)
    sent_at = time.time()
    sqs.send_message(QueueUrl=slow, MessageBody="queue delay")
    sqs.send_message(QueueUrl=slow, MessageBody="no delay", DelaySeconds=0)  # overrides the queue's
    [now] = receive(sqs, slow, MaxNumberOfMessages=10)
    assert now["Body"] == "no delay"
    [m] = receive_within(sqs, slow, 8)
    assert m["Body"] == "queue delay"
    assert time.time() - sent_at >= 1.9


def test_send_message_batch_stores_good_entries_and_fails_bad_ones_alone(sqs):
    url = make_queue(sqs)
    attrs = {"k": {"DataType": "String", "StringValue": "v"}}
    entries = [
        {"Id": "ok1", "MessageBody": "one"},
        {"Id": "bad1", "MessageBody": "nul \u0000 inside"},
        {"Id": "ok2", "MessageBody": "two", "MessageAttributes": attrs},
        {"Id": "bad2", "MessageBody": "not a character: \uffff"},
        {"Id": "ok3", "MessageBody": "three", "DelaySeconds": 0},
    ]
    r = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    ok = {s["Id"]: s for s in r["Successful"]}
    assert set(ok) == {"ok1", "ok2", "ok3"}, r
    for e in entries:
        if e["Id"] in ok:
            assert ok[e["Id"]]["MD5OfMessageBody"] == md5_hex(e["MessageBody"].encode())
    assert ok["ok2"]["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    failed = {f["Id"]: f for f in r.get("Failed", [])}
    assert set(failed) == {"bad1", "bad2"}, r
    for f in failed.values():
        assert f["SenderFault"] is True, f
        assert f["Code"] == "InvalidMessageContents", f
        assert f.get("Message"), f

    got = receive_within(sqs, url, 8, want=3)
    assert sorted(m["Body"] for m in got) == ["one", "three", "two"]
    assert {m["MessageId"] for m in got} == {s["MessageId"] for s in ok.values()}
    assert receive(sqs, url, MaxNumberOfMessages=10) == []


def test_batch_delete_and_visibility_fail_an_invalid_handle_alone(sqs):
    url = make_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": f"m{i}"} for i in range(3)])
    got = receive_within(sqs, url, 8, want=3, VisibilityTimeout=60)
    assert len(got) == 3
    keep, drop = got[0], got[1:]
    r = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": drop[0]["ReceiptHandle"]},
        {"Id": "bogus", "ReceiptHandle": "not-a-receipt-handle"},
        {"Id": "b", "ReceiptHandle": drop[1]["ReceiptHandle"]},
    ])
    assert {s["Id"] for s in r["Successful"]} == {"a", "b"}, r
    [f] = r["Failed"]
    assert f["Id"] == "bogus" and f["SenderFault"] is True and f["Code"] == "ReceiptHandleIsInvalid", f
    assert counts(sqs, url) == (0, 1, 0)

    r = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "k", "ReceiptHandle": keep["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "bogus", "ReceiptHandle": "not-a-receipt-handle", "VisibilityTimeout": 0},
    ])
    assert [s["Id"] for s in r["Successful"]] == ["k"], r
    [f] = r["Failed"]
    assert f["Id"] == "bogus" and f["SenderFault"] is True and f["Code"] == "ReceiptHandleIsInvalid", f
    [again] = receive(sqs, url, MaxNumberOfMessages=10)
    assert again["MessageId"] == keep["MessageId"] and again["Body"] == keep["Body"]


# 3. Long polling


def test_a_long_poll_returns_when_a_message_arrives(server, sqs):
    url = make_queue(sqs)
    result = {}

    def poll():
        t0 = time.time()
        result["messages"] = receive(server.sqs_client(), url, WaitTimeSeconds=10)
        result["elapsed"] = time.time() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(1)
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    t.join(20)
    assert not t.is_alive()
    assert [m["Body"] for m in result["messages"]] == ["wake up"]
    assert 0.8 <= result["elapsed"] < 5, result["elapsed"]


def test_an_empty_long_poll_waits_its_wait_time(sqs):
    url = make_queue(sqs)
    t0 = time.time()
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    elapsed = time.time() - t0
    assert "Messages" not in r or r["Messages"] == [], r
    assert 1.95 <= elapsed < 10, elapsed


def test_the_queue_receive_wait_time_applies(sqs):
    url = make_queue(sqs, ReceiveMessageWaitTimeSeconds=2)
    t0 = time.time()
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    assert time.time() - t0 >= 1.95
    # An explicit WaitTimeSeconds=0 is a short poll on the same queue.
    t0 = time.time()
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []
    assert time.time() - t0 < 1.5


# 4. Visibility


def test_visibility_timeout_hides_then_redelivers(sqs):
    url = make_queue(sqs)
    sent = sqs.send_message(QueueUrl=url, MessageBody="work")
    [m1] = receive_within(sqs, url, 5, VisibilityTimeout=2, AttributeNames=["ApproximateReceiveCount"])
    received_at = time.time()
    assert m1["MessageId"] == sent["MessageId"]
    assert m1["Attributes"] == {"ApproximateReceiveCount": "1"}
    assert receive(sqs, url, MaxNumberOfMessages=10) == []
    assert counts(sqs, url) == (0, 1, 0)

    [m2] = receive_within(sqs, url, 8, MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert time.time() - received_at >= 1.9
    assert m2["MessageId"] == sent["MessageId"] and m2["Body"] == "work"
    assert m2["Attributes"]["ApproximateReceiveCount"] == "2"
    assert m2["ReceiptHandle"] != m1["ReceiptHandle"]

    # AWS: with an older receipt handle "the request will succeed, but the message might not be
    # deleted"; Nimbus does not delete it.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m1["ReceiptHandle"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
    [m3] = receive(sqs, url, AttributeNames=["ApproximateReceiveCount"])
    assert m3["MessageId"] == sent["MessageId"]
    assert m3["Attributes"]["ApproximateReceiveCount"] == "3"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m3["ReceiptHandle"])
    assert counts(sqs, url) == (0, 0, 0)
    assert receive(sqs, url, MaxNumberOfMessages=10) == []


def test_change_message_visibility(sqs):
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="extend me")
    [m] = receive_within(sqs, url, 5, VisibilityTimeout=1)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=30)
    time.sleep(1.5)
    assert receive(sqs, url) == []  # the extension holds past the first timeout
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    [again] = receive(sqs, url)
    assert again["MessageId"] == m["MessageId"]

    for call in (lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="garbage", VisibilityTimeout=0),
                 lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")):
        expect_error(call, "ReceiptHandleIsInvalid", "receipt handle", exc=sqs.exceptions.ReceiptHandleIsInvalid)
    assert counts(sqs, url) == (0, 1, 0)


# 5. Redrive


def test_redrive_to_the_dead_letter_queue_after_max_receive_count(sqs):
    dlq_name = unique("dlq")
    dlq = make_queue(sqs, name=dlq_name)
    dlq_arn = queue_attrs(sqs, dlq, "QueueArn")["QueueArn"]
    assert dlq_arn == ARN.format(dlq_name)
    src = make_queue(sqs, VisibilityTimeout=1,
                     RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    attrs = {"k": {"DataType": "String", "StringValue": "v"}}
    sent = sqs.send_message(QueueUrl=src, MessageBody="poison", MessageAttributes=attrs)

    for n in (1, 2):
        [m] = receive_within(sqs, src, 6, AttributeNames=["ApproximateReceiveCount"])
        assert m["MessageId"] == sent["MessageId"]
        assert m["Attributes"]["ApproximateReceiveCount"] == str(n)
    time.sleep(1.2)  # the second receive's visibility timeout runs out
    assert receive(sqs, src, WaitTimeSeconds=2, MaxNumberOfMessages=10) == []

    [moved] = receive_within(sqs, dlq, 6, MessageAttributeNames=["All"])
    assert moved["MessageId"] == sent["MessageId"]
    assert moved["Body"] == "poison"
    assert moved["MD5OfBody"] == md5_hex(b"poison")
    assert_attributes(moved["MessageAttributes"], attrs)
    assert counts(sqs, src) == (0, 0, 0)


# 6. Purge


def test_purge_queue_empties_it(sqs):
    url = make_queue(sqs)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    assert len(receive_within(sqs, url, 5, VisibilityTimeout=60)) == 1
    assert counts(sqs, url) == (2, 1, 1)
    sqs.purge_queue(QueueUrl=url)
    assert counts(sqs, url) == (0, 0, 0)
    assert receive(sqs, url, MaxNumberOfMessages=10) == []
    # AWS: "Only one PurgeQueue operation on a queue is allowed every 60 seconds."
    expect_error(lambda: sqs.purge_queue(QueueUrl=url), "AWS.SimpleQueueService.PurgeQueueInProgress",
                 ("60", "purge"), exc=sqs.exceptions.PurgeQueueInProgress)
    missing = f"{sqs.meta.endpoint_url}/{ACCOUNT}/{unique('missing')}"
    expect_error(lambda: sqs.purge_queue(QueueUrl=missing), "AWS.SimpleQueueService.NonExistentQueue",
                 "exist", exc=sqs.exceptions.QueueDoesNotExist)


# 7. FIFO


def drain_fifo(sqs, url, want, seconds=10, **kw):
    """Receives and deletes until `want` messages came; returns them in arrival order."""
    out = []
    deadline = time.time() + seconds
    while len(out) < want and time.time() < deadline:
        got = receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **kw)
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        out += got
    return out


def test_fifo_keeps_order_within_a_group(sqs):
    name = unique("order") + ".fifo"
    url = make_queue(sqs, name=name, fifo=True)
    assert url.endswith("/" + name)
    a = queue_attrs(sqs, url)
    assert a["FifoQueue"] == "true" and a["ContentBasedDeduplication"] == "false", a
    sequence = []
    for i in range(6):
        r = sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}")
        sequence.append(r["SequenceNumber"])
    assert all(s.isdigit() for s in sequence), sequence
    assert [int(s) for s in sequence] == sorted(int(s) for s in sequence) and len(set(sequence)) == 6, sequence

    got = drain_fifo(sqs, url, 6, MessageSystemAttributeNames=["All"])
    assert [m["Body"] for m in got] == [f"m{i}" for i in range(6)]
    for i, m in enumerate(got):
        assert m["Attributes"]["MessageGroupId"] == "g"
        assert m["Attributes"]["MessageDeduplicationId"] == f"d{i}"
        assert m["Attributes"]["SequenceNumber"] == sequence[i]


def test_fifo_group_is_locked_while_a_message_is_in_flight(sqs):
    url = make_queue(sqs, fifo=True, ContentBasedDeduplication="true")
    sqs.send_message(QueueUrl=url, MessageBody="a1", MessageGroupId="A")
    sqs.send_message(QueueUrl=url, MessageBody="a2", MessageGroupId="A")
    [a1] = receive(sqs, url, MaxNumberOfMessages=1)
    assert a1["Body"] == "a1"
    assert receive(sqs, url, MaxNumberOfMessages=10) == []  # a2 waits behind a1

    sqs.send_message(QueueUrl=url, MessageBody="b1", MessageGroupId="B")
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["b1"]

    # a1 visible again: it, not a2, comes next.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=a1["ReceiptHandle"], VisibilityTimeout=0)
    [again] = receive(sqs, url, MaxNumberOfMessages=1, AttributeNames=["ApproximateReceiveCount"])
    assert again["Body"] == "a1" and again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert receive(sqs, url, MaxNumberOfMessages=10) == []
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["a2"]


def test_fifo_deduplication_by_id_and_by_content(sqs):
    url = make_queue(sqs, fifo=True)
    first = sqs.send_message(QueueUrl=url, MessageBody="first", MessageGroupId="g", MessageDeduplicationId="x")
    dup = sqs.send_message(QueueUrl=url, MessageBody="second", MessageGroupId="g", MessageDeduplicationId="x")
    assert dup["MessageId"] == first["MessageId"]
    expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody="no id", MessageGroupId="g"),
                 "InvalidParameterValue", ("ContentBasedDeduplication", "MessageDeduplicationId"))
    assert [m["Body"] for m in drain_fifo(sqs, url, 1)] == ["first"]
    assert receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1) == []

    cbd = make_queue(sqs, fifo=True, ContentBasedDeduplication="true")
    one = sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    assert sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")["MessageId"] == one["MessageId"]
    other = sqs.send_message(QueueUrl=cbd, MessageBody="other", MessageGroupId="g")
    assert other["MessageId"] != one["MessageId"]
    assert [m["Body"] for m in drain_fifo(sqs, cbd, 2)] == ["same", "other"]
    # Within the 5-minute interval a duplicate is accepted but not delivered, even after the
    # original was deleted.
    assert sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")["MessageId"] == one["MessageId"]
    assert receive(sqs, cbd, MaxNumberOfMessages=10, WaitTimeSeconds=1) == []


def test_fifo_requires_a_group_id_and_refuses_per_message_delay(sqs):
    url = make_queue(sqs, fifo=True, ContentBasedDeduplication="true")
    expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"), "MissingParameter", "MessageGroupId")
    expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", DelaySeconds=5),
                 "InvalidParameterValue", "DelaySeconds")
    assert counts(sqs, url) == (0, 0, 0)
    # A FIFO queue's name ends in .fifo.
    expect_error(lambda: sqs.create_queue(QueueName=unique("nofifo"), Attributes={"FifoQueue": "true"}),
                 "InvalidParameterValue", ("fifo", "name"))


# 8. Bad input


def test_bad_input_gives_aws_errors_and_loses_nothing(sqs):
    url = make_queue(sqs)
    sent = sqs.send_message(QueueUrl=url, MessageBody="precious", MessageAttributes=ATTRIBUTES)
    missing = f"{sqs.meta.endpoint_url}/{ACCOUNT}/{unique('missing')}"
    nonexistent = ("AWS.SimpleQueueService.NonExistentQueue", "exist")

    for call in (lambda: sqs.send_message(QueueUrl=missing, MessageBody="x"),
                 lambda: sqs.receive_message(QueueUrl=missing),
                 lambda: sqs.get_queue_attributes(QueueUrl=missing, AttributeNames=["All"]),
                 lambda: sqs.delete_queue(QueueUrl=missing)):
        expect_error(call, *nonexistent, exc=sqs.exceptions.QueueDoesNotExist)

    # Queue names: 1 to 80 of [A-Za-z0-9_-].
    for bad in ("a" * 81, "bad name!", "dots.are.not.allowed"):
        expect_error(lambda: sqs.create_queue(QueueName=bad), "InvalidParameterValue", ("name", "80", "alphanumeric"))
    assert sqs.create_queue(QueueName="a" * 80)["QueueUrl"].endswith("/" + "a" * 80)

    # Attribute values out of range, at creation and later; nothing is created or changed.
    for attr, value in [("VisibilityTimeout", "43201"), ("VisibilityTimeout", "-1"), ("VisibilityTimeout", "abc"),
                        ("DelaySeconds", "901"), ("MaximumMessageSize", "1023"), ("MaximumMessageSize", "1048577"),
                        ("MessageRetentionPeriod", "59"), ("MessageRetentionPeriod", "1209601"),
                        ("ReceiveMessageWaitTimeSeconds", "21")]:
        name = unique("range")
        expect_error(lambda: sqs.create_queue(QueueName=name, Attributes={attr: value}), "InvalidAttributeValue", attr)
        expect_error(lambda: sqs.get_queue_url(QueueName=name), *nonexistent)
        expect_error(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={attr: value}), "InvalidAttributeValue", attr)
    # Unknown attribute names.
    expect_error(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"Bogus": "1"}), "InvalidAttributeName", "Bogus",
                 exc=sqs.exceptions.InvalidAttributeName)
    expect_error(lambda: sqs.create_queue(QueueName=unique("attr"), Attributes={"Bogus": "1"}), "InvalidAttributeName", "Bogus")
    expect_error(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Bogus"]), "InvalidAttributeName", "Bogus")
    a = queue_attrs(sqs, url)
    assert (a["VisibilityTimeout"], a["DelaySeconds"], a["MaximumMessageSize"], a["MessageRetentionPeriod"],
            a["ReceiveMessageWaitTimeSeconds"]) == ("30", "0", "1048576", "345600", "0")

    # Bodies: over the queue's MaximumMessageSize (1 MiB by default), outside the allowed characters.
    expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * (1048576 + 1)),
                 "InvalidParameterValue", ("1048576", "size", "long", "bytes"))
    small = make_queue(sqs, MaximumMessageSize=1024)
    sqs.send_message(QueueUrl=small, MessageBody="x" * 1024)
    expect_error(lambda: sqs.send_message(QueueUrl=small, MessageBody="x" * 1025),
                 "InvalidParameterValue", ("1024", "size", "long", "bytes"))
    for body in ("nul \u0000", "bell \u0007", "\ufffe"):
        expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody=body), "InvalidMessageContents", "character",
                     exc=sqs.exceptions.InvalidMessageContents)
    expect_error(lambda: sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901), "InvalidParameterValue", "DelaySeconds")

    # Batches.
    eleven = [{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]
    expect_error(lambda: sqs.send_message_batch(QueueUrl=url, Entries=eleven),
                 "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "10", exc=sqs.exceptions.TooManyEntriesInBatchRequest)
    expect_error(lambda: sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "ReceiptHandle": "h"} for i in range(11)]),
                 "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "10")
    expect_error(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "1"},
                                                                      {"Id": "same", "MessageBody": "2"}]),
                 "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "same", exc=sqs.exceptions.BatchEntryIdsNotDistinct)
    expect_error(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[]),
                 "AWS.SimpleQueueService.EmptyBatchRequest", exc=sqs.exceptions.EmptyBatchRequest)
    expect_error(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "not.valid", "MessageBody": "1"}]),
                 "AWS.SimpleQueueService.InvalidBatchEntryId", exc=sqs.exceptions.InvalidBatchEntryId)

    # ReceiveMessage parameters out of range.
    for kw, param in [({"MaxNumberOfMessages": 11}, "MaxNumberOfMessages"), ({"MaxNumberOfMessages": 0}, "MaxNumberOfMessages"),
                      ({"WaitTimeSeconds": 21}, "WaitTimeSeconds"), ({"VisibilityTimeout": 43201}, "VisibilityTimeout")]:
        expect_error(lambda: sqs.receive_message(QueueUrl=url, **kw), "InvalidParameterValue", param)

    # The one message sent before all that is there, intact and never received meanwhile.
    assert counts(sqs, url) == (1, 0, 0)
    [m] = receive(sqs, url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["ApproximateReceiveCount"])
    assert m["MessageId"] == sent["MessageId"] and m["Body"] == "precious"
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(ATTRIBUTES)
    assert_attributes(m["MessageAttributes"], ATTRIBUTES)
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"


def raw(server, target, body):
    return requests.post(server.endpoint + "/", data=body, timeout=10, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"})


def test_raw_protocol_errors(server, sqs):
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="still here")

    # The documented wire shape of an error: __type, message, and x-amzn-query-error.
    r = raw(server, "AmazonSQS.SendMessage",
            json.dumps({"QueueUrl": f"{server.endpoint}/{ACCOUNT}/{unique('missing')}", "MessageBody": "x"}))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/x-amz-json-1.0"), r.headers
    assert r.headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender", r.headers
    assert r.json()["__type"].endswith("QueueDoesNotExist"), r.text
    assert r.json()["message"], r.text

    for body in (b'{"QueueUrl": "', b"not json at all", b'{"QueueUrl": 5, "MessageBody": ["x"]}', b"[]"):
        r = raw(server, "AmazonSQS.SendMessage", body)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json().get("__type"), (body, r.text)

    r = raw(server, "AmazonSQS.SendMessage", json.dumps({"QueueUrl": url}))
    assert r.status_code == 400, r.text
    assert r.headers.get("x-amzn-query-error", "").startswith("MissingParameter;"), r.headers
    assert "MessageBody" in r.json()["message"], r.text

    r = raw(server, "AmazonSQS.FrobnicateQueue", b"{}")
    assert r.status_code in (400, 404), (r.status_code, r.text)
    kind = r.json().get("__type", "") + r.headers.get("x-amzn-query-error", "")
    assert "UnknownOperation" in kind or "InvalidAction" in kind, (r.headers, r.text)

    [m] = receive(sqs, url, MaxNumberOfMessages=10)
    assert m["Body"] == "still here"


def test_queue_metrics_count_sends_receives_deletes_and_empty_receives(sqs):
    """SQS's CloudWatch counts, per queue, at /metrics."""
    name = unique("metered")
    url = make_queue(sqs, name=name)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 3
    sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got[:2])])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # the third is in flight: empty
    text = requests.get(sqs.meta.endpoint_url + "/metrics", timeout=10).text
    for metric, value in [("sent", 3), ("received", 3), ("deleted", 2)]:
        assert f'nimbus_queue_messages_{metric}_total{{queue="{name}"}} {value}' in text, metric
    assert f'nimbus_queue_empty_receives_total{{queue="{name}"}} 1' in text
    sqs.delete_queue(QueueUrl=url)
    text = requests.get(sqs.meta.endpoint_url + "/metrics", timeout=10).text
    assert f'queue="{name}"' not in text
