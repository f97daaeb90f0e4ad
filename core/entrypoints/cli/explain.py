"""`alto route explain`, `alto governance` and `alto reconcile`: what the service would do, and the
shared governance state, read without calling any model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.entrypoints.cli.common import DEFAULT_TENANT, age, app_from, valid_name
from core.errors import NoRoute
from core.governance.ratelimit import deployment_key
from core.jobs.prepare import Prepared
from core.models import JobRequest


def cmd_route(args: argparse.Namespace) -> int:
    """Which rule matches, the model, its fallbacks and the estimated cost."""
    app = app_from(args)
    prompt = Path(args.prompt_file).read_text() if args.prompt_file else (args.prompt or "")
    if not prompt.strip():
        print("alto route explain: give --prompt-file FILE or --prompt TEXT", file=sys.stderr)
        return 2
    tags = dict(t.split("=", 1) for t in args.tag or [] if "=" in t)
    request = JobRequest(prompt=prompt, task=args.task, collection=args.collection, metadata=tags)
    chunks = []
    if args.collection and app.retriever is not None:
        chunks = app.retriever.search(args.tenant, args.collection, prompt, k=app.settings.retrieval.candidates)
    out: dict[str, Any] = {"tenant": args.tenant, "task": args.task, "retrieved_chunks": len(chunks)}
    try:
        prepared = app.service.prepare(args.tenant, request, chunks)
    except NoRoute as e:
        out.update({"route": None, "error": str(e)})
        print(json.dumps(out, indent=2) if args.json else f"no route: {e}")
        return 1
    out.update(_explanation(app, prepared))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_route(out, prepared)
    return 0


def _explanation(app: Any, prepared: Prepared) -> dict[str, Any]:
    plan, chosen, assembly = prepared.plan, prepared.decision, prepared.assembled.record
    est, route = prepared.assembled.input_tokens, plan.route
    model = app.settings.models[chosen.model]
    max_out = min(route.max_tokens, model.max_output_tokens)
    return {
        "rule": plan.rule,
        "reason": chosen.reason,
        "provider": chosen.provider,
        "model": chosen.model,
        "model_id": chosen.model_id,
        "context_window": model.context_window,
        "template": route.template,
        "max_tokens": max_out,
        "estimated_input_tokens": est,
        "prompt": assembly.model_dump(mode="json"),
        "estimated_cost_usd": {
            "input": model.cost(est, 0),
            "max_output": model.cost(0, max_out),
            "max_total": model.cost(est, max_out),
        },
        "fallbacks": {k: [d.model for d in v] for k, v in plan.fallbacks.items() if v},
        "notes": plan.notes,
    }


def _print_route(out: dict[str, Any], prepared: Prepared) -> None:
    a = prepared.assembled.record
    print(f"rule:      {out['rule']}  ({out['reason']})")
    print(f"model:     {out['model']} = {out['provider']}/{out['model_id']}, window {out['context_window']:,}")
    print(f"template:  {out['template']}, max_tokens {out['max_tokens']}")
    print(
        f"input:     {a.input_tokens:,} tokens counted with {a.tokenizer} (+{a.margin_tokens:,} margin): system "
        f"{a.system_tokens}, template {a.template_tokens}, question {a.question_tokens}, context "
        f"{a.context_tokens} of {a.context_budget:,} budget"
    )
    print(
        f"context:   {', '.join(u.id for u in a.chunks) or 'none'}{f' ({len(a.dropped)} dropped)' if a.dropped else ''}"
    )
    c = out["estimated_cost_usd"]
    print(f"cost:      ~${c['input']:.6f} input + up to ${c['max_output']:.6f} output = up to ${c['max_total']:.6f}")
    for kind, models in out["fallbacks"].items():
        print(f"fallback:  {kind} -> {' -> '.join(models)}")
    for note in out["notes"]:
        print(f"note:      {note}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    print(json.dumps(app_from(args).service.reconcile(older_than_s=args.older_than)))
    return 0


def cmd_governance(args: argparse.Namespace) -> int:
    """Circuit and rate-limit state per model deployment, read from the shared state store."""
    app = app_from(args)
    rows: dict[str, dict[str, Any]] = {}
    for name, model in sorted(app.settings.models.items()):
        key = deployment_key(model)
        row = rows.setdefault(key, {"deployment": key, "models": []})
        row["models"].append(name)
        row["circuit"] = app.service.breaker.status(model)
        if model.limits is not None:
            row["limits"] = model.limits.model_dump(exclude_none=True)
            bucket = app.state.get("rl:" + key)
            row["buckets"] = bucket.value if bucket else "full"
    if args.json:
        print(json.dumps(list(rows.values()), indent=2))
        return 0
    for row in rows.values():
        c = row["circuit"]
        line = f"{row['deployment']:<40} circuit {c.get('state', 'closed'):<9} failures {c.get('failures', 0)}"
        if c.get("state") == "open":
            line += f"  reopens in {max(0.0, c['open_until'] - time.time()):.1f} s"
        print(line + f"  ({', '.join(row['models'])})")
    return 0


def register(sub: Any) -> None:
    rt = sub.add_parser("route", help="explain routing decisions without calling any model")
    rtsub = rt.add_subparsers(dest="route_cmd", required=True)
    rx = rtsub.add_parser("explain", help="which rule matches, the model, fallbacks and estimated cost")
    rx.add_argument("--task", help="the job's task, as routing rules match it")
    rx.add_argument("--tenant", default=DEFAULT_TENANT, type=valid_name, help=f"the tenant (default {DEFAULT_TENANT})")
    rx.add_argument("--prompt-file", help="read the prompt from this file")
    rx.add_argument("--prompt", help="the prompt itself")
    rx.add_argument("--collection", type=valid_name, help="retrieve context as a job would, to count its tokens")
    rx.add_argument("--tag", action="append", metavar="KEY=VALUE", help="job metadata used by rule matches")
    rx.add_argument("--json", action="store_true", help="the decision as JSON")
    rt.set_defaults(fn=cmd_route)

    r = sub.add_parser("reconcile", help="re-queue jobs whose queue message was lost (also run by `alto serve`)")
    r.add_argument(
        "--older-than", type=age, help="seconds a job must be untouched (default governance.reconcile_after_s)"
    )
    r.set_defaults(fn=cmd_reconcile)

    g = sub.add_parser("governance", help="show circuit breaker and rate-limit state per model deployment")
    g.add_argument("--json", action="store_true", help="the state as JSON")
    g.set_defaults(fn=cmd_governance)
