"""Execution metrics: Prometheus text at /metrics, per-minute series at
/nimbus/v1/functions/{name}/metrics, `nimbus metrics`, and minutes that survive a restart.

The tests that count invocations need the execution engine to report them (the runtime's
calls into nimbus-telemetry's Metrics); they assert the real expected numbers:
test_invocations_errors_and_cold_starts_are_counted, test_versions_are_separate_series,
test_throttles_are_counted, test_deleted_function_leaves_the_scrape,
test_minutes_survive_a_restart_and_add_up, test_cli_prints_a_table_with_sparklines.
"""

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import NIMBUS_BIN, create, unique
from lambda_helpers import failed, ok

APP = """
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True, "version": context.function_version}
"""

FAMILIES = {
    "nimbus_invocations_total": "counter",
    "nimbus_errors_total": "counter",
    "nimbus_throttles_total": "counter",
    "nimbus_cold_starts_total": "counter",
    "nimbus_provisioned_concurrency_invocations_total": "counter",
    "nimbus_duration_seconds": "histogram",
    "nimbus_init_duration_seconds": "histogram",
    "nimbus_concurrent_executions": "gauge",
    "nimbus_provisioned_concurrency_utilization": "gauge",
    "nimbus_provisioned_concurrent_executions": "gauge",
}


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad labels at {text[pos:]!r}"
        value = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        labels[m.group(1)] = value
        pos = m.end()
    return labels


