"""Cost: one fixed RAG workload priced three ways, and a budget run across two worker processes.

1,000 jobs over 5 collections (generated handbooks; 12 chunks of context per call, ~5,000 tokens),
questions drawn from a small pool per collection so contexts repeat, 30% marked non-urgent, one in
five asked again word for word; claude-haiku-4-5's published prices ($1 / $5 per million input /
output, cache reads $0.10, writes $1.25, batch 50% off) against the fake Messages API, which reports
prompt-cache writes and reads as Anthropic does. Runs: `plain` (no prompt caching, no response cache,
all online), `caching` (the stable prefix marked for the prompt cache), `all` (caching, the response
cache, and the non-urgent 30% on the batch lane). Then `benchmarks/budget.py`'s run. Prints one JSON
line; targets: ratio_all <= 0.5, overshoot_usd == 0, utilisation >= 0.9.

    python benchmarks/cost.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
import budget as budget_run  # noqa: E402

from core.bootstrap import bootstrap  # noqa: E402
from core.config.worker import Settings  # noqa: E402
from core.entrypoints.local import run_until_done  # noqa: E402
from core.models import JobRequest  # noqa: E402
from core.secrets import EnvSecrets  # noqa: E402
from core.testing.fake_anthropic import FakeAnthropic, ServerThread  # noqa: E402

TOPICS = ("leases", "retries", "budgets", "routing", "streaming")
PRICES = {
    "input_per_mtok": 1.0,
    "output_per_mtok": 5.0,
    "cache_read_per_mtok": 0.1,
    "cache_write_per_mtok": 1.25,
    "batch_discount": 0.5,
}


def handbook(folder: Path, topic: str) -> None:
    folder.mkdir(parents=True)
    for d in range(6):
        sections = "\n\n".join(
            f"## {topic} rule {d}.{s}\n\n"
            + " ".join(
                f"Rule {d}.{s}.{i} says {topic} in tenant workloads follow policy {i % 7} for queue {s}."
                for i in range(40)
            )
            for s in range(4)
        )
        (folder / f"{topic}-{d}.md").write_text(f"# {topic} handbook part {d}\n\n{sections}\n")


def workload(n: int, seed: int = 7) -> list[tuple[str, str, str, bool]]:
    """(collection, context query, question, urgent): fixed for every run."""
    rng = random.Random(seed)
    asked: list[tuple[str, str, str, bool]] = []
    for i in range(n):
        if asked and rng.random() < 0.2:
            asked.append(rng.choice(asked))  # the same question again, word for word
            continue
        topic = rng.choice(TOPICS)
        query = f"{topic} policy for queue {rng.randrange(3)}"  # few queries per collection: contexts repeat
        asked.append((topic, query, f"Question {i}: what does the {query} say?", rng.random() >= 0.3))
    return asked


async def run(mode: str, url: str, docs: Path, jobs: list[tuple[str, str, str, bool]], d: str) -> float:
    model = {
        "provider": "fake",
        "model_id": "claude-haiku-4-5",
        **PRICES,
        "cache_min_tokens": 4096 if mode != "plain" else None,
    }
    settings = Settings.model_validate(
        {
            "data_dir": d,
            "providers": {"fake": {"type": "anthropic", "api_key": "env:K", "base_url": url}},
            "models": {"haiku": model},
            "routing": {"default": {"model": "haiku", "max_tokens": 256}},
            "retrieval": {
                "mode": "keyword",
                "top_k": 12,
                "candidates": 30,
                "max_chunks_per_source": 0,
                "near_duplicate_threshold": 0.99,
                "chunk_tokens": 500,
            },
            "governance": {"cache": {"enabled": mode == "all"}},
            "batch": {"flush_s": 0.01, "poll_s": 0.05},
            "logging": {"level": "ERROR"},
        }
    )
    app = bootstrap(settings, secrets=EnvSecrets({"K": "test-key"}))
    for topic in TOPICS:
        app.library.ingest(docs / topic, tenant="bench", collection=topic)
    ids = []
    for topic, query, question, urgent in jobs:
        lane = "batch" if mode == "all" and not urgent else "online"
        req = JobRequest(prompt=question, collection=topic, context_query=query, lane=lane)
        ids.append(app.service.submit("bench", req)[0].id)
    pending = set(ids)
    while pending:  # worker pools (online calls; batch jobs join their batch), then a batch-lane tick
        await run_until_done(app, list(pending), timeout_s=2, pools=2)
        await app.service.batch_tick()
        await app.providers.aclose()
        pending = {i for i in pending if not app.store.get(i).status.terminal}
    done = [app.store.get(i) for i in ids]
    failed = [j for j in done if j.status.value != "succeeded"]
    assert not failed, failed[0].error
    return sum(j.usage.cost_usd for j in done)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--budget-jobs", type=int, default=200)
    a = p.parse_args(argv)
    jobs = workload(a.jobs)
    costs: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        for topic in TOPICS:
            handbook(docs / topic, topic)
        for mode in ("plain", "caching", "all"):
            fake = FakeAnthropic()
            with ServerThread(fake) as srv, tempfile.TemporaryDirectory() as d:
                costs[mode] = asyncio.run(run(mode, srv.url, docs, jobs, d))
    line: dict[str, Any] = {
        "jobs": a.jobs,
        "cost_plain_usd": round(costs["plain"], 6),
        "cost_caching_usd": round(costs["caching"], 6),
        "cost_all_usd": round(costs["all"], 6),
        "ratio_caching": round(costs["caching"] / costs["plain"], 4),
        "ratio_all": round(costs["all"] / costs["plain"], 4),
        "workload_s": round(time.perf_counter() - t0, 1),
    }
    b = budget_run.main(["--jobs", str(a.budget_jobs)])
    line.update({k: b[k] for k in ("budget_usd", "spent_usd", "overshoot_usd", "utilisation")})
    line["ok"] = line["ratio_all"] <= 0.5 and b["ok"]
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
