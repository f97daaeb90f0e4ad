"""One deployed Function App, as the Azure deploy proof runs it: the staged app folder's function_app.py in its
own process with the app's settings, its functions invoked one event at a time the way the Functions host
invokes them, every call the app's identity makes recorded.

    python -m tests.azure_host APP RECORD_FILE      (cwd: the staged app folder)

Reads one JSON request per line on stdin, writes one JSON line per invocation to the original stdout:
    {"function": "api", "http": {"method", "path", "headers", "body", "params"}}
    {"function": "worker" | "dead_letter", "message": {"body", "id", "delivery_count", "properties"}}
    {"function": "reconcile"}
answered with {"completed": bool, "http": {...}, "out": [...], "sent": [...], "scheduled": [[body, props, s]]}.
A function the app disables (`AzureWebJobs.NAME.Disabled`) is refused, as the host would never run it. The
Service Bus SDK's sender is a recording stand-in here (no emulator can be installed), whose messages are
returned for the test's Service Bus to enqueue; its trigger deliveries and the output binding, which the
host makes with the app's identity, are recorded as the app's own calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from typing import Any


class RecordingSender:
    def __init__(self, recorder: Any, queue: str) -> None:
        self.recorder, self.queue = recorder, queue
        self.sent: list[list[Any]] = []

    def send_messages(self, msg: Any) -> None:
        self.recorder.write(transport="servicebus", method="send", entity=self.queue)
        self.sent.append([str(msg), dict(msg.application_properties or {}), 0.0])

    def schedule_messages(self, msg: Any, when: dt.datetime) -> list[int]:
        self.recorder.write(transport="servicebus", method="send", entity=self.queue)
        delay = max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
        props = {k.decode() if isinstance(k, bytes) else k: v for k, v in (msg.application_properties or {}).items()}
        self.sent.append([str(msg), props, delay])
        return [len(self.sent)]


def main() -> None:
    app_name, record = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the functions' output is their log, never the protocol
    sys.stdout = sys.stderr
    from tests.cloud_calls import Recorder, install

    install(record, app_name)
    recorder = Recorder(record, app_name)
    queue = os.environ["ALTO_QUEUE_NAME"]
    sender = RecordingSender(recorder, queue)
    from adapters.azure import app as azure_app

    azure_app.get_app.factory = lambda: azure_app.build(sender_factory=lambda: sender)
    azure_app.get_api_app.factory = lambda: azure_app.build(api_only=True, sender_factory=lambda: sender)
    import function_app  # the staged app's entry, as the host loads it

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    loop = asyncio.new_event_loop()  # the host's loop: async functions (the worker) run on it
    for line in sys.stdin:
        request = json.loads(line)
        name = request["function"]
        sender.sent = []
        if os.environ.get(f"AzureWebJobs.{name}.Disabled", "").lower() == "true":
            out: dict[str, Any] = {"error": f"{name} is disabled in app {app_name}"}
        else:
            out = invoke(functions[name], request, recorder, queue, loop)
        out["sent"] = sender.sent
        protocol.write(json.dumps(out) + "\n")
        protocol.flush()


def invoke(
    fn: Any, request: dict[str, Any], recorder: Any, queue: str, loop: asyncio.AbstractEventLoop
) -> dict[str, Any]:
    import azure.functions as func
    from azure.functions.servicebus import ServiceBusMessage

    name = request["function"]
    if "http" in request:
        h = request["http"]

        class Out(func.Out):  # type: ignore[misc]
            value: Any = None

            def set(self, val: Any) -> None:
                self.value = val

            def get(self) -> Any:
                return self.value

        out = Out()
        resp = fn(
            func.HttpRequest(
                h["method"],
                f"https://app.example{h['path']}",
                headers=h.get("headers", {}),
                body=(h.get("body") or "").encode(),
                params=h.get("params") or {},
            ),
            out,
        )
        messages = [] if out.value is None else out.value if isinstance(out.value, list) else [out.value]
        for _ in messages:  # the output binding sends as the app
            recorder.write(transport="servicebus", method="send", entity=queue)
        return {
            "completed": True,
            "out": messages,
            "http": {
                "status": resp.status_code,
                "body": resp.get_body().decode(),
                "headers": dict(resp.headers),
                "mimetype": resp.mimetype,
            },
        }
    if "message" in request:
        m = request["message"]
        entity = queue + ("/$DeadLetterQueue" if name == "dead_letter" else "")
        recorder.write(transport="servicebus", method="receive", entity=entity)  # the trigger, as the app
        msg = ServiceBusMessage(
            body=m["body"].encode(),
            message_id=m["id"],
            delivery_count=m["delivery_count"],
            application_properties=m.get("properties") or {},
            user_properties={},
            content_type="application/json",
        )
        try:
            result = fn(msg)
            if asyncio.iscoroutine(result):
                loop.run_until_complete(result)
            return {"completed": True}
        except Exception as e:  # the host abandons the message: Service Bus redelivers it
            return {"completed": False, "error": f"{type(e).__name__}: {e}"[:500]}
    result = fn(None)  # the timer's argument is unused
    if asyncio.iscoroutine(result):
        loop.run_until_complete(result)
    return {"completed": True}


if __name__ == "__main__":
    main()
