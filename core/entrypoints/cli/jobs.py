"""`alto jobs` (list, show, cancel) and `alto dlq` (list, show, replay): the operator's view of stored jobs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.bootstrap import App
from core.entrypoints.cli.common import app_from, positive, seconds, valid_name
from core.entrypoints.cli.output import (
    NO_DEAD_LETTERS,
    dead_letter_json,
    dead_letter_rows,
    job_rows,
    print_page,
    say_waiting,
)
from core.errors import AltoError, ConflictError, NotFound
from core.jobs.filters import JobFilter
from core.jobs.queries import dead_letter_state, job_json
from core.models import JobStatus, QueueMessage
from core.ports import DeadLetterBrowser

STATUSES = [s.value for s in JobStatus]


def cmd_jobs(args: argparse.Namespace) -> int:
    app = app_from(args)
    if args.jobs_cmd == "show":
        job = app.store.get(args.job_id)
        if job is None:
            raise NotFound(f"job {args.job_id} not found")
        print(job_json(app.service.queries.view_of(job)))
        return 0
    if args.jobs_cmd == "cancel":
        return _cancel(app, args.job_id)
    if args.jobs_cmd == "wait":
        return _wait(app, args.job_id, args.timeout, as_json=args.json)
    status = JobStatus(args.status) if args.status else None
    if args.parent:
        parent = app.store.get(args.parent)
        if parent is None:
            raise NotFound(f"job {args.parent} not found")
        page = app.service.children_page(
            parent.tenant, parent.id, status=status, limit=args.limit, cursor=args.cursor, where=listing_filter(args)
        )
    else:
        page = app.service.page(
            args.tenant, status=status, limit=args.limit, cursor=args.cursor, where=listing_filter(args)
        )
    print_page(
        [app.service.queries.view_of(j) for j in page.jobs],
        page.next_cursor,
        as_json=args.json,
        rows=job_rows,
        empty="no jobs",
    )
    return 0


def listing_filter(args: argparse.Namespace) -> JobFilter:
    return JobFilter(top_level=not args.with_steps, task=args.task, text=args.search)


def _wait(app: App, job_id: str, timeout_s: float, *, as_json: bool) -> int:
    """Until the job is terminal (workers elsewhere run it: `alto serve`); 3 when the time runs out."""
    import time

    from core.entrypoints.cli.run import finish

    deadline, said = time.monotonic() + timeout_s, None
    while (job := app.store.get(job_id)) is not None and not job.status.terminal:
        said = say_waiting(app.service.queries.view_of(job), said)
        if time.monotonic() > deadline:
            print(f"alto: job {job_id} still {job.status.value} after {timeout_s:.0f} s", file=sys.stderr)
            return 3
        time.sleep(0.25)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return finish(app.service.queries.view_of(job), as_json=as_json)


def _cancel(app: App, job_id: str) -> int:
    job = app.store.get(job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    app.service.cancel(job.tenant, job_id)  # a finished job: InputError (409), exit 1 as over --url
    print(f"job {job_id} cancelled" + ("; its children not started never start" if job.request.workflow else ""))
    return 0


def _dlq_messages(app: App) -> dict[str, str]:
    """job id → dead-lettered message id, for a queue whose dead letters can be browsed (the embedded one)."""
    if not isinstance(app.queue, DeadLetterBrowser):
        return {}
    out: dict[str, str] = {}
    for d in app.queue.dead_letters(limit=10_000):
        try:
            out[QueueMessage.model_validate_json(d.body).job_id] = d.message_id
        except ValueError:
            out[f"unparseable:{d.message_id}"] = d.message_id
    return out


def cmd_dlq(args: argparse.Namespace) -> int:
    app = app_from(args)
    if args.dlq_cmd == "list":
        return _dlq_list(app, args)
    if args.dlq_cmd == "show":
        job = app.store.get(args.job_id)
        if job is None:
            raise NotFound(f"job {args.job_id} not found")
        print(json.dumps(dead_letter_state(job), indent=2))
        return 0
    return _dlq_replay(app, args)


def _dlq_list(app: App, args: argparse.Namespace) -> int:
    page = app.service.page(None, status=JobStatus.dead_lettered, limit=args.limit, cursor=args.cursor)
    messages = _dlq_messages(app)
    print_page(
        [app.service.queries.view_of(j) for j in page.jobs],
        page.next_cursor,
        as_json=args.json,
        rows=dead_letter_rows,
        empty=NO_DEAD_LETTERS,
        shape=lambda v: dead_letter_json(v, messages.get(v.job_id)),
    )
    for key, message_id in messages.items():
        if key.startswith("unparseable:") and not args.json:
            print(f"(message {message_id} in the DLQ has an unreadable body; inspect it with the queue tools)")
    return 0


def _every_dead_letter(app: App) -> list[str]:
    """Every dead-lettered job's id, page by page."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = app.service.page(None, status=JobStatus.dead_lettered, limit=200, cursor=cursor)
        ids += [j.id for j in page.jobs]
        if (cursor := page.next_cursor) is None:
            return ids


