"""One deployed Cloud Function, as the GCP deploy proof runs it: functions-framework serving one target from
the staged function source, in its own process with its own environment, every cloud call recorded.

    python -m tests.gcp_host TARGET PORT RECORD_FILE FUNCTION_NAME      (cwd: the staged source)

Prints `ready` once it listens. Pub/Sub's emulator pushes to it, the tests call its HTTP functions.
TARGET `alto-worker` runs the container's entry point instead (`alto worker --cloud gcp`, probes on PORT), recorded
the same way.
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
    target, port, record, function = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from tests.cloud_calls import install

    install(record, function)  # before any client exists, so every channel and session is recorded
    if target == "alto-worker":
        from core.entrypoints.cli import main as cli

        sys.exit(cli(["worker", "--cloud", "gcp", "--port", str(port)]))
    import functions_framework
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = functions_framework.create_app(target=target, source="main.py")
    server = make_server("127.0.0.1", port, app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
