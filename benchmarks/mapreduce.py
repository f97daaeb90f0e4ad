"""Map-reduce: a generated 200-page document (~100k tokens) summarised by the built-in `summarize@1`
workflow through a model with an 8,192-token window, against the fake Messages API at 1 s per call with
100 calls in flight, on the embedded runtime.

The fake server counts every clean 200 reply per distinct prompt, so `double_billed` (prompts replied to
more than once) and `reduce_runs` (replies to combining prompts) are the provider's own figures, not ours.
`expected_calls` is computed here from the chunk count alone: chunks + ceil(n / max_inputs) per reduce
level until one is left. Targets: calls == expected_calls, wall_s <= 1.5 x ideal_s, double_billed == 0,
reduce_runs == reduce_nodes. `--chaos` adds the soak's hostile queue (30% duplicate sends, early
redeliveries) and 25% transient provider faults: the workflow must still bill each call once and keep
every child within its attempt budget.

    python benchmarks/mapreduce.py [--pages 200] [--latency 1.0] [--inflight 100] [--chaos]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bootstrap import bootstrap
from core.config.worker import Settings
from core.config.workflows import SUMMARIZE
from core.embedded.queue import SqliteQueue
from core.entrypoints.local import run_until_done
from core.models import JobRequest
from core.secrets import EnvSecrets
from core.testing.chaos import ChaosQueue
from core.testing.fake_anthropic import spawn
from core.tokenizers import counter

TOPICS = (
    "queue leases",
    "retry budgets",
    "token windows",
    "tenant policy",
    "circuit breakers",
    "rate buckets",
    "dead letters",
    "claim checks",
    "prompt templates",
    "citations",
)
TRANSIENT = {"429": 0.06, "529": 0.05, "500": 0.05, "reset": 0.04, "malformed": 0.03, "timeout": 0.02}


def document(pages: int) -> str:
    """Pages of ~500 tokens, each sentence unique (page and line numbers), under `# Page N` headings."""
    out = []
    for p in range(1, pages + 1):
        lines = [
            f"Line {i} of page {p} explains how {TOPICS[(p + i) % len(TOPICS)]} keep serverless LLM jobs "
            f"governed when deliveries repeat and providers fail."
            for i in range(20)
        ]
        out.append(f"# Page {p}\n\n" + " ".join(lines))
    return "\n\n".join(out)


def expected_reduce(chunks: int, max_inputs: int) -> list[int]:
    levels, n = [], chunks
    while n > 1:
        n = math.ceil(n / max_inputs)
        levels.append(n)
    return levels


def settings(url: str, data_dir: str, chaos: bool) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "providers": {
                "fake": {
                    "type": "anthropic",
                    "api_key": "env:K",
                    "base_url": url,
                    "timeout_s": 5.0,
                    "max_connections": 128,
                }
            },
            "models": {
                "m": {
                    "provider": "fake",
                    "model_id": "claude-haiku-4-5",
                    "context_window": 8192,
                    "input_per_mtok": 1,
                    "output_per_mtok": 5,
                }
            },
            "routing": {"default": {"model": "m", "max_tokens": 512}},
            "governance": {
                "max_attempts": 6 if chaos else 3,
                "backoff_base_s": 0.05,
                "backoff_max_s": 0.3,
                "retry_after_cap_s": 0.3,
                "lease_s": 30,
                "in_process_wait_s": 0.5,
                "breaker": {"failure_threshold": 1000},
            },
            "queue": {"visibility_timeout_s": 60, "max_receives": 12, "poll_interval_s": 0.05},
            "logging": {"level": os.environ.get("MAPREDUCE_LOG", "ERROR")},
        }
    )


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_stats", timeout=10) as r:
        return json.loads(r.read())


async def warm_up(app: Any) -> None:
    """One plain job first, so the timed run is a warm worker's (SDK imported, client and tokenizer built)."""
    job, _ = app.service.submit("warmup", JobRequest(prompt="warm up"))
    await run_until_done(app, [job.id], timeout_s=30)


