"""`alto`: run the local service, ask questions, inspect jobs and the DLQ, ingest, check config.

Works with no config file at all: offline provider, data under ALTO_DATA_DIR or a per-user folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import AltoError

DEFAULT_TENANT = "default"


def _app(args: argparse.Namespace) -> Any:
    import os

    from core.bootstrap import bootstrap
    from core.config import load_settings

    settings = load_settings(args.config)
    if args.cmd != "serve" and "ALTO_LOGGING__LEVEL" not in os.environ:
        settings.logging.level = "WARNING"  # interactive commands print results, not the event stream
    return bootstrap(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    from core.runtime import serve

    app = _app(args)
    s = app.settings.server
    host = args.host or s.host
    port = args.port if args.port is not None else s.port
    workers = args.workers if args.workers is not None else s.workers
    if not args.workers_only:
        print(f"altostratus: serving on http://{host}:{port} with {workers} worker loop(s); data in {app.data_dir}",
              file=sys.stderr)
    import signal

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the previous handler: make that
    # handler a no-op so a graceful stop exits 0, as service managers expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    asyncio.run(serve(app, host=host, port=port, workers=workers, workers_only=args.workers_only))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from core.models import JobRequest, JobStatus, JobView
    from core.runtime import run_until_done

    app = _app(args)
    request = JobRequest(prompt=args.prompt, collection=args.collection, task=args.task)
    job, _ = app.service.submit(args.tenant, request)
    asyncio.run(run_until_done(app, [job.id], timeout_s=args.timeout))
    job = app.store.get(job.id)
    assert job is not None
    view = JobView.of(job)
    if args.json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
    else:
        _print_answer(view)
    return 0 if job.status is JobStatus.succeeded else 1


def _print_answer(view: Any) -> None:
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


def cmd_jobs(args: argparse.Namespace) -> int:
    from core.models import JobStatus, JobView
    from core.service import job_json

    app = _app(args)
    if args.jobs_cmd == "show":
        job = app.store.get(args.job_id)
        if job is None:
            print(f"job {args.job_id} not found", file=sys.stderr)
            return 1
        print(job_json(job))
        return 0
    status = JobStatus(args.status) if args.status else None
    jobs = app.store.list(tenant=args.tenant, status=status, limit=args.limit)
    if args.json:
        print(json.dumps([JobView.of(j).model_dump(mode="json") for j in jobs], indent=2))
        return 0
    for j in jobs:
        print(f"{j.id}  {j.status.value:<13} {j.tenant:<12} calls={j.provider_calls}  {(j.request.task or '-'):<12} "
              f"{j.request.prompt[:60]!r}")
    return 0


def _dlq_messages(app: Any) -> dict[str, str]:
    """job id → dead-lettered message id, for the embedded queue."""
    from core.models import QueueMessage

    out: dict[str, str] = {}
    for d in getattr(app.queue, "dead_letters", lambda **_: [])(limit=10_000):
        try:
            out[QueueMessage.model_validate_json(d.body).job_id] = d.message_id
        except ValueError:
            out[f"unparseable:{d.message_id}"] = d.message_id
    return out


def cmd_dlq(args: argparse.Namespace) -> int:
    from core.models import JobStatus

    app = _app(args)
    if args.dlq_cmd == "list":
        jobs = app.store.list(status=JobStatus.dead_lettered, limit=args.limit)
        messages = _dlq_messages(app)
        if args.json:
            print(json.dumps([{"job_id": j.id, "tenant": j.tenant, "provider_calls": j.provider_calls,
                               "error": j.error.model_dump(mode="json") if j.error else None,
                               "message_id": messages.get(j.id)} for j in jobs], indent=2))
            return 0
        for j in jobs:
            err = f"{j.error.error_class.value}: {j.error.message[:80]}" if j.error else "-"
            print(f"{j.id}  tenant={j.tenant}  calls={j.provider_calls}  {err}")
        orphans = [m for k, m in messages.items() if k.startswith("unparseable:")]
        for m in orphans:
            print(f"(message {m} in the DLQ has an unreadable body; inspect it with the queue tools)")
        return 0
    if args.dlq_cmd == "show":
        job = app.store.get(args.job_id)
        if job is None:
            print(f"job {args.job_id} not found", file=sys.stderr)
            return 1
        print(json.dumps(dead_letter_state(job), indent=2))
        return 0
    # replay
    ids = [j.id for j in app.store.list(status=JobStatus.dead_lettered, limit=10_000)] if args.all else args.job_ids
    if not ids:
        print("nothing to replay: give job ids or --all", file=sys.stderr)
        return 2
    messages = _dlq_messages(app)
    for job_id in ids:
        message_id = messages.get(job_id)
        job = app.service.replay(job_id, enqueue=message_id is None)
        if message_id is not None:
            app.queue.replay(message_id)  # type: ignore[attr-defined]
        print(f"replayed {job.id} (fresh budget of {app.settings.governance.max_attempts} provider calls)")
    return 0


def dead_letter_state(job: Any) -> dict[str, Any]:
    """Everything needed to review and replay a dead-lettered job, without the raw prompt."""
    return {
        "job_id": job.id,
        "tenant": job.tenant,
        "status": job.status.value,
        "trace_id": job.trace_id,
        "input_hash": job.request_hash,
        "prompt_template": job.prompt_template,
        "route": job.route.model_dump(mode="json") if job.route else None,
        "context_chunks": job.context_chunks,
        "provider_calls": job.provider_calls,
        "attempts": [a.model_dump(mode="json") for a in job.attempts],
        "error": job.error.model_dump(mode="json") if job.error else None,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def cmd_route(args: argparse.Namespace) -> int:
    """Which rule matches, the model, its fallbacks and the estimated cost, without calling anything."""
    from core.models import JobRequest
    from core.routing import NoRoute

    app = _app(args)
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
        plan, chosen, assembly = prepared.plan, prepared.decision, prepared.assembled.record
        est = prepared.assembled.input_tokens
        route = plan.route
    except NoRoute as e:
        out.update({"route": None, "error": str(e)})
        print(json.dumps(out, indent=2) if args.json else f"no route: {e}")
        return 1
    model = app.settings.models[chosen.model]
    max_out = min(route.max_tokens, model.max_output_tokens)
    out.update({
        "rule": plan.rule, "reason": chosen.reason, "provider": chosen.provider, "model": chosen.model,
        "model_id": chosen.model_id, "context_window": model.context_window, "template": route.template,
        "max_tokens": max_out, "estimated_input_tokens": est, "prompt": assembly.model_dump(mode="json"),
        "estimated_cost_usd": {"input": model.cost(est, 0), "max_output": model.cost(0, max_out),
                               "max_total": model.cost(est, max_out)},
        "fallbacks": {k: [d.model for d in v] for k, v in plan.fallbacks.items() if v},
        "notes": plan.notes,
    })
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"rule:      {plan.rule}  ({chosen.reason})")
    print(f"model:     {chosen.model} = {chosen.provider}/{chosen.model_id}, window {model.context_window:,}")
    print(f"template:  {route.template}, max_tokens {max_out}")
    print(f"input:     {assembly.input_tokens:,} tokens counted with {assembly.tokenizer} (+{assembly.margin_tokens:,} "
          f"margin): system {assembly.system_tokens}, template {assembly.template_tokens}, question "
          f"{assembly.question_tokens}, context {assembly.context_tokens} of {assembly.context_budget:,} budget")
    print(f"context:   {', '.join(u.id for u in assembly.chunks) or 'none'}"
          f"{f' ({len(assembly.dropped)} dropped)' if assembly.dropped else ''}")
    c = out["estimated_cost_usd"]
    print(f"cost:      ~${c['input']:.6f} input + up to ${c['max_output']:.6f} output = up to ${c['max_total']:.6f}")
    for kind, models in out["fallbacks"].items():
        print(f"fallback:  {kind} -> {' -> '.join(models)}")
    for note in plan.notes:
        print(f"note:      {note}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    app = _app(args)
    counts = app.service.reconcile(older_than_s=args.older_than)
    print(json.dumps(counts))
    return 0


def cmd_governance(args: argparse.Namespace) -> int:
    """Circuit and rate-limit state per model deployment, read from the shared state store."""
    from core.governance.ratelimit import deployment_key

    app = _app(args)
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


def cmd_ingest(args: argparse.Namespace) -> int:
    app = _app(args)
    stats = app.library.ingest(
        args.path, tenant=args.tenant, collection=args.collection, prune=args.prune,
        progress=not args.quiet and sys.stderr.isatty() or args.progress,
    )
    print(f"collection '{args.collection}' (tenant {args.tenant}): {stats.added} added, {stats.updated} updated, "
          f"{stats.unchanged} unchanged, {stats.removed} removed, {stats.chunks} chunks ({stats.tokens:,} tokens) written")
    for s in stats.skipped:
        print(f"  skipped {s}", file=sys.stderr)
    if args.publish:
        m = app.library.publish(args.tenant, args.collection)
        print(f"published snapshot {m.version}: {m.chunks} chunks, {m.vectors} vectors, {m.bytes:,} bytes -> {m.key}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from core.config import hash_api_key, load_settings

    if args.config_cmd == "hash-key":
        print(hash_api_key(args.key))
        return 0
    settings = load_settings(args.config)
    if args.show:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    print(f"config OK: {len(settings.providers)} providers, {len(settings.models)} models, "
          f"default route → {settings.routing.default.model}, {len(settings.tenants)} tenants, "
          f"data in {settings.resolved_data_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alto", description="Altostratus: governed asynchronous LLM jobs on any cloud.")
    p.add_argument("--config", help="path to altostratus.yaml (default: $ALTO_CONFIG or ./altostratus.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the HTTP API and worker loops")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, help="worker loops in this process (default from config)")
    s.add_argument("--workers-only", action="store_true", help="process the queue without serving HTTP")
    s.set_defaults(fn=cmd_serve)

    a = sub.add_parser("ask", help="submit a job and wait for its answer, in-process")
    a.add_argument("prompt")
    a.add_argument("--collection", help="collection to retrieve context from")
    a.add_argument("--tenant", default=DEFAULT_TENANT)
    a.add_argument("--task")
    a.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    a.add_argument("--json", action="store_true", help="print the job view exactly as the API returns it")
    a.set_defaults(fn=cmd_ask)

    j = sub.add_parser("jobs", help="list or show jobs")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True)
    jl = jsub.add_parser("list")
    jl.add_argument("--tenant")
    jl.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "dead_lettered"])
    jl.add_argument("--limit", type=int, default=50)
    jl.add_argument("--json", action="store_true")
    js = jsub.add_parser("show")
    js.add_argument("job_id")
    j.set_defaults(fn=cmd_jobs)

    d = sub.add_parser("dlq", help="inspect and replay dead-lettered jobs")
    dsub = d.add_subparsers(dest="dlq_cmd", required=True)
    dl = dsub.add_parser("list")
    dl.add_argument("--limit", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    ds = dsub.add_parser("show", help="print a job's full dead-letter state")
    ds.add_argument("job_id")
    dr = dsub.add_parser("replay", help="re-queue jobs with a fresh attempt budget")
    dr.add_argument("job_ids", nargs="*")
    dr.add_argument("--all", action="store_true")
    d.set_defaults(fn=cmd_dlq)

    rt = sub.add_parser("route", help="explain routing decisions without calling any model")
    rtsub = rt.add_subparsers(dest="route_cmd", required=True)
    rx = rtsub.add_parser("explain", help="which rule matches, the model, fallbacks and estimated cost")
    rx.add_argument("--task")
    rx.add_argument("--tenant", default=DEFAULT_TENANT)
    rx.add_argument("--prompt-file")
    rx.add_argument("--prompt")
    rx.add_argument("--collection", help="retrieve context as a job would, to count its tokens")
    rx.add_argument("--tag", action="append", metavar="KEY=VALUE", help="job metadata used by rule matches")
    rx.add_argument("--json", action="store_true")
    rt.set_defaults(fn=cmd_route)

    r = sub.add_parser("reconcile", help="re-queue jobs whose queue message was lost (also run by `alto serve`)")
    r.add_argument("--older-than", type=float, help="seconds a job must be untouched (default governance.reconcile_after_s)")
    r.set_defaults(fn=cmd_reconcile)

    g = sub.add_parser("governance", help="show circuit breaker and rate-limit state per model deployment")
    g.add_argument("--json", action="store_true")
    g.set_defaults(fn=cmd_governance)

    i = sub.add_parser("ingest", help="index documents into a collection")
    i.add_argument("path", help="a file, a folder, or blob:PREFIX for documents in the blob store")
    i.add_argument("--collection", default="docs")
    i.add_argument("--tenant", default=DEFAULT_TENANT)
    i.add_argument("--prune", action="store_true", help="remove documents no longer under PATH")
    i.add_argument("--quiet", action="store_true")
    i.add_argument("--progress", action="store_true", help="show the progress bar even when not a terminal")
    i.add_argument("--publish", action="store_true",
                   help="then upload the collection as a versioned snapshot to the blob store (serverless workers)")
    i.set_defaults(fn=cmd_ingest)

    c = sub.add_parser("config", help="validate configuration or hash an API key")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check")
    cc.add_argument("--show", action="store_true", help="print the effective configuration")
    ch = csub.add_parser("hash-key", help="print the sha256: form of an API key for the config file")
    ch.add_argument("key")
    c.set_defaults(fn=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except AltoError as e:
        print(f"alto: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