def scrape(server):
    """The /metrics text parsed line by line: {(name, frozenset(labels)): value}, {family: type}."""
    status, headers, text = get(server.endpoint + "/metrics")
    assert status == 200, text
    ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert text.endswith("\n")
    types, helps, samples, family = {}, set(), {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert help_text and name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name in helps and name not in types, line
            types[name] = kind
            family = name
        else:
            m = SAMPLE_RE.match(line)
            assert m and family, line
            name = m.group(1)
            suffixes = ("_bucket", "_sum", "_count") if types[family] == "histogram" else ()
            assert name == family or name in [family + s for s in suffixes], (family, line)
            value = float(m.group(4))
            key = (name, frozenset(parse_labels(m.group(3) or "").items()))
            assert key not in samples, line
            samples[key] = value
    return samples, types


def sample(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def series(server, name, **params):
    qs = urllib.parse.urlencode(params)
    status, _, body = get(f"{server.endpoint}/nimbus/v1/functions/{name}/metrics?{qs}")
    assert status == 200, body
    return json.loads(body)


def total(doc, field="invocations", version=None):
    return sum(p[field] for s in doc["series"] if version in (None, s["version"]) for p in s["points"])


# ---------------------------------------------------------------------------------------------
# Shapes and errors (no invocations needed)


def test_prometheus_text_is_well_formed_and_declares_every_family(server):
    _, types = scrape(server)
    for family, kind in FAMILIES.items():
        assert types.get(family) == kind, (family, types)


def test_series_of_a_new_function_is_empty_and_every_time_form_is_accepted(server, lam):
    name = create(lam, {"app.py": APP})
    now_ms = int(time.time() * 1000)
    for params in ({}, {"since": "1h"}, {"since": "90m", "until": "now"}, {"since": str(now_ms - 60_000)},
                   {"since": "2026-01-01T00:00:00Z"}, {"version": "$LATEST"}):
        doc = series(server, name, **params)
        assert doc["function"] == name and doc["period"] == 60, doc
        assert doc["series"] == [], (params, doc)
        assert doc["since"].endswith("Z") and doc["until"].endswith("Z")


def test_series_of_an_unknown_function_is_404_in_lambdas_shape(server):
    name = unique("nosuch")
    status, headers, body = get(f"{server.endpoint}/nimbus/v1/functions/{name}/metrics")
    assert status == 404, body
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert name in json.loads(body)["Message"]


@pytest.mark.parametrize("params, word", [
    ({"since": "yesterday"}, "since"),
    ({"since": "-1h"}, "since"),
    ({"since": "2026-13-45T00:00:00Z"}, "since"),
    ({"since": ""}, "since"),
    ({"until": "tomorrow"}, "until"),
    ({"since": "1h", "until": "2h"}, "before until"),
])
def test_bad_times_are_400_naming_the_parameter_and_the_accepted_forms(server, lam, params, word):
    name = create(lam, {"app.py": APP})
    qs = urllib.parse.urlencode(params)
    status, headers, body = get(f"{server.endpoint}/nimbus/v1/functions/{name}/metrics?{qs}")
    assert status == 400, body
    assert {k.lower(): v for k, v in headers.items()}["x-amzn-errortype"] == "InvalidParameterValueException"
    message = json.loads(body)["Message"]
    assert word in message, message
    if word != "before until":
        assert "ISO-8601" in message and "1h" in message, message


def test_cli_errors_name_the_problem(server, lam):
    missing = unique("nosuch")
    r = server.cli("metrics", missing, check=False)
    assert r.returncode != 0
    assert missing in r.stderr and "not found" in r.stderr.lower(), r.stderr
    name = create(lam, {"app.py": APP})
    r = server.cli("metrics", name, "--since", "last tuesday", check=False)
    assert r.returncode != 0
    assert "--since" in r.stderr and "ISO-8601" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = server.cli("metrics", name, "--since", "1h", "--until", "2h", check=False)
    assert r.returncode != 0 and "--since" in r.stderr and "--until" in r.stderr, r.stderr


def test_cli_says_when_there_was_no_activity(server, lam):
    name = create(lam, {"app.py": APP})
    r = server.cli("metrics", name, "--since", "30m")
    assert "no activity" in r.stdout and name in r.stdout, r.stdout


def test_metrics_endpoints_need_sigv4_when_credentials_are_configured(new_server):
    s = new_server("--access-key", "AK", "--secret-key", "SK")
    status, _, body = get(s.endpoint + "/metrics")
    assert status == 403, body
    req = AWSRequest(method="GET", url=s.endpoint + "/metrics")
    SigV4Auth(Credentials("AK", "SK"), "lambda", "us-east-1").add_auth(req)
    status, _, body = get(s.endpoint + "/metrics", headers=dict(req.headers))
    assert status == 200 and "# TYPE nimbus_invocations_total counter" in body, body
    status, _, _ = get(s.endpoint + "/nimbus/v1/functions/x/metrics")
    assert status == 403
    # The CLI signs its request: it gets past the auth layer to the 404 of an unknown function.
    r = s.cli("--access-key", "AK", "--secret-key", "SK", "metrics", "nosuch", check=False)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr, r.stderr


@pytest.mark.parametrize("how", ["flag", "file-kebab", "file-snake"])
def test_metrics_retention_must_be_at_least_a_day(tmp_path, how):
    args = [NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    if how == "flag":
        args += ["--metrics-retention-hours", "12"]
    else:
        key = "metrics-retention-hours" if how == "file-kebab" else "metrics_retention_hours"
        (tmp_path / "n.toml").write_text(f"{key} = 12\n")
        args += ["--config", str(tmp_path / "n.toml")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "metrics-retention-hours" in r.stderr and "24" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# Counting (needs the runtime to report invocations)


def test_invocations_errors_and_cold_starts_are_counted(server, lam):
    name = create(lam, {"app.py": APP})
    for _ in range(4):
        ok(lam, name)
    failed(lam, name, {"fail": True})

    samples, _ = scrape(server)
    labels = {"function": name, "version": "$LATEST"}
    assert sample(samples, "nimbus_invocations_total", **labels) == 5
    assert sample(samples, "nimbus_errors_total", **labels) == 1
    assert sample(samples, "nimbus_throttles_total", **labels) == 0
    assert sample(samples, "nimbus_cold_starts_total", **labels) >= 1
    assert sample(samples, "nimbus_concurrent_executions", **labels) == 0
    assert sample(samples, "nimbus_duration_seconds_count", **labels) == 5
    assert sample(samples, "nimbus_duration_seconds_bucket", le="+Inf", **labels) == 5
    assert sample(samples, "nimbus_duration_seconds_sum", **labels) > 0
    cold = sample(samples, "nimbus_cold_starts_total", **labels)
    assert 1 <= sample(samples, "nimbus_init_duration_seconds_count", **labels) <= cold
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                     if k[0] == "nimbus_duration_seconds_bucket" and dict(k[1])["function"] == name)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative"

    doc = series(server, name, since="1h")
    assert [s["version"] for s in doc["series"]] == ["$LATEST"]
    s = doc["series"][0]
    assert total(doc) == 5 and total(doc, "errors") == 1
    assert total(doc, "coldStarts") == cold
    assert s["summary"]["invocations"] == 5 and s["summary"]["errors"] == 1
    assert s["summary"]["durationP50Ms"] > 0
    assert s["summary"]["durationP50Ms"] <= s["summary"]["durationP99Ms"] <= s["summary"]["durationMaxMs"]
    assert s["summary"]["concurrentExecutionsMax"] >= 1
    for p in s["points"]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z", p["timestamp"]), p
    assert series(server, name, version="$LATEST")["series"] == doc["series"]
    assert series(server, name, version="7")["series"] == []
    assert total(series(server, f"{name}:$LATEST")) == 5


def test_versions_are_separate_series(server, lam):
    name = create(lam, {"app.py": APP})
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert ok(lam, name, Qualifier="1")["version"] == "1"
    assert ok(lam, name, Qualifier="live")["version"] == "1"
    ok(lam, name)

    samples, _ = scrape(server)
    assert sample(samples, "nimbus_invocations_total", function=name, version="1") == 2
    assert sample(samples, "nimbus_invocations_total", function=name, version="$LATEST") == 1
    doc = series(server, name)
    assert sorted(s["version"] for s in doc["series"]) == ["$LATEST", "1"]
    assert total(doc, version="1") == 2 and total(doc, version="$LATEST") == 1
    assert total(series(server, name, version="1")) == 2


def test_throttles_are_counted(server, lam):
    name = create(lam, {"app.py": APP})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    # Plain HTTP: boto3 retries a 429 once even with max_attempts=1, which would be four.
    for _ in range(2):
        req = urllib.request.Request(f"{server.endpoint}/2015-03-31/functions/{name}/invocations",
                                     data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 429
    samples, _ = scrape(server)
    labels = {"function": name, "version": "$LATEST"}
    assert sample(samples, "nimbus_throttles_total", **labels) == 2
    assert sample(samples, "nimbus_invocations_total", **labels) == 0
    assert total(series(server, name), "throttles") == 2


def test_deleted_function_leaves_the_scrape(server, lam):
    name = create(lam, {"app.py": APP})
    ok(lam, name)
    samples, _ = scrape(server)
    assert sample(samples, "nimbus_invocations_total", function=name, version="$LATEST") == 1
    lam.delete_function(FunctionName=name)
    samples, _ = scrape(server)
    assert not [k for k in samples if ("function", name) in k[1]]


def test_minutes_survive_a_restart_and_add_up(new_server, tmp_path):
    data = tmp_path / "data"
    s1 = new_server(data_dir=data)
    lam = s1.lambda_client()
    name = create(lam, {"app.py": APP})
    for _ in range(2):
        ok(lam, name)
    failed(lam, name, {"fail": True})
    assert total(series(s1, name)) == 3
    assert s1.stop() == 0

    s2 = new_server(data_dir=data)
    lam = s2.lambda_client()
    # The minute in progress at shutdown was stored; live counters start again.
    doc = series(s2, name)
    assert total(doc) == 3 and total(doc, "errors") == 1, doc
    samples, _ = scrape(s2)
    assert sample(samples, "nimbus_invocations_total", function=name, version="$LATEST") is None
    for _ in range(2):
        ok(lam, name)
    # Stored minutes and the minute in memory add up, also when they are the same minute.
    doc = series(s2, name)
    assert total(doc) == 5 and total(doc, "errors") == 1, doc
    assert doc["series"][0]["summary"]["invocations"] == 5
    r = s2.cli("metrics", name, "--since", "1h")
    row = next(line for line in r.stdout.splitlines() if line.startswith("Invocations"))
    assert row.split()[1] == "5", r.stdout
    assert s2.stop() == 0


def test_cli_prints_a_table_with_sparklines(server, lam):
    name = create(lam, {"app.py": APP})
    for _ in range(3):
        ok(lam, name)
    failed(lam, name, {"fail": True})
    r = server.cli("metrics", name, "--since", "1h")
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{name} version $LATEST"), r.stdout
    assert lines[1].split()[:2] == ["METRIC", "TOTAL"], r.stdout
    rows = {}
    for line in lines[2:]:
        label, rest = re.split(r"\s{2,}", line, maxsplit=1)
        rows[label] = rest
    assert set(rows) == {"Invocations", "Errors", "Throttles", "ColdStarts", "Duration p50", "Duration p90",
                         "Duration p99", "InitDuration p50", "ConcurrentExecutions max",
                         "ProvisionedConcurrencyUtilization max"}, r.stdout
    total_, spark = rows["Invocations"].split()
    assert total_ == "4"
    assert set(spark) <= set("▁▂▃▄▅▆▇█") and "█" in spark and len(spark) <= 40, spark
    assert rows["Errors"].split()[0] == "1"
    assert rows["Duration p50"].split()[1] in ("ms", "s"), rows["Duration p50"]
    assert rows["ProvisionedConcurrencyUtilization max"].split()[0] == "-"

    doc = json.loads(server.cli("metrics", name, "--since", "1h", "--json").stdout)
    assert total(doc) == 4 and doc["series"][0]["version"] == "$LATEST"
    # A day in at most 40 columns.
    r = server.cli("metrics", name, "--since", "1d")
    spark = next(line for line in r.stdout.splitlines() if line.startswith("Invocations")).split()[-1]
    assert len(spark) <= 40 and "█" in spark, r.stdout
