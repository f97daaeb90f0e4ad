"""`alto costs`: spend and savings from the usage ledger, summed by tenant, task, model, lane or day."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from core.entrypoints.cli.common import DEFAULT_TENANT, app_from, valid_name
from core.entrypoints.cli.output import table
from core.governance.spend import DIMENSIONS, day_start, default_since


def dimensions(value: str) -> list[str]:
    by = [d.strip() for d in value.split(",") if d.strip()]
    bad = [d for d in by if d not in DIMENSIONS]
    if not by or bad:
        raise argparse.ArgumentTypeError(
            f"{(bad or [value])[0]!r}: group by any of {', '.join(DIMENSIONS)}, comma-separated"
        )
    return by


def day(value: str) -> float:
    try:
        return day_start(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UTC day: use YYYY-MM-DD") from None


def cmd_costs(args: argparse.Namespace) -> int:
    app = app_from(args)
    tenants = [args.tenant] if args.tenant else sorted(set(app.settings.tenants) | {DEFAULT_TENANT})
    since = args.since if args.since is not None else default_since(time.time())
    rows = app.service.spend.report(tenants, since=since, by=args.by)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no spend recorded in that period", file=sys.stderr)
        return 0
    spend_table(rows, args.by)
    return 0


def spend_table(rows: list[dict[str, Any]], by: list[str]) -> None:
    cols = [
        *by,
        "calls",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost_usd",
        "saved_prompt_cache_usd",
        "saved_response_cache_usd",
        "saved_batch_usd",
    ]
    heads = [*by, "calls", "in", "out", "cache read", "cost $", "saved: prompt cache $", "response cache $", "batch $"]

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c, "")
        return f"{v:.6f}" if isinstance(v, float) else str(v)

    cells = [[cell(r, c) for c in cols] for r in rows]
    total = {c: sum(r[c] for r in rows) for c in cols[len(by) :]}
    cells.append(["total"] + [""] * (len(by) - 1) + [cell(total, c) for c in cols[len(by) :]])
    print(table(heads, cells, right=range(len(by), len(heads))))


def register(sub: Any) -> None:
    c = sub.add_parser("costs", help="spend and savings by tenant, task, model, lane or day")
    c.add_argument(
        "--by",
        type=dimensions,
        default=["tenant", "model"],
        help=f"group by, comma-separated: {', '.join(DIMENSIONS)} (default tenant,model)",
    )
    c.add_argument("--since", type=day, help="first UTC day, YYYY-MM-DD (default: 30 days back)")
    c.add_argument("--tenant", type=valid_name, help="one tenant (default: every configured tenant)")
    c.add_argument("--json", action="store_true", help="the rows as JSON")
    c.set_defaults(fn=cmd_costs)
