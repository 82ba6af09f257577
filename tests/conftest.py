"""Shared fixtures for Nimbus's integration tests.

Every test talks to the real `nimbus` binary, started on an ephemeral loopback port with its own
temporary data directory, through real clients (boto3, the CLI, plain HTTP). The server is
stopped by its PID at the end.
"""

import io
import os
import re
import signal
import subprocess
import threading
import time
import uuid
import zipfile

import boto3

import lambda_helpers
import pytest
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIMBUS_BIN = os.environ.get("NIMBUS_BIN", os.path.join(ROOT, "target", "debug", "nimbus"))


class NimbusServer:
    """One `nimbus up` process."""

    def __init__(self, data_dir, extra_args=()):
        self.data_dir = str(data_dir)
        self.extra_args = list(extra_args)
        self.proc = None
        self.endpoint = None
        self.gateway = None
        self.log_lines = []

    def start(self, timeout=30):
        gateway_args = [] if "--gateway-addr" in self.extra_args else ["--gateway-addr", "127.0.0.1:0"]
        args = [NIMBUS_BIN, "up", "--api-addr", "127.0.0.1:0", *gateway_args, "--data-dir", self.data_dir, *self.extra_args]
        env = dict(os.environ, NIMBUS_LOG=os.environ.get("NIMBUS_LOG", "info"))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log_lines.append(line)
            g = re.search(r"nimbus gateway listening on (https?://\S+)", line)
            if g:
                self.gateway = g.group(1)
            m = re.search(r"nimbus listening on (http://\S+)", line)
            if m:
                self.endpoint = m.group(1)
                lambda_helpers.SERVERS.add(self.endpoint)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("nimbus did not start:\n" + "".join(self.log_lines))

    def _drain(self):
        for line in self.proc.stdout:
            self.log_lines.append(line)

    def log(self):
        return "".join(self.log_lines)

    def stop(self, timeout=30):
        """SIGTERM by PID and wait; returns the exit code."""
        lambda_helpers.SERVERS.discard(self.endpoint)
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def lambda_client(self, **config):
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120, connect_timeout=5, **config)
        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=cfg,
        )

    def sqs_client(self, **config):
        """A boto3 `sqs` client for the built-in queues (same address as the Lambda API)."""
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60, connect_timeout=5, **config)
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=cfg,
        )

    def cli(self, *args, check=True, timeout=60, input=None):
        """Runs the CLI against this server; returns the CompletedProcess."""
        env = dict(os.environ, NIMBUS_ENDPOINT=self.endpoint)
        r = subprocess.run([NIMBUS_BIN, *args], capture_output=True, text=True, env=env, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"nimbus {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server shared by the tests that do not restart it."""
    s = NimbusServer(tmp_path_factory.mktemp("nimbus-data"), ["--max-instances", "64"]).start()
    yield s
    s.stop()


@pytest.fixture
def new_server(tmp_path):
    """A factory for private servers (restart tests, limits); all are stopped afterwards."""
    started = []

    def make(*extra_args, data_dir=None):
        s = NimbusServer(data_dir or tmp_path / f"data-{len(started)}", extra_args).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def lam(server):
    return server.lambda_client()


def unique(prefix="fn"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_zip(files):
    """files: {name: text | bytes | (text_or_bytes, unix_mode)} -> zip bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            mode = 0o644
            if isinstance(content, tuple):
                content, mode = content
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
    return buf.getvalue()


def create(lam, files, runtime="python3.12", handler="app.handler", name=None, **kw):
    """Creates a function from files and returns its name."""
    name = name or unique()
    lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role="arn:aws:iam::000000000000:role/test",
        Handler=handler,
        Code={"ZipFile": make_zip(files)},
        **kw,
    )
    return name
