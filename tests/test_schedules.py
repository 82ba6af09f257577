"""Schedules: EventBridge expressions checked by the API and the CLI, a live schedule firing a
function with EventBridge's Scheduled Event (and a fixed input) on time, enable/disable, and a
restart that neither loses nor repeats a period."""

import datetime
import json
import time
import urllib.request

import pytest
import requests

from conftest import NimbusServer, create, unique
from lambda_helpers import wait_until

SINK = {"app.py": "import json\n\ndef handler(event, context):\n    print('EVENT ' + json.dumps(event))\n    return {}\n"}


def events_of(server, fn):
    url = f"{server.endpoint}/nimbus/v1/functions/{fn}/logs?filter=EVENT%20&limit=10000"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return [json.loads(e["message"].split("EVENT ", 1)[1]) for e in json.load(resp)["events"]]


def test_schedules_are_checked_and_managed(server, lam):
    fn = create(lam, SINK)
    base = f"{server.endpoint}/nimbus/v1/schedules"
    bad = [
        ({"name": "s1", "expression": "rate(1 minutes)", "function": fn}, "singular"),
        ({"name": "s1", "expression": "cron(* * * * * *)", "function": fn}, "?"),
        ({"name": "s1", "expression": "cron(0 0 * *)", "function": fn}, "six"),
        ({"name": "s1", "expression": "every day", "function": fn}, "expression"),
        ({"name": "s1", "expression": "rate(5 minutes)", "function": fn, "timezone": "Mars/Base"}, "Mars/Base"),
        ({"name": "bad name", "expression": "rate(5 minutes)", "function": fn}, "name"),
        ({"name": "s1", "expression": "rate(5 minutes)", "function": fn, "input": "x" * 9000}, "8192"),
        ({"name": "s1", "expression": "rate(5 minutes)", "function": fn, "extra": 1}, "extra"),
    ]
    for body, text in bad:
        r = requests.post(base, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert text in r.json()["message"], (body, r.text)
    r = requests.post(base, json={"name": "s1", "expression": "rate(5 minutes)", "function": "no-such-fn"}, timeout=10)
    assert r.status_code == 404 and r.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert requests.get(base, timeout=10).json()["schedules"] == [] or all(
        s["name"] != "s1" for s in requests.get(base, timeout=10).json()["schedules"])

    name = unique("sched")
    r = server.cli("schedule", "add", name, "--expr", "cron(30 2 ? * MON-FRI *)", "--function", fn,
                   "--tz", "Europe/Berlin", "--json")
    shown = json.loads(r.stdout)
    assert shown["expression"] == "cron(30 2 ? * MON-FRI *)" and shown["timezone"] == "Europe/Berlin"
    nxt = datetime.datetime.fromisoformat(shown["nextFire"].replace("Z", "+00:00"))
    # 02:30 in Berlin is 00:30 or 01:30 UTC, on a weekday.
    assert (nxt.hour, nxt.minute) in [(0, 30), (1, 30)] and nxt > datetime.datetime.now(datetime.timezone.utc)
    dup = server.cli("schedule", "add", name, "--expr", "rate(1 day)", "--function", fn, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert name in server.cli("schedule", "ls").stdout
    off = json.loads(server.cli("schedule", "disable", name, "--json").stdout)
    assert off["enabled"] is False and off["nextFire"] is None
    on = json.loads(server.cli("schedule", "enable", name, "--json").stdout)
    assert on["enabled"] is True and on["nextFire"] == shown["nextFire"]
    server.cli("schedule", "rm", name)
    gone = server.cli("schedule", "rm", name, check=False)
    assert gone.returncode != 0 and "ResourceNotFoundException" in gone.stderr


def test_a_schedule_fires_every_period_once_across_a_restart(tmp_path):
    data = tmp_path / "data"
    server = NimbusServer(data).start()
    try:
        lam = server.lambda_client()
        fn = create(lam, SINK)
        sched, fixed = unique("every-minute"), unique("with-input")
        server.cli("schedule", "add", sched, "--expr", "cron(* * * * ? *)", "--function", fn)
        server.cli("schedule", "add", fixed, "--expr", "cron(* * * * ? *)", "--function", fn,
                   "--input", '{"fixed": true}')
        # The next minute boundary fires both (at most ~60 s away).
        assert wait_until(lambda: len(events_of(server, fn)) >= 2, 75), events_of(server, fn)
        got = events_of(server, fn)
        scheduled = [e for e in got if e.get("detail-type") == "Scheduled Event"]
        assert [e for e in got if e == {"fixed": True}], got
        [ev] = scheduled
        assert ev["source"] == "aws.events" and ev["version"] == "0" and ev["detail"] == {}
        assert ev["account"] == "000000000000" and ev["region"] == "us-east-1"
        assert ev["resources"] == [f"arn:aws:events:us-east-1:000000000000:rule/{sched}"]
        fired = datetime.datetime.fromisoformat(ev["time"].replace("Z", "+00:00"))
        assert fired.second == 0, ev["time"]
        # Restart right after the fire: the period that fired does not fire again, the next does.
        server.stop()
        server = NimbusServer(data).start()
        assert wait_until(lambda: len([e for e in events_of(server, fn)
                                       if e.get("detail-type") == "Scheduled Event"]) >= 2, 75)
        times = [e["time"] for e in events_of(server, fn) if e.get("detail-type") == "Scheduled Event"]
        assert len(times) == len(set(times)), f"a period fired twice: {times}"
        t = sorted(datetime.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in times)
        assert (t[1] - t[0]).total_seconds() == 60, times
    finally:
        server.stop()
