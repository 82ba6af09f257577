"""`nimbus queue ...`: queues created, inspected, fed and drained from the CLI, cross-checked with
boto3's sqs and lambda clients; event source mappings attached and detached; and the CLI's
answers to bad input."""

import json
import re
import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import NIMBUS_BIN, create, unique
from lambda_helpers import wait_until

ACCOUNT = "000000000000"
ARN = "arn:aws:sqs:us-east-1:" + ACCOUNT + ":{}"

SINK = {"app.py": "import json\n\ndef handler(event, context):\n"
                  "    for r in event['Records']:\n"
                  "        print('BODY ' + json.dumps(r['body']))\n"
                  "    return {}\n"}


@pytest.fixture(scope="module")
def sqs(server):
    return boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def table(stdout):
    """A table the CLI printed as a list of {HEADER: cell} (columns are 2+ spaces apart)."""
    lines = [l for l in stdout.splitlines() if l.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", l.strip()))) for l in lines[1:]]


def fails(server, *args, input=None):
    """Runs a CLI command that must fail; returns its stderr."""
    r = server.cli(*args, check=False, input=input)
    assert r.returncode != 0, (args, r.stdout, r.stderr)
    assert r.stdout == "", (args, r.stdout)
    return r.stderr


def attrs(sqs, name):
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_create_ls_attrs_send_receive_purge_rm(server, sqs):
    dead, name = unique("dead"), unique("jobs")
    server.cli("queue", "create", dead)
    out = server.cli("queue", "create", name, "--attr", "VisibilityTimeout=45", "--tag", "team=core").stdout
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    assert out.strip() == f"created queue {name}: {url}"
    assert attrs(sqs, name)["VisibilityTimeout"] == "45"
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "core"}

    policy = json.dumps({"deadLetterTargetArn": ARN.format(dead), "maxReceiveCount": 3})
    shown = table(server.cli("queue", "attrs", name, "--set", f"RedrivePolicy={policy}",
                             "--set", "DelaySeconds=2").stdout)
    shown = {r["ATTRIBUTE"]: r["VALUE"] for r in shown}
    assert json.loads(attrs(sqs, name)["RedrivePolicy"]) == {"deadLetterTargetArn": ARN.format(dead), "maxReceiveCount": 3}
    assert shown["DelaySeconds"] == "2" and attrs(sqs, name)["DelaySeconds"] == "2"
    assert shown["QueueArn"] == ARN.format(name) and shown["VisibilityTimeout"] == "45"
    as_json = json.loads(server.cli("queue", "attrs", name, "--set", "DelaySeconds=0", "--json").stdout)
    assert as_json == attrs(sqs, name)

    # Sent from the CLI, received with boto3, with the string attribute.
    mid = server.cli("queue", "send", name, "hello from the cli", "--attr", "color=blue").stdout.strip()
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0)["Messages"]
    assert [(m["MessageId"], m["Body"]) for m in got] == [(mid, "hello from the cli")]
    assert got[0]["MessageAttributes"] == {"color": {"DataType": "String", "StringValue": "blue"}}

    # ls: counts as boto3 sees them, the dead-letter queue, the URL.
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    rows = {r["NAME"]: r for r in table(server.cli("queue", "ls", name).stdout)}
    assert list(rows) == [name]
    assert rows[name] == {"NAME": name, "MESSAGES": "1", "IN FLIGHT": "0", "DELAYED": "1",
                          "DLQ": f"{dead} after 3 receives", "URL": url}
    listed = json.loads(server.cli("queue", "ls", "--json").stdout)
    mine = [q for q in listed if q["QueueName"] in (name, dead)]
    assert [q["QueueName"] for q in mine] == sorted([name, dead])
    assert {q["QueueName"]: q["QueueUrl"] for q in mine}[name] == url
    assert [q for q in mine if q["QueueName"] == dead][0]["Attributes"]["ApproximateNumberOfMessages"] == "0"

    # receive: id, receive count and body; the message stays in flight for --visibility.
    rows = table(server.cli("queue", "receive", name, "--visibility", "60").stdout)
    assert rows == [{"ID": mid, "RECEIVES": "2", "BODY": "hello from the cli"}]
    a = attrs(sqs, name)
    assert (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")
    assert server.cli("queue", "receive", name).stdout.strip() == f"no messages in {name}"
    assert json.loads(server.cli("queue", "receive", name, "--json").stdout) == []

    # --json gives the raw messages, whose receipt handle boto3 can use.
    sqs.send_message(QueueUrl=url, MessageBody="second")
    raw = json.loads(server.cli("queue", "receive", name, "--json", "--visibility", "60").stdout)
    assert [m["Body"] for m in raw] == ["second"] and raw[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=raw[0]["ReceiptHandle"], VisibilityTimeout=0)

    # --delete deletes what it printed, and only that.
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"batch {i}")
    out = server.cli("queue", "receive", name, "--max", "10", "--delete").stdout
    printed = table(out.rsplit("\n", 2)[0])
    assert sorted(r["BODY"] for r in printed) == ["batch 0", "batch 1", "batch 2", "second"]
    assert out.strip().endswith("deleted 4 messages")
    a = attrs(sqs, name)
    assert (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")

    # purge empties the queue (the delayed message too); rm deletes it.
    assert server.cli("queue", "purge", name).stdout.strip() == f"purged queue {name}"
    a = attrs(sqs, name)
    assert [a[k] for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                           "ApproximateNumberOfMessagesDelayed")] == ["0", "0", "0"]
    assert server.cli("queue", "rm", name).stdout.strip() == f"deleted queue {name}"
    with pytest.raises(ClientError) as e:
        sqs.get_queue_url(QueueName=name)
    assert e.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert name not in server.cli("queue", "ls").stdout


