"""One instance cannot use another instance's Runtime API endpoint to steal its events."""

import json

from conftest import create

VICTIM = """
import os
def handler(event, context):
    return {"api": os.environ["AWS_LAMBDA_RUNTIME_API"]}
"""

THIEF = """
import socket
def handler(event, context):
    host, port = event["api"].split(":")
    s = socket.create_connection((host, int(port)), timeout=2)
    try:
        s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        data = s.recv(65536)
    except socket.timeout:
        # Accepted and left waiting: the endpoint would have handed over the next event.
        return {"outcome": "accepted"}
    except ConnectionResetError:
        return {"outcome": "closed"}
    return {"outcome": "closed" if data == b"" else "answered", "data": data.decode("latin-1")}
"""


def test_another_instance_cannot_take_events_from_a_runtime_api_port(lam):
    victim = create(lam, {"app.py": VICTIM})
    thief = create(lam, {"app.py": THIEF})
    api = json.load(lam.invoke(FunctionName=victim)["Payload"])["api"]
    # The victim's runtime is waiting in invocation/next on that port. A foreign connection must
    # be closed at once, not accepted (where it would wait for, and get, the victim's next event).
    out = json.load(lam.invoke(FunctionName=thief, Payload=json.dumps({"api": api}))["Payload"])
    assert out["outcome"] == "closed", out
    # The victim's own runtime still works.
    again = json.load(lam.invoke(FunctionName=victim)["Payload"])
    assert again["api"] == api