def _dlq_replay(app: App, args: argparse.Namespace) -> int:
    ids = _every_dead_letter(app) if args.all else args.job_ids
    if not ids and args.all:
        print(NO_DEAD_LETTERS + ": nothing to replay", file=sys.stderr)
        return 0
    if not ids:
        print("alto dlq replay: give the job ids to replay, or --all", file=sys.stderr)
        return 2
    messages = _dlq_messages(app)
    failed = 0
    for job_id in ids:
        message_id = messages.get(job_id)
        try:
            job = app.service.replay(job_id, enqueue=message_id is None)
        except ConflictError:
            print(
                f"alto: job {job_id} changed while it was being replayed (a worker or another operator wrote "
                "it meanwhile); nothing was replayed: check it with `alto dlq show` and run the replay again",
                file=sys.stderr,
            )
            failed += 1
            continue
        except AltoError as e:
            print(f"alto: {e}", file=sys.stderr)
            failed += 1
            continue
        if message_id is not None and isinstance(app.queue, DeadLetterBrowser):
            app.queue.replay(message_id)
        print(f"replayed {job.id} (fresh budget of {app.settings.governance.max_attempts} provider calls)")
    return 1 if failed else 0


def register(sub: Any) -> None:
    j = sub.add_parser("jobs", help="list, show, wait for or cancel jobs")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True)
    jl = jsub.add_parser("list", help="newest first, as a table (or --json)")
    jl.add_argument("--tenant", type=valid_name, help="one tenant's jobs (local only; over --url: the key's tenant)")
    jl.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    jl.add_argument("--limit", type=positive, default=50, help="at most this many (default 50)")
    jl.add_argument("--parent", help="list this workflow job's children, step by step")
    jl.add_argument("--json", action="store_true", help="the job views as JSON")
    jl.add_argument("--cursor", help="the next page: the cursor a previous listing printed")
    jl.add_argument("--task", help="only jobs of this task")
    jl.add_argument("--search", help="only jobs with this text in the id, prompt, task, model or error (any case)")
    jl.add_argument(
        "--with-steps", action="store_true", help="list workflows' child steps too (see them with --parent)"
    )
    js = jsub.add_parser("show", help="one job's full record as JSON")
    js.add_argument("job_id", help="the job's id")
    jw = jsub.add_parser("wait", help="wait until a job is finished, then print its answer (exit 3 on timeout)")
    jw.add_argument("job_id", help="the job's id")
    jw.add_argument("--timeout", type=seconds, default=120.0, help="seconds to wait (default 120)")
    jw.add_argument("--json", action="store_true", help="print the job view as JSON")
    jc = jsub.add_parser("cancel", help="cancel a queued or running job (a workflow: children not started never start)")
    jc.add_argument("job_id", help="the job's id")
    j.set_defaults(fn=cmd_jobs)

    d = sub.add_parser("dlq", help="inspect and replay dead-lettered jobs")
    dsub = d.add_subparsers(dest="dlq_cmd", required=True)
    dl = dsub.add_parser("list", help="dead-lettered jobs, as a table (or --json)")
    dl.add_argument("--limit", type=positive, default=100, help="at most this many (default 100)")
    dl.add_argument("--json", action="store_true", help="as JSON")
    dl.add_argument("--cursor", help="the next page: the cursor a previous listing printed")
    ds = dsub.add_parser("show", help="print a job's full dead-letter state")
    ds.add_argument("job_id", help="the job's id")
    dr = dsub.add_parser("replay", help="re-queue jobs with a fresh attempt budget")
    dr.add_argument("job_ids", nargs="*", help="the jobs to replay")
    dr.add_argument("--all", action="store_true", help="every dead-lettered job")
    d.set_defaults(fn=cmd_dlq)