def test_fifo_queue_groups_and_deduplication(server, sqs):
    name = unique("orders") + ".fifo"
    server.cli("queue", "create", name)
    assert attrs(sqs, name)["FifoQueue"] == "true"
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]

    assert "--group" in fails(server, "queue", "send", name, "no group")
    need_dedup = fails(server, "queue", "send", name, "no dedup", "--group", "g")
    assert "ContentBasedDeduplication" in need_dedup or "MessageDeduplicationId" in need_dedup
    first = server.cli("queue", "send", name, "a", "--group", "g", "--dedup", "d1", "--json").stdout
    assert json.loads(first)["SequenceNumber"]
    server.cli("queue", "send", name, "a again", "--group", "g", "--dedup", "d1")  # a duplicate: dropped
    server.cli("queue", "send", name, "c", "--group", "g", "--dedup", "d2")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["a", "c"]
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"g"}
    assert {m["Attributes"]["MessageDeduplicationId"] for m in got} == {"d1", "d2"}

    # With content-based deduplication set from the CLI, --dedup is no longer needed.
    server.cli("queue", "attrs", name, "--set", "ContentBasedDeduplication=true")
    server.cli("queue", "send", name, "by content", "--group", "h")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["by content"]
    server.cli("queue", "rm", name)


def test_body_from_stdin_kept_exactly(server, sqs):
    name = unique("stdin")
    server.cli("queue", "create", name)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    body = 'line one\n{"two": 2}\n\tthree é\n'
    mid = server.cli("queue", "send", name, "-", input=body).stdout.strip()
    got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
    assert [(m["MessageId"], m["Body"]) for m in got] == [(mid, body)]
    # The table shows a body with line breaks escaped; --json shows it exactly.
    rows = table(server.cli("queue", "receive", name, "--visibility", "0").stdout)
    assert rows[0]["BODY"] == json.dumps(body, ensure_ascii=False)
    assert json.loads(server.cli("queue", "receive", name, "--json").stdout)[0]["Body"] == body

    r = subprocess.run([NIMBUS_BIN, "queue", "send", name, "-"], input=b"\xff\xfe bad", capture_output=True,
                       env={"NIMBUS_ENDPOINT": server.endpoint, "PATH": "/usr/bin:/bin"}, timeout=30)
    assert r.returncode != 0 and b"not UTF-8" in r.stderr, r
    server.cli("queue", "rm", name)


def test_attach_mappings_detach(server, sqs, lam):
    fn = create(lam, SINK)
    lam.publish_version(FunctionName=fn)
    name, other = unique("feed"), unique("feed")
    server.cli("queue", "create", name)
    server.cli("queue", "create", other)

    uuid = server.cli("queue", "attach", name, "--function", fn, "--batch-size", "5", "--report-failures").stdout.strip()
    m = lam.get_event_source_mapping(UUID=uuid)
    assert m["EventSourceArn"] == ARN.format(name) and m["FunctionArn"].endswith(f":function:{fn}")
    assert m["BatchSize"] == 5 and m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    dup = fails(server, "queue", "attach", name, "--function", fn)
    assert "already exists" in dup and uuid in dup

    disabled = json.loads(server.cli("queue", "attach", other, "--function", f"{fn}:1", "--batch-size", "20",
                                     "--window", "2", "--concurrency", "3", "--disabled", "--json").stdout)
    assert disabled["FunctionArn"].endswith(f":function:{fn}:1")
    assert (disabled["BatchSize"], disabled["MaximumBatchingWindowInSeconds"]) == (20, 2)
    assert disabled["ScalingConfig"] == {"MaximumConcurrency": 3}
    assert lam.get_event_source_mapping(UUID=disabled["UUID"])["State"] == "Disabled"

    # The mapping works: a message sent from the CLI reaches the function.
    server.cli("queue", "send", name, "to the function")
    logs = lambda: server.cli("logs", fn, "--filter", "BODY ").stdout
    assert wait_until(lambda: '"to the function"' in logs(), 30), logs()

    rows = {r["UUID"]: r for r in table(server.cli("queue", "mappings").stdout)}
    assert rows[uuid] == {"UUID": uuid, "QUEUE": name, "FUNCTION": fn, "BATCH": "5", "WINDOW": "0 s",
                          "STATE": "Enabled", "LAST RESULT": rows[uuid]["LAST RESULT"]}
    assert wait_until(lambda: table(server.cli("queue", "mappings", name).stdout)[0]["LAST RESULT"] == "OK", 10)
    only = table(server.cli("queue", "mappings", other).stdout)
    assert [(r["UUID"], r["FUNCTION"], r["BATCH"], r["WINDOW"], r["STATE"]) for r in only] == \
        [(disabled["UUID"], f"{fn}:1", "20", "2 s", "Disabled")]
    listed = json.loads(server.cli("queue", "mappings", name, "--json").stdout)
    assert [x["UUID"] for x in listed] == [uuid]

    out = server.cli("queue", "detach", uuid).stdout
    assert uuid in out and name in out and fn in out
    with pytest.raises(ClientError) as e:
        lam.get_event_source_mapping(UUID=uuid)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert table(server.cli("queue", "mappings", name).stdout) == []
    assert "no event source mapping" in fails(server, "queue", "detach", uuid)

    # Deleting a queue that still feeds a function says so.
    r = server.cli("queue", "rm", other)
    assert disabled["UUID"] in r.stderr and "detach" in r.stderr
    server.cli("queue", "detach", disabled["UUID"])
    server.cli("queue", "rm", name)


