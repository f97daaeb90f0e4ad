"""One deployed Lambda function's container, as the AWS deploy proof runs it: its own process, its own
environment (the template's variables and its role's credentials), invoked one event at a time.

    python -m tests.lambda_host HANDLER TIMEOUT_S     (HANDLER as the template names it: adapters/aws/handlers.worker)

Reads one JSON event per line on stdin and writes one JSON line per invocation to the original stdout:
`{"result": ...}` or `{"error": "...", "type": "..."}` (a function error, as Lambda reports one). The
function's own output (logs, EMF lines) goes to stderr, as a container's does to CloudWatch Logs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback


class Context:
    """What the handlers read from Lambda's context object: the time left before the function's timeout."""

    def __init__(self, timeout_s: float, name: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.function_name = name

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def main() -> None:
    handler_name, timeout_s = sys.argv[1], float(sys.argv[2])
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # everything the function prints is its log, never the protocol
    sys.stdout = sys.stderr
    module_path, _, attr = handler_name.rpartition(".")
    handler = getattr(importlib.import_module(module_path.replace("/", ".")), attr)
    for line in sys.stdin:
        event = json.loads(line)
        try:
            out = {"result": handler(event, Context(timeout_s, os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")))}
        except Exception as e:  # Lambda reports an unhandled exception as a function error
            traceback.print_exc()
            out = {"error": str(e)[:2000], "type": type(e).__name__}
        protocol.write(json.dumps(out) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
