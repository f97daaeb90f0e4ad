"""`alto serve` (the HTTP API and worker loops) and `alto ask` (submit one job and wait for it)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from core import event_loops
from core.entrypoints.cli.common import DEFAULT_TENANT, app_from, natural, port, readable_file, seconds, valid_name
from core.models import JobRequest, JobStatus


def cmd_serve(args: argparse.Namespace) -> int:
    from core.entrypoints.local import bind, serve

    app = app_from(args)
    event_loops.loop_factory(app.settings.process.event_loop)  # a loop that can't be had: say so before binding
    s = app.settings.server
    host = args.host or s.host
    workers = args.workers if args.workers is not None else s.workers
    sock = None if args.workers_only else bind(host, args.port if args.port is not None else s.port)
    if sock is not None:
        bound = sock.getsockname()[1]
        print(
            f"altostratus: serving on http://{host}:{bound} with {workers} worker loop(s) on "
            f"{event_loops.chosen(app.settings.process.event_loop)}; data in {app.data_dir}",
            file=sys.stderr,
        )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the previous handler: make that
    # handler a no-op so a graceful stop exits 0, as service managers expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    from core.entrypoints.local import WorkersFailed

    try:
        event_loops.run(serve(app, sock=sock, workers=workers), app.settings.process.event_loop)
    except WorkersFailed as e:  # the log has each crash; this is the exit a supervisor restarts on
        print(f"alto serve: stopped: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from core.entrypoints.local import run_inline, run_until_done

    app = app_from(args)
    request = _request(app, args)
    if isinstance(request, str):
        print(f"alto ask: {request}", file=sys.stderr)
        return 2
    loop = app.settings.process.event_loop
    event_loops.loop_factory(loop)  # a loop that can't be had: say so before anything is stored
    job, _ = app.service.submit(args.tenant, request)

    def say(line: str) -> None:
        print(f"alto: job {job.id}: {line}", file=sys.stderr)

    try:
        if request.workflow is not None:  # its children are queued jobs too: run worker loops until it ends
            event_loops.run(
                run_until_done(app, [job.id], timeout_s=args.timeout, concurrency=app.settings.server.concurrency), loop
            )
            done = app.store.get(job.id)
        elif args.stream:  # with --json, stdout is the JSON alone: the text as it comes goes to stderr
            out = sys.stderr if args.json else sys.stdout
            done = event_loops.run(
                _streamed(app, job.id, run_inline(app, job.id, timeout_s=args.timeout, say=say), out), loop
            )
        else:
            done = event_loops.run(run_inline(app, job.id, timeout_s=args.timeout, say=say), loop)
    except KeyboardInterrupt:
        say(_left_behind(app, job.id))
        return 130
    assert done is not None
    if args.stream and done.status is JobStatus.succeeded and not args.json:
        print_answer(app.service.queries.view_of(done), text=False)
        return 0
    if not done.status.terminal:
        say(
            f"still {done.status.value} after {args.timeout:.0f} s; it stays queued for `alto serve` workers: "
            f"check it with `alto jobs show {job.id}`, or wait longer with --timeout"
        )
        return 3
    return finish(app.service.queries.view_of(done), as_json=args.json)


def _request(app: Any, args: argparse.Namespace) -> JobRequest | str:
    """The job `alto ask` submits, or what is wrong with the arguments."""
    if args.workflow is None:
        if args.file is not None or args.prompt is None:
            return "give a PROMPT, or --workflow NAME with --file PATH or the text as PROMPT"
        return JobRequest(prompt=args.prompt, collection=args.collection, task=args.task, stream=args.stream)
    from core.config.workflows import resolve

    found = resolve(app.settings.workflows, args.workflow)
    if found is None:
        return f"workflow '{args.workflow}' is not configured (known: {', '.join(sorted(app.settings.workflows))})"
    name, config = found
    if (args.file is None) == (args.prompt is None):
        return f"give the input of {name} as --file PATH or as the text PROMPT (one of them)"
    return JobRequest(
        workflow=name,
        inputs={config.input: args.prompt if args.file is None else _upload(app, args.file)},
        task=args.task,
    )


def _upload(app: Any, path: Path) -> str:
    """The file in the blob store, keyed by content: `blob:workflow-inputs/SHA256/NAME` (the worker extracts its text)."""
    from core.workflows.inputs import PREFIX

    data = path.read_bytes()
    key = f"{PREFIX}{hashlib.sha256(data).hexdigest()}/{path.name}"
    app.blobs.put(key, data)
    return "blob:" + key


def _left_behind(app: Any, job_id: str) -> str:
    """What an interrupted `alto ask` leaves: the job (and a workflow's children) stay for `alto serve`."""
    job = app.store.get(job_id)
    status = job.status.value if job is not None else "queued"
    said = (
        f"interrupted; the job stays {status} for `alto serve` workers: follow it with `alto jobs wait {job_id}`, "
        f"or stop it with `alto jobs cancel {job_id}`"
    )
    if job is not None and job.request.workflow is not None:
        open_children = sum(1 for c in app.service.children(job.tenant, job_id, limit=10_000) if not c.status.terminal)
        said += f" (which also stops its {open_children} unfinished child job(s))"
    return said


async def _streamed(app: Any, job_id: str, running: Any, out: Any) -> Any:
    """Run the job while printing its text as the worker writes it (a retry's new attempt starts a new line)."""
    task = asyncio.ensure_future(running)
    attempt, shown = 0, 0
    while True:
        snap = app.service.streams.read(job_id)
        if snap is not None:
            if snap.attempt != attempt:
                if shown:
                    print("\n[the provider call was retried; its text starts over]", file=sys.stderr)
                attempt, shown = snap.attempt, 0
            if len(snap.text) > shown:  # placeholders of redacted values restored (a stream never splits one)
                job = app.store.get(job_id)
                reveal = app.service.safety.reveal(job) if job is not None else str
                print(reveal(snap.text[shown:]), end="", flush=True, file=out)
            shown = len(snap.text)
        if task.done():
            print(file=out)
            return task.result()
        await asyncio.sleep(0.05)


def finish(view: Any, *, as_json: bool, text: bool = True) -> int:
    """A finished job for a person (or `--json`), and the exit status: 0 if it succeeded, 1 otherwise."""
    if as_json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
    else:
        print_answer(view, text=text)
    return 0 if view.status.value == "succeeded" else 1


def print_answer(view: Any, *, text: bool = True) -> None:
    if view.status.value != "succeeded":
        print(f"job {view.job_id} is {view.status.value}")
        if view.error:
            print(f"error ({view.error.error_class.value}): {view.error.message}")
        return
    if text:
        print(view.result)
    if view.citations:
        print("\nSources:")
        for c in view.citations:
            mark = "" if c.valid else "  (INVALID: not among the supplied passages)"
            print(f"  [{c.id}] {c.source}{(' — ' + c.title) if c.title else ''}{mark}")
    u = view.usage
    route = f"{view.route.provider}/{view.route.model}" if view.route else "?"
    if view.steps:
        steps = ", ".join(f"{s.id}: {s.children.total} call(s)" for s in view.steps)
        print(
            f"\n({view.workflow}: {steps}; {u.calls} calls; {u.input_tokens} in / {u.output_tokens} out tokens; "
            f"${u.cost_usd:.6f}; job {view.job_id})"
        )
        return
    print(f"\n({route}; {u.input_tokens} in / {u.output_tokens} out tokens; ${u.cost_usd:.6f}; job {view.job_id})")


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP API and worker loops")
    s.add_argument("--host", help="address to listen on (default server.host, 127.0.0.1)")
    s.add_argument("--port", type=port, help="0 picks a free port (printed once bound)")
    s.add_argument("--workers", type=natural, help="worker loops in this process (default from config)")
    s.add_argument("--workers-only", action="store_true", help="process the queue without serving HTTP")
    s.set_defaults(fn=cmd_serve)

    a = sub.add_parser("ask", help="submit a job (or a workflow) and wait for its answer, in-process")
    a.add_argument("prompt", nargs="?", help="the question; with --workflow, the input text (or use --file)")
    a.add_argument("--workflow", help="run a multi-step workflow, e.g. summarize (newest version) or summarize@1")
    a.add_argument(
        "--file", type=readable_file, help="with --workflow: a document (PDF, HTML, Markdown, text) as its input"
    )
    a.add_argument("--collection", type=valid_name, help="collection to retrieve context from")
    a.add_argument(
        "--tenant",
        default=DEFAULT_TENANT,
        type=valid_name,
        help=f"the tenant to ask as (default {DEFAULT_TENANT}; over --url: the key's tenant)",
    )
    a.add_argument("--task", help="the job's task, for routing rules and spend reports")
    a.add_argument("--timeout", type=seconds, default=120.0, help="seconds to wait for the job")
    a.add_argument("--json", action="store_true", help="print the job view exactly as the API returns it")
    a.add_argument("--stream", action="store_true", help="print the answer as the model writes it")
    a.set_defaults(fn=cmd_ask)