def test_bad_input_is_named_and_fails(server, sqs, lam):
    name, missing = unique("errs"), unique("missing")
    server.cli("queue", "create", name)
    fifo = unique("errs") + ".fifo"
    server.cli("queue", "create", fifo)
    fn = create(lam, SINK)
    cases = [
        (["queue", "create", unique("refused"), "--attr", "VisibilityTimeout"], '--attr "VisibilityTimeout" must look like KEY=VALUE'),
        (["queue", "create", unique("refused"), "--tag", "=x"], '--tag "=x" has no KEY'),
        (["queue", "create", unique("refused"), "--attr", "Colour=red"], "Unknown Attribute Colour"),
        (["queue", "create", unique("refused"), "--attr", "VisibilityTimeout=99999"], "VisibilityTimeout"),
        (["queue", "create", "bad name!"], "alphanumeric"),
        (["queue", "attrs", name, "--set", "DelaySeconds"], '--set "DelaySeconds" must look like KEY=VALUE'),
        (["queue", "attrs", name, "--set", "DelaySeconds=901"], "DelaySeconds"),
        (["queue", "send", name, "x", "--attr", "novalue"], '--attr "novalue" must look like KEY=VALUE'),
        (["queue", "send", name, "x", "--delay", "901"], "DelaySeconds"),
        (["queue", "send", name, "x", "--dedup", "d"], "MessageDeduplicationId"),
        (["queue", "send", fifo, "x"], f"{fifo} is a FIFO queue"),
        (["queue", "send", name, ""], "MessageBody"),
        (["queue", "receive", name, "--max", "11"], "MaxNumberOfMessages"),
        (["queue", "receive", name, "--wait", "21"], "WaitTimeSeconds"),
        (["queue", "receive", name, "--max", "-1"], "-1"),
        (["queue", "attach", name, "--function", unique("nofn")], "Function not found"),
        (["queue", "attach", name, "--function", fn, "--batch-size", "50"], "batch window"),
        (["queue", "attach", name, "--function", fn, "--concurrency", "1"], "MaximumConcurrency"),
        (["queue", "detach", "00000000-0000-0000-0000-000000000000"], "no event source mapping has the UUID"),
    ]
    for m in ["attrs", "rm", "purge", "receive", "mappings"]:
        cases.append((["queue", m, missing], f"queue {missing} does not exist"))
    cases.append((["queue", "send", missing, "x"], f"queue {missing} does not exist"))
    cases.append((["queue", "attach", missing, "--function", fn], f"queue {missing} does not exist"))
    for args, text in cases:
        err = fails(server, *args)
        assert text in err, (args, err)
    # Nothing was made by the refused commands.
    created = [q for q in json.loads(server.cli("queue", "ls", "--json").stdout)
               if q["QueueName"] not in (name, fifo)]
    assert not [q for q in created if q["QueueName"].startswith("refused-") or q["QueueName"] == "bad name!"]
    assert table(server.cli("queue", "mappings", name).stdout) == []
    assert attrs(sqs, name)["ApproximateNumberOfMessages"] == "0"
    assert server.cli("queue", "ls", missing).stdout.splitlines() == ["NAME  MESSAGES  IN FLIGHT  DELAYED  DLQ  URL"]
    server.cli("queue", "rm", name)
    server.cli("queue", "rm", fifo)
