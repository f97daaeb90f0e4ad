"""`alto worker --cloud aws|gcp|azure`: the long-running pull worker (a container's entry point), built from the
cloud adapter and its environment exactly as the function handlers are, on the same queue, stores and governance."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from core import event_loops
from core.entrypoints.cli.common import port
from core.errors import ConfigError

CLOUDS = {"aws": "SQS", "gcp": "a Pub/Sub pull subscription", "azure": "Service Bus"}


def build_pull_app(cloud: str, config: str | None = None) -> Any:
    """The cloud's app with its pull consumer as the queue; a missing SDK is named with the extra that brings it."""
    from core.bootstrap import as_worker

    try:
        adapter = importlib.import_module(f"adapters.{cloud}.app")
        env = {**os.environ, "ALTO_CONFIG": config} if config else os.environ
        return as_worker(adapter.build(env, pull=True))
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"alto worker --cloud {cloud} needs {e.name}, which is not installed; install the extra: "
            f"pip install 'altostratus[{cloud}]'"
        ) from None


def _stop_before_start(*_: Any) -> None:
    raise SystemExit(0)  # nothing received yet: stopping now loses nothing (the loop's own handler drains later)


def cmd_worker(args: argparse.Namespace) -> int:
    import signal

    from core.entrypoints.pull import serve_worker

    signal.signal(signal.SIGTERM, _stop_before_start)  # an orchestrator may stop a pod that is still starting
    app = build_pull_app(args.cloud, args.config)
    config = app.settings.pull
    if args.concurrency is not None:
        config.concurrency = args.concurrency
    if args.port is not None:
        config.port = args.port
    if args.host is not None:
        config.host = args.host
    print(
        f"alto worker: pulling from {CLOUDS[args.cloud]} with {config.concurrency} jobs in flight; probes on "
        f"http://{config.host}:{config.port} (/healthz, /readyz, /metrics)",
        file=sys.stderr,
    )
    worker = event_loops.run(serve_worker(app, app.queue, config), app.settings.process.event_loop)
    print(f"alto worker: stopped after {worker.counts['received']} deliveries", file=sys.stderr)
    return 0


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count of jobs: give a whole number, 1 or more")
    return int(value)


def register(sub: Any) -> None:
    w = sub.add_parser(
        "worker",
        help="pull jobs from a cloud queue in a long-running process (a container); SIGTERM drains",
        description="Build the app from the cloud adapter's environment (as its functions do) and pull from its "
        "queue: SQS, the Pub/Sub pull subscription (ALTO_SUBSCRIPTION) or Service Bus. SIGTERM stops receiving "
        "and lets the jobs in flight finish within pull.job_deadline_s.",
    )
    cloud = os.environ.get("ALTO_CLOUD")  # the container image sets it: its entry point is `alto worker`
    w.add_argument(
        "--cloud",
        required=cloud is None,
        default=cloud,
        choices=sorted(CLOUDS),
        help="whose queue and stores (default $ALTO_CLOUD)",
    )
    w.add_argument("--concurrency", type=positive, help="jobs in flight (default pull.concurrency, 32)")
    w.add_argument("--host", help="where the probes listen (default pull.host, 0.0.0.0)")
    w.add_argument("--port", type=port, help="the probes' port (default pull.port, 8080; 0 picks a free one)")
    w.set_defaults(fn=cmd_worker)
