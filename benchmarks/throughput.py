"""Pipeline throughput vs raw SDK calls on the same local fake Anthropic server (real HTTP).

Runs N jobs at 100 in flight through the local runtime (submit → SQLite queue → worker → provider →
result write) and N raw AsyncAnthropic calls at 100 in flight, then prints one JSON line:
jobs/s, p50/p99 job latency, raw calls/s and their ratio (target: ratio ≥ 0.6).

    python benchmarks/throughput.py [--jobs 2000] [--inflight 100] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.testing.fake_anthropic import spawn  # noqa: E402


def start_fake(latency: float) -> tuple[subprocess.Popen, str]:
    return spawn("--latency", str(latency))


async def raw_sdk(url: str, n: int, inflight: int) -> float:
    import anthropic

    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=url, max_retries=0)
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": f"question {i}"}])

    await one(-1)  # warm the connection pool
    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t
    await client.close()
    return n / elapsed


async def pipeline(url: str, n: int, inflight: int, data_dir: str) -> dict[str, float]:
    from core.bootstrap import bootstrap
    from core.config.worker import Settings
    from core.embedded.secrets import EnvSecrets
    from core.entrypoints.local import WorkerPool, wire_wakeups
    from core.models import JobRequest

    settings = Settings.model_validate({
        "data_dir": data_dir,
        "providers": {"fake": {"type": "anthropic", "api_key": "env:K", "base_url": url}},
        "models": {"m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}},
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "logging": {"level": "WARNING"},
    })
    app = bootstrap(settings, secrets=EnvSecrets({"K": "test-key"}))
    stop = asyncio.Event()
    finished: set[str] = set()
    done: list[str] = []
    all_done = asyncio.Event()
    state = {"submitted": 0, "measuring": False}

    def submit_next() -> None:
        job, _ = app.service.submit("bench", JobRequest(prompt=f"question {state['submitted']}"))
        done.append(job.id)
        state["submitted"] += 1

    def on_outcome(delivery, outcome) -> None:
        # event-driven: each finished job admits the next, so the benchmark never polls the store
        if outcome.action != "ack":
            return
        finished.add(json.loads(delivery.body)["job_id"])
        if state["measuring"]:
            if state["submitted"] < n:
                submit_next()
            if len(finished) >= n:
                all_done.set()

    pool = WorkerPool(app, concurrency=inflight, on_outcome=on_outcome)
    wire_wakeups(app, [pool])
    worker = asyncio.create_task(pool.run(stop))
    # warm-up job: builds the provider client once, as a real worker's first job would
    warm, _ = app.service.submit("bench", JobRequest(prompt="warm up"))
    while warm.id not in finished:
        await asyncio.sleep(0.01)
    finished.clear()
    state["measuring"] = True
    t = time.perf_counter()
    for _ in range(min(inflight, n)):
        submit_next()
    await all_done.wait()
    elapsed = time.perf_counter() - t
    stop.set()
    pool.notify()
    await worker
    jobs = [app.store.get(j) for j in done]
    latencies = sorted((j.finished_at - j.created_at) * 1000 for j in jobs)
    ok = sum(1 for j in jobs if j.status.value == "succeeded")
    await app.providers.aclose()
    return {
        "jobs_per_s": n / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "succeeded": ok,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--latency", type=float, default=0.05, help="fake provider latency per call, seconds")
    a = p.parse_args()
    proc, url = start_fake(a.latency)
    try:
        raw = asyncio.run(raw_sdk(url, a.jobs, a.inflight))
        with tempfile.TemporaryDirectory() as d:
            pipe = asyncio.run(pipeline(url, a.jobs, a.inflight, d))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps({
        "benchmark": "throughput", "jobs": a.jobs, "inflight": a.inflight, "provider_latency_s": a.latency,
        "jobs_per_s": round(pipe["jobs_per_s"], 1), "p50_job_ms": round(pipe["p50_ms"], 1),
        "p99_job_ms": round(pipe["p99_ms"], 1), "succeeded": pipe["succeeded"],
        "raw_sdk_calls_per_s": round(raw, 1), "ratio": round(pipe["jobs_per_s"] / raw, 3), "target_ratio": 0.6,
    }))


if __name__ == "__main__":
    main()