async def run(url: str, a: argparse.Namespace, data_dir: str) -> dict:
    s = settings(url, data_dir, a.chaos)
    inner = SqliteQueue(
        Path(data_dir) / "jobs.db", visibility_timeout_s=s.queue.visibility_timeout_s, max_receives=s.queue.max_receives
    )
    queue = ChaosQueue(inner, duplicate_rate=0.3 if a.chaos else 0.0, redeliver_rate=0.05 if a.chaos else 0.0)
    app = bootstrap(s, secrets=EnvSecrets({"K": "test-key"}), queue=queue)
    await warm_up(app)
    before = stats(url)
    doc = document(a.pages)
    t0 = time.perf_counter()
    job, _ = app.service.submit("bench", JobRequest(workflow="summarize@1", inputs={"document": doc}))
    await run_until_done(app, [job.id], timeout_s=a.timeout, concurrency=a.inflight // 2, pools=2)
    wall = time.perf_counter() - t0
    current = app.store.get(job.id)
    kids = app.service.children("bench", job.id, limit=10_000)
    return {
        "job": current,
        "wall": wall,
        "kids": kids,
        "doc_tokens": counter().count(doc),
        "queue": queue,
        "before": before,
        "after": stats(url),
    }


def report(out: dict, a: argparse.Namespace) -> dict:
    job, kids = out["job"], out["kids"]
    parts, summary = job.workflow.steps
    max_inputs = SUMMARIZE["steps"][1]["reduce"]["max_inputs"]
    levels = expected_reduce(parts.total, max_inputs)
    after, before = out["after"], out["before"]
    billed = {k: n - before["billed_by_prompt"].get(k, 0) for k, n in after["billed_by_prompt"].items()}
    combine = SUMMARIZE["steps"][1]["prompt"].split("\n")[0]
    reduce_runs = sum(n for key, n in billed.items() if combine in after["billed_heads"][key])
    line = {
        "status": job.status.value,
        "pages": a.pages,
        "document_tokens": out["doc_tokens"],
        "chaos": a.chaos,
        "chunks": parts.total,
        "calls": sum(billed.values()),
        "expected_calls": parts.total + sum(levels),
        "levels": 1 + len(summary.rounds),
        "expected_levels": 1 + len(levels),
        "reduce_nodes": summary.total,
        "reduce_runs": reduce_runs,
        "double_billed": sum(1 for n in billed.values() if n > 1),
        "workflow_calls": job.usage.calls,
        "provider_requests": after["stats"].get("calls", 0) - before["stats"].get("calls", 0),
        "max_calls_per_child": max((k.provider_calls for k in kids), default=0),
        "budget": 6 if a.chaos else 3,
        "duplicate_deliveries": out["queue"].duplicates_sent,
        "early_redeliveries": out["queue"].early_redeliveries,
        "wall_s": round(out["wall"], 3),
        "ideal_s": round((1 + len(levels)) * a.latency, 3),
        "serial_s": round((parts.total + sum(levels)) * a.latency, 3),
    }
    line["wall_over_ideal"] = round(out["wall"] / line["ideal_s"], 3)
    line["ok"] = (
        line["status"] == "succeeded"
        and line["calls"] == line["expected_calls"] == line["workflow_calls"]
        and line["double_billed"] == 0
        and line["reduce_runs"] == line["reduce_nodes"]
        and line["max_calls_per_child"] <= line["budget"]
        and (a.chaos or line["wall_s"] <= 1.5 * line["ideal_s"])
    )
    return line


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=200)
    p.add_argument("--latency", type=float, default=1.0, help="seconds per provider call")
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--chaos", action="store_true", help="duplicate and early redeliveries, 25%% transient faults")
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args(argv)
    # the fake in its own process: its CPU must not compete with the workers under test for one GIL
    proc, url = spawn(
        "--latency",
        str(a.latency),
        "--rates",
        json.dumps(TRANSIENT if a.chaos else {}),
        "--timeout-s",
        "1.0",
        "--seed",
        "11",
    )
    try:
        with tempfile.TemporaryDirectory() as d:
            line = report(asyncio.run(run(url, a, d)), a)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
