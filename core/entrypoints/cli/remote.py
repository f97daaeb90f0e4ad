"""`alto --url URL --api-key env:NAME ...`: the job, dead-letter, cost and ask commands against a deployed
API over HTTP (through `core.client`, on the standard library's HTTP), printing what the same commands print
locally."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from core.client import ApiError, Client, Unreachable
from core.entrypoints.cli.output import (
    NO_DEAD_LETTERS,
    dead_letter_json,
    dead_letter_rows,
    job_rows,
    print_page,
    say_waiting,
)
from core.entrypoints.routes import LIST_LIMIT
from core.errors import AltoError, InputError, NotFound
from core.secrets import EnvSecrets
from core.views import JobView

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}
REMOTE_COMMANDS = {"jobs", "dlq", "costs", "ask"}


class RemoteError(AltoError):
    """The API answered with an error (its message says what), or could not be reached."""


class Remote:
    def __init__(self, url: str, key_ref: str, *, timeout_s: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AltoError(
                f"{url!r} is not an http(s) URL: give the deployment's API base URL, e.g. "
                "https://api.example.com, with --url or in ALTO_URL"
            )
        if not key_ref.startswith(("env:", "file:")):
            raise AltoError(
                "--api-key takes a reference, env:NAME or file:PATH, so the key stays off the command line "
                "and out of shell history"
            )
        self.client = Client(url, EnvSecrets().resolve(key_ref), timeout_s=timeout_s)
        self.base = self.client.base

    def call(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        try:
            return self.client.call(method, path, body, timeout_s=timeout_s)
        except ApiError as e:
            if e.status == 404 and e.code == "not_found":  # the words and exit status the local command has
                raise NotFound(e.message) from None
            if e.status == 409:
                raise InputError(e.message, status=409) from None
            raise RemoteError(str(e)) from None
        except Unreachable as e:
            raise RemoteError(f"{e}; check --url") from None

    def view(self, job_id: str, query: str = "") -> JobView:
        return JobView.model_validate(self.call("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}{query}"))


def run(args: argparse.Namespace) -> int:
    remote = Remote(args.url, args.api_key or "env:ALTO_API_KEY")
    if args.cmd == "jobs":
        return _jobs(remote, args)
    if args.cmd == "dlq":
        return _dlq(remote, args)
    if args.cmd == "costs":
        return _costs(remote, args)
    return _ask(remote, args)


def _jobs(remote: Remote, args: argparse.Namespace) -> int:
    if args.jobs_cmd == "show":
        print(json.dumps(remote.call("GET", f"/v1/jobs/{args.job_id}"), indent=2))
        return 0
    if args.jobs_cmd == "cancel":
        remote.call("DELETE", f"/v1/jobs/{args.job_id}")
        print(f"job {args.job_id} cancelled")
        return 0
    if args.jobs_cmd == "wait":
        return _wait(remote, args.job_id, args.timeout, as_json=args.json)
    query = {
        **({"status": args.status} if args.status else {}),
        **({"parent": args.parent} if args.parent else {}),
        **({"task": args.task} if args.task else {}),
        **({"q": args.search} if args.search else {}),
        **({} if args.with_steps else {"top_level": "true"}),
    }
    views, cursor = _listing(remote, query, args.limit, args.cursor)
    print_page(views, cursor, as_json=args.json, rows=job_rows, empty="no jobs")
    return 0


def _listing(remote: Remote, query: dict[str, str], limit: int, cursor: str | None) -> tuple[list[JobView], str | None]:
    """Up to `limit` jobs, page by page (the API gives at most LIST_LIMIT at a time), and the cursor after them."""
    views: list[JobView] = []
    while len(views) < limit:
        page_query = {
            **query,
            "limit": str(min(limit - len(views), LIST_LIMIT)),
            **({"cursor": cursor} if cursor else {}),
        }
        page = remote.call("GET", "/v1/jobs?" + urllib.parse.urlencode(page_query))
        views += [JobView.model_validate(j) for j in page["jobs"]]
        if (cursor := page.get("next_cursor")) is None:
            break
    return views, cursor


def _wait(remote: Remote, job_id: str, timeout_s: float, *, as_json: bool) -> int:
    """Until the job is terminal (long-polls the API), then its view; 3 when the time runs out."""
    said: list[Any] = [None]

    def progress(view: JobView) -> None:
        said[0] = say_waiting(view, said[0])

    try:
        view = remote.client.wait(job_id, timeout_s=timeout_s, on_view=progress)
    except TimeoutError as e:
        print(f"alto: {e}", file=sys.stderr)
        return 3
    except ApiError as e:
        if e.status == 404 and e.code == "not_found":
            raise NotFound(e.message) from None
        raise RemoteError(str(e)) from None
    except Unreachable as e:
        raise RemoteError(f"{e}; check --url") from None
    from core.entrypoints.cli.run import finish

    return finish(view, as_json=as_json)


def _dlq(remote: Remote, args: argparse.Namespace) -> int:
    if args.dlq_cmd == "list":
        views, cursor = _listing(remote, {"status": "dead_lettered"}, args.limit, args.cursor)
        print_page(
            views, cursor, as_json=args.json, rows=dead_letter_rows, empty=NO_DEAD_LETTERS, shape=dead_letter_json
        )
        return 0
    if args.dlq_cmd == "show":
        v = remote.call("GET", f"/v1/jobs/{args.job_id}")
        print(
            json.dumps(
                {
                    k: v.get(k)
                    for k in (
                        "job_id",
                        "status",
                        "tenant",
                        "task",
                        "error",
                        "attempts",
                        "route",
                        "prompt",
                        "usage",
                        "trace_id",
                    )
                },
                indent=2,
            )
        )
        return 0
    ids = args.job_ids or (
        [v.job_id for v in _listing(remote, {"status": "dead_lettered"}, 10**9, None)[0]] if args.all else []
    )
    if not ids and args.all:
        print(NO_DEAD_LETTERS + ": nothing to replay", file=sys.stderr)
        return 0
    if not ids:
        print("alto dlq replay: give the job ids to replay, or --all", file=sys.stderr)
        return 2
    failed = 0
    for job_id in ids:
        try:
            remote.call("POST", f"/v1/jobs/{job_id}/replay")
        except RemoteError as e:
            print(f"alto: {job_id}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"replayed {job_id} (fresh attempt budget)")
    return 1 if failed else 0


def _costs(remote: Remote, args: argparse.Namespace) -> int:
    from core.entrypoints.cli.costs import spend_table

    by = [d for d in args.by if d != "tenant"] or ["day"]  # the API reports the caller's own tenant only
    query = {
        "group_by": ",".join(by),
        **({"since": time.strftime("%Y-%m-%d", time.gmtime(args.since))} if args.since is not None else {}),
    }
    rows = remote.call("GET", "/v1/usage?" + urllib.parse.urlencode(query))["rows"]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        spend_table(rows, by)
    else:
        print("no spend recorded in that period", file=sys.stderr)
    return 0


def _ask(remote: Remote, args: argparse.Namespace) -> int:
    if args.workflow or args.file:
        print("alto ask --url: send a workflow with POST /v1/jobs; --workflow and --file run locally", file=sys.stderr)
        return 2
    if not args.prompt:
        print("alto ask: give a PROMPT", file=sys.stderr)
        return 2
    body = {
        "prompt": args.prompt,
        "stream": bool(args.stream),
        **({"collection": args.collection} if args.collection else {}),
        **({"task": args.task} if args.task else {}),
    }
    job_id = remote.call("POST", "/v1/jobs", body)["job_id"]
    try:
        if not args.stream:
            return _wait(remote, job_id, args.timeout, as_json=args.json)
        _stream(remote, job_id, args.timeout, sys.stderr if args.json else sys.stdout)
    except KeyboardInterrupt:
        print(
            f"alto: job {job_id}: interrupted; the job goes on at {remote.base}: follow it with `alto jobs wait "
            f"{job_id}`, or stop it with `alto jobs cancel {job_id}`",
            file=sys.stderr,
        )
        return 130
    view = remote.view(job_id)
    if view.status.value not in TERMINAL:
        print(f"alto: job {job_id} still {view.status.value} after {args.timeout:.0f} s", file=sys.stderr)
        return 3
    from core.entrypoints.cli.run import finish

    return finish(view, as_json=args.json, text=False)


def _stream(remote: Remote, job_id: str, timeout_s: float, out: Any) -> None:
    """The answer as the model writes it, by long-polling the job (`?after=`): works through every proxy."""
    deadline, after, attempt, text = time.monotonic() + timeout_s, "0", 0, ""
    while time.monotonic() < deadline:
        v = remote.view(job_id, f"?after={after}&wait_s=10")
        if v.partial is not None:
            if v.partial.attempt != attempt:
                if text:
                    print("\n[the provider call was retried; its text starts over]", file=sys.stderr)
                attempt, text = v.partial.attempt, ""
            print(v.partial.text[len(text) :], end="", flush=True, file=out)
            text, after = v.partial.text, f"{v.partial.attempt}:{v.partial.seq}"
        if v.status.value in TERMINAL:
            if v.result is not None:  # what was written after the last partial seen (or all of it)
                print(v.result[len(text) :] if v.result.startswith(text) else "\n" + v.result, end="", file=out)
            print(file=out)
            return
