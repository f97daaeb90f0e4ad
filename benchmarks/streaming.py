"""Streaming: 100 concurrent streaming jobs, 500 tokens each at 50 tokens/s, through `alto serve`.

Three processes: the fake Messages API (streaming at `--tps`, and taking as long to answer an unstreamed
call), `alto serve` (API and worker loops on the embedded stores) and this client. Three phases of N jobs
each, all submitted at once: read over SSE (`GET /v1/jobs/{id}/events`), read by long-poll
(`GET /v1/jobs/{id}?after=SEQ&wait_s=20`), and the same jobs not streamed (waited on by long-poll).
`first_delta_ms` runs from the provider sending a job's first token (the fake records it, per job) to the
client holding text. Prints one JSON line. Targets: SSE p50 <= flush_ms + 100 and p99 <= flush_ms + 400,
long-poll p50 <= flush_ms + 300, streaming jobs/s >= 0.85 x unstreamed.

    python benchmarks/streaming.py [--jobs 100] [--tokens 500] [--tps 50] [--flush-ms 250]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.testing.fake_anthropic import spawn  # noqa: E402

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def start_service(fake_url: str, data: Path, flush_ms: float) -> tuple[subprocess.Popen[str], str]:
    cfg = {
        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": fake_url, "timeout_s": 60}},
        "models": {
            "m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}
        },
        "routing": {"default": {"model": "m", "max_tokens": 1024}},
        "server": {"workers": 2, "concurrency": 64},
        "governance": {"lease_s": 120},
        "stream": {"flush_ms": flush_ms},
        "logging": {"level": "WARNING"},
    }
    path = data / "altostratus.yaml"
    path.write_text(json.dumps(cfg))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_CONFIG": str(path),
        "ALTO_DATA_DIR": str(data / "d"),
        "ALTO_API_KEYS": f"bench={KEY}",
        "FAKE_KEY": "test-key",
    }
    alto = str(Path(sys.executable).with_name("alto"))
    proc = subprocess.Popen([alto, "serve", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving on " in line:
            return proc, line.split("serving on ")[1].split()[0]
    raise RuntimeError("alto serve did not start")


async def submit(client: Any, n: int, tag: str, stream: bool) -> list[tuple[str, str]]:
    async def one(i: int) -> tuple[str, str]:
        marker = f"{tag}{i}"
        r = await client.post(
            "/v1/jobs",
            json={"prompt": f"Write about leases marker:{marker}", "stream": stream, "cache": False},
            headers=HEADERS,
        )
        return r.json()["job_id"], marker

    return await asyncio.gather(*(one(i) for i in range(n)))


async def read_sse(client: Any, job_id: str) -> float:
    """Wall time of the first delta; then read to `done`."""
    first = 0.0
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=HEADERS, timeout=120) as r:
        async for line in r.aiter_lines():
            if line.startswith("event: delta") and not first:
                first = time.time()
            if line.startswith("event: done"):
                break
    return first


async def read_long_poll(client: Any, job_id: str) -> float:
    first, after = 0.0, "0"
    while True:
        r = await client.get(f"/v1/jobs/{job_id}", params={"after": after, "wait_s": 20}, headers=HEADERS, timeout=60)
        view = r.json()
        if view.get("partial") and not first:
            first = time.time()
        if view["status"] in ("succeeded", "failed", "dead_lettered", "cancelled"):
            return first
        p = view.get("partial")
        after = f"{p['attempt']}:{p['seq']}" if p else after


async def phase(base: str, n: int, tag: str, mode: str) -> dict[str, Any]:
    import httpx2  # httpx 0.28 degrades at ~100 concurrent requests

    limits = httpx2.Limits(max_connections=4 * n, max_keepalive_connections=4 * n)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        t0 = time.perf_counter()
        jobs = await submit(client, n, tag, stream=mode != "plain")
        reader = read_sse if mode == "sse" else read_long_poll
        firsts = await asyncio.gather(*(reader(client, job_id) for job_id, _ in jobs))
        elapsed = time.perf_counter() - t0
    return {"jobs": jobs, "firsts": firsts, "elapsed": elapsed}


def latencies(out: dict[str, Any], first_token_at: dict[str, float]) -> list[float]:
    return sorted(
        (got - first_token_at[marker]) * 1000
        for (_, marker), got in zip(out["jobs"], out["firsts"], strict=True)
        if got and marker in first_token_at
    )


def pct(xs: list[float], q: float) -> float:
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else -1.0


def writes(data: Path, jobs: list[tuple[str, str]]) -> tuple[float, float]:
    """Mean versions per job of its stream record (its writes) and of its job record."""
    db = sqlite3.connect(data / "d" / "jobs.db")
    stream = [db.execute("SELECT version FROM state WHERE key = ?", (f"stream:{j}",)).fetchone() for j, _ in jobs]
    job = [db.execute("SELECT version FROM jobs WHERE id = ?", (j,)).fetchone() for j, _ in jobs]
    db.close()
    return (statistics.mean(r[0] for r in stream if r) if any(stream) else 0.0, statistics.mean(r[0] for r in job if r))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--tps", type=float, default=50.0)
    p.add_argument("--flush-ms", type=float, default=250.0)
    a = p.parse_args(argv)
    fake, fake_url = spawn("--stream-tps", str(a.tps), "--stream-tokens", str(a.tokens))
    with tempfile.TemporaryDirectory() as d:
        data = Path(d)
        service, base = start_service(fake_url, data, a.flush_ms)
        try:
            asyncio.run(phase(base, 2, "warm", "plain"))  # the service's SDK import and client, before timing
            sse = asyncio.run(phase(base, a.jobs, "sse", "sse"))
            poll = asyncio.run(phase(base, a.jobs, "lp", "poll"))
            plain = asyncio.run(phase(base, a.jobs, "plain", "plain"))
            with urllib.request.urlopen(fake_url + "/_stats", timeout=10) as r:
                first_token_at = json.loads(r.read())["first_token_at"]
            stream_w, job_w = writes(data, sse["jobs"] + poll["jobs"])
            _, plain_job_w = writes(data, plain["jobs"])
        finally:
            service.terminate()
            service.wait(timeout=30)
            fake.terminate()
    s, lp = latencies(sse, first_token_at), latencies(poll, first_token_at)
    line = {
        "jobs": a.jobs,
        "tokens": a.tokens,
        "tokens_per_s": a.tps,
        "flush_ms": a.flush_ms,
        "sse_first_delta_ms_p50": pct(s, 0.5),
        "sse_first_delta_ms_p99": pct(s, 0.99),
        "long_poll_first_delta_ms_p50": pct(lp, 0.5),
        "long_poll_first_delta_ms_p99": pct(lp, 0.99),
        "stream_writes_per_job": round(stream_w, 1),
        "job_writes_per_job": round(job_w, 1),
        "store_writes_per_job": round(stream_w + job_w, 1),
        "unstreamed_job_writes_per_job": round(plain_job_w, 1),
        "jobs_per_s_sse": round(a.jobs / sse["elapsed"], 2),
        "jobs_per_s_long_poll": round(a.jobs / poll["elapsed"], 2),
        "jobs_per_s_unstreamed": round(a.jobs / plain["elapsed"], 2),
    }
    line["streaming_over_unstreamed"] = round(line["jobs_per_s_sse"] / line["jobs_per_s_unstreamed"], 3)
    line["ok"] = (
        len(s) == len(lp) == a.jobs
        and line["sse_first_delta_ms_p50"] <= a.flush_ms + 100
        and line["sse_first_delta_ms_p99"] <= a.flush_ms + 400
        and line["long_poll_first_delta_ms_p50"] <= a.flush_ms + 300
        and line["streaming_over_unstreamed"] >= 0.85
    )
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
