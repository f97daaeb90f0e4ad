"""How `alto` prints jobs for people: aligned columns under a header row, times as "3 min ago"; the same
whether the jobs came from the local data folder or from a deployment's API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from core.views import JobView

NO_DEAD_LETTERS = "no dead-lettered jobs"


def ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return "-"
    s = max(0.0, (now or time.time()) - t)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def until(t: float, now: float | None = None) -> str:
    s = t - (now or time.time())
    if s <= 0:
        return "now"
    return (
        f"in {s:.0f} s"
        if s < 90
        else f"in {s / 60:.0f} min"
        if s < 5400
        else f"at {time.strftime('%H:%M', time.gmtime(t))} UTC"
    )


def waiting_note(v: JobView) -> str | None:
    """What a queued job waits for and when it is next tried, or None when it is not held."""
    if v.waiting is None:
        return None
    reason = v.waiting.reason if len(v.waiting.reason) <= 80 else v.waiting.reason[:79] + "…"
    return f"waiting: {reason}; next try {until(v.waiting.until)}"


def say_waiting(v: JobView, said: str | None) -> str | None:
    """While waiting for a job: print what holds it whenever that changes (to stderr); returns what was said."""
    note = waiting_note(v)
    if note is not None and (v.waiting.reason if v.waiting else None) != said:
        print(f"alto: job {v.job_id} is {v.status.value}, {note}", file=sys.stderr)
    return v.waiting.reason if v.waiting else None


def status_cell(v: JobView) -> str:
    note = waiting_note(v)
    return f"{v.status.value} ({note})" if note else v.status.value


def table(heads: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """Columns as wide as their widest cell; the columns in `right` (numbers) aligned right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([line(list(heads))] + [line(r) for r in cells])


def job_rows(views: Sequence[JobView]) -> str:
    rows = []
    for v in views:
        what = f"workflow {v.workflow}" if v.workflow else "-"
        rows.append(
            [
                v.job_id,
                status_cell(v),
                v.tenant,
                v.task or "-",
                v.route.model if v.route else "-",
                len(v.attempts),
                f"{v.usage.cost_usd:.6f}",
                ago(v.created_at),
                what,
            ]
        )
    return table(
        ["JOB", "STATUS", "TENANT", "TASK", "MODEL", "CALLS", "COST $", "CREATED", "WORKFLOW"], rows, right=(5, 6)
    )


def print_page(
    views: Sequence[JobView], next_cursor: str | None, *, as_json: bool, rows: Any, empty: str, shape: Any = None
) -> None:
    """A page of jobs as a table (or JSON), the same locally and over --url; where more follow, how to see them."""
    if as_json:
        print(json.dumps([(shape or (lambda v: v.model_dump(mode="json")))(v) for v in views], indent=2))
    elif views:
        print(rows(views))
    else:
        print(empty, file=sys.stderr)
    if next_cursor:
        print(f"alto: more follow; the next page: the same command with --cursor {next_cursor}", file=sys.stderr)


def dead_letter_json(v: JobView, message_id: str | None = None) -> dict[str, Any]:
    """A dead letter as `alto dlq list --json` prints it, locally and over --url (the message id: local only)."""
    return {
        "job_id": v.job_id,
        "tenant": v.tenant,
        "provider_calls": len(v.attempts),
        "error": v.error.model_dump(mode="json") if v.error else None,
        "message_id": message_id,
    }


def dead_letter_rows(views: Sequence[JobView]) -> str:
    rows = [
        [
            v.job_id,
            v.tenant,
            len(v.attempts),
            ago(v.updated_at),
            f"{v.error.error_class.value}: {v.error.message[:80]}" if v.error else "-",
        ]
        for v in views
    ]
    return table(["JOB", "TENANT", "CALLS", "WHEN", "LAST ERROR"], rows, right=(2,))
