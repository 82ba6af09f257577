"""The python example: greets whoever the event names and shows what Lambda's context offers."""

import json


def handler(event, context):
    name = (event or {}).get("name", "world") if isinstance(event, dict) else "world"
    print(f"hello from python, {name}")
    return {
        "message": f"Hello, {name}!",
        "runtime": "python3",
        "requestId": context.aws_request_id,
        "function": context.function_name,
        "version": context.function_version,
        "memoryLimitInMB": context.memory_limit_in_mb,
        "remainingMs": context.get_remaining_time_in_millis(),
        "echo": event,
    }
