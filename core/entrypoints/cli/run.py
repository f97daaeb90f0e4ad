"""`alto serve` (the HTTP API and worker loops) and `alto ask` (submit one job and wait for it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from core.entrypoints.cli.common import DEFAULT_TENANT, app_from, port, valid_name
from core.models import JobRequest, JobStatus
from core.views import JobView


def cmd_serve(args: argparse.Namespace) -> int:
    from core.entrypoints.local import bind, serve

    app = app_from(args)
    s = app.settings.server
    host = args.host or s.host
    workers = args.workers if args.workers is not None else s.workers
    sock = None if args.workers_only else bind(host, args.port if args.port is not None else s.port)
    if sock is not None:
        bound = sock.getsockname()[1]
        print(f"altostratus: serving on http://{host}:{bound} with {workers} worker loop(s); data in {app.data_dir}",
              file=sys.stderr)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the previous handler: make that
    # handler a no-op so a graceful stop exits 0, as service managers expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    asyncio.run(serve(app, sock=sock, workers=workers))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from core.entrypoints.local import run_inline

    app = app_from(args)
    request = JobRequest(prompt=args.prompt, collection=args.collection, task=args.task)
    job, _ = app.service.submit(args.tenant, request)

    def say(line: str) -> None:
        print(f"alto: job {job.id}: {line}", file=sys.stderr)

    done = asyncio.run(run_inline(app, job.id, timeout_s=args.timeout, say=say))
    assert done is not None
    if not done.status.terminal:
        say(f"still {done.status.value} after {args.timeout:.0f} s; it stays queued for `alto serve` workers: "
            f"check it with `alto jobs show {job.id}`, or wait longer with --timeout")
        return 3
    view = JobView.of(done)
    if args.json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
    else:
        print_answer(view)
    return 0 if done.status is JobStatus.succeeded else 1


def print_answer(view: Any) -> None:
    if view.status.value != "succeeded":
        print(f"job {view.job_id} is {view.status.value}")
        if view.error:
            print(f"error ({view.error.error_class.value}): {view.error.message}")
        return
    print(view.result)
    if view.citations:
        print("\nSources:")
        for c in view.citations:
            mark = "" if c.valid else "  (INVALID: not among the supplied passages)"
            print(f"  [{c.id}] {c.source}{(' — ' + c.title) if c.title else ''}{mark}")
    u = view.usage
    route = f"{view.route.provider}/{view.route.model}" if view.route else "?"
    print(f"\n({route}; {u.input_tokens} in / {u.output_tokens} out tokens; ${u.cost_usd:.6f}; job {view.job_id})")


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP API and worker loops")
    s.add_argument("--host")
    s.add_argument("--port", type=port, help="0 picks a free port (printed once bound)")
    s.add_argument("--workers", type=int, help="worker loops in this process (default from config)")
    s.add_argument("--workers-only", action="store_true", help="process the queue without serving HTTP")
    s.set_defaults(fn=cmd_serve)

    a = sub.add_parser("ask", help="submit a job and wait for its answer, in-process")
    a.add_argument("prompt")
    a.add_argument("--collection", type=valid_name, help="collection to retrieve context from")
    a.add_argument("--tenant", default=DEFAULT_TENANT, type=valid_name)
    a.add_argument("--task")
    a.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    a.add_argument("--json", action="store_true", help="print the job view exactly as the API returns it")
    a.set_defaults(fn=cmd_ask)
