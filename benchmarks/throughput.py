"""Pipeline throughput and client CPU vs raw SDK calls, side by side on one local fake Anthropic server.

Each side runs in its own child process (so one side's pool, loop and garbage never slow another), in
rounds interleaved in one run, against one fake Messages API in its own process (real HTTP):

- `pipeline`: N jobs through the local runtime (submit → SQLite queue → worker → provider → result write);
- `raw_default`: N raw `AsyncAnthropic` calls on the SDK's default transport (httpx2) and asyncio's loop;
- `raw_same`: N raw calls on the transport and event loop the pipeline picked (aiohttp and uvloop when installed);
- `provider`: N calls of the pipeline's own provider (`AnthropicProvider.generate`, which posts the request
  directly on the SDK client's HTTP client) in a bare loop, on the pipeline's event loop: the call the pipeline
  makes, without the pipeline.

It prints one JSON line: jobs/s and calls/s, client CPU per job or call (the child's own CPU time over the
measured phase), own CPU per job (each round's pipeline minus its bare provider calls: the pipeline's work beyond the
call it makes, the median of those), what the provider's call saves against the SDK's (`raw_same` minus `provider`),
and the ratios. Targets:
pipeline ≥ 1.0× raw default, ≥ 0.8× raw same, own CPU ≤ 0.6 ms/job, 400 in flight ≥ 100 in flight.
Rates are medians over rounds; ratios are medians of each round's pair (sides run back to back in a round).

    python benchmarks/throughput.py [--jobs 2000] [--inflight 100] [--latency 0.05] [--rounds 2] [--obs | --obs-only]

`--obs` adds two pipeline sides: no metrics sink at all, and Prometheus plus OpenTelemetry exporting spans and
metrics over OTLP/HTTP to a receiver in its own process: the cost of observability as 1 - on/off (target ≤ 5%),
the median of each round's pair (which of the two runs first alternates by round). `--obs-only` runs only those.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import event_loops
from core.testing.fake_anthropic import spawn

LOOP = os.environ.get("ALTO_BENCH_LOOP", "auto")  # process.event_loop of the pipeline (and its like-for-like sides)
TARGETS = {"vs_raw_default": 1.0, "vs_raw_same": 0.8, "own_cpu_ms": 0.6}


def _settings(url: str, data_dir: str, inflight: int, obs: str = "default", otlp: str | None = None) -> dict:
    return {
        "data_dir": data_dir,
        "process": {"event_loop": LOOP},
        "embedded": {"storage_thread": os.environ.get("ALTO_BENCH_STORAGE", "thread") == "thread"},
        # default: Prometheus counters on (as shipped); bare: no sink; on: Prometheus and OpenTelemetry
        "observability": {
            "prometheus": obs != "bare",
            "otel": {
                "enabled": obs == "on",
                "endpoint": otlp,
                "sample_ratio": float(os.environ.get("ALTO_BENCH_SAMPLE", "1")),
            },
        },
        "providers": {"fake": {"type": "anthropic", "api_key": "env:K", "base_url": url, "max_connections": inflight}},
        "models": {
            "m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}
        },
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "logging": {"level": "WARNING"},
    }


def _client(url: str, inflight: int, same: bool):
    import anthropic

    if same:  # the provider's own client: same transport, same pool
        from core.providers.anthropic import AnthropicProvider

        return AnthropicProvider(api_key="test-key", base_url=url, max_connections=inflight).client
    return anthropic.AsyncAnthropic(api_key="test-key", base_url=url, max_retries=0)


async def raw_sdk(url: str, n: int, inflight: int, same: bool) -> dict[str, float]:
    client = _client(url, inflight, same)
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": f"question {i}"}]
            )

    return await _timed(one, n, inflight, client.close)


async def bare_provider(url: str, n: int, inflight: int) -> dict[str, float]:
    """The pipeline's provider, as its worker builds it, called in a bare loop (the same call, no pipeline)."""
    from core.providers.anthropic import AnthropicProvider
    from core.providers.base import ChatRequest

    provider = AnthropicProvider(api_key="test-key", base_url=url, max_connections=inflight, sdk_spans=False)
    # tuned as a worker process is once its providers are built (process: gc_freeze, gc_young_threshold):
    # untuned, the collector alone cost this side ~0.12 ms a call that the pipeline never pays
    from core.config.api import ProcessConfig
    from core.process_tuning import apply_once

    apply_once(ProcessConfig())
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await provider.generate(
                ChatRequest(
                    model_id="claude-haiku-4-5",
                    system="",
                    user=f"question {i}",
                    question=f"question {i}",
                    max_tokens=64,
                ),
                timeout_s=60.0,
            )

    return await _timed(one, n, inflight, provider.aclose)


async def _timed(one, n: int, inflight: int, close) -> dict[str, float]:
    await asyncio.gather(*(one(-1 - i) for i in range(inflight)))  # warm the pool to its size
    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    await close()
    return {"per_s": n / elapsed, "cpu_ms": cpu * 1000 / n}


async def _receiver(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def pipeline(url: str, n: int, inflight: int, data_dir: str, obs: str = "default") -> dict[str, float]:
    from core.bootstrap import bootstrap
    from core.config.worker import Settings
    from core.entrypoints.local import WorkerPool, wire_wakeups
    from core.models import JobRequest
    from core.secrets import EnvSecrets

    otlp = os.environ.get("ALTO_BENCH_OTLP") if obs == "on" else None  # the receiver, in its own process
    app = bootstrap(
        Settings.model_validate(_settings(url, data_dir, inflight, obs, otlp)), secrets=EnvSecrets({"K": "test-key"})
    )
    stop, all_done = asyncio.Event(), asyncio.Event()
    finished: set[str] = set()
    done: list[str] = []
    state = {"submitted": 0, "measuring": False}

    def submit_next() -> None:  # as an async app submits: in the loop turn's group commit (ApiService.asubmit)
        submitted = asyncio.ensure_future(
            app.service.asubmit("bench", JobRequest(prompt=f"question {state['submitted']}"))
        )
        submitted.add_done_callback(lambda f: done.append(f.result()[0].id))
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
    # warm-up: builds the provider client and fills its pool, as a busy worker's first jobs would
    warm = [app.service.submit("bench", JobRequest(prompt=f"warm up {i}"))[0].id for i in range(inflight)]
    while not set(warm) <= finished:
        await asyncio.sleep(0.01)
    finished.clear()
    state["measuring"] = True
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(min(inflight, n)):
        submit_next()
    await all_done.wait()
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    stop.set()
    pool.notify()
    await worker
    jobs = [app.store.get(j) for j in done]
    latencies = sorted((j.finished_at - j.created_at) * 1000 for j in jobs)
    await app.providers.aclose()
    return {
        "per_s": n / elapsed,
        "cpu_ms": cpu * 1000 / n,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "succeeded": sum(1 for j in jobs if j.status.value == "succeeded"),
    }


def run_side(side: str, url: str, n: int, inflight: int) -> dict[str, float]:
    """One side in a fresh child process; returns its JSON figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--side", side, "--url", url, "--jobs", str(n), "--inflight", str(inflight)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _start_receiver() -> subprocess.Popen:
    """An OTLP/HTTP endpoint in its own process (its CPU is not the pipeline's); its URL goes to the sides."""
    from core.testing.servers import free_port

    port = free_port()
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[2]); from benchmarks.throughput import _receiver; "
        "uvicorn.run(_receiver, host='127.0.0.1', port=int(sys.argv[1]), log_level='critical')"
    )
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port), root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.environ["ALTO_BENCH_OTLP"] = f"http://127.0.0.1:{port}"
    import socket

    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the OTLP receiver did not start")


def _side_main(a: argparse.Namespace) -> None:
    # the pipeline on the loop its worker picks (process.event_loop: auto); the provider and raw_same sides on
    # that loop too, so they differ from it only by the pipeline; raw_default on asyncio's, as the SDK runs bare
    run = functools.partial(event_loops.run, wanted=LOOP)
    if a.side.startswith("pipeline"):
        obs = {"pipeline": "default", "pipeline_bare": "bare", "pipeline_obs": "on"}[a.side]
        with tempfile.TemporaryDirectory() as d:
            figures = run(pipeline(a.url, a.jobs, a.inflight, d, obs))
    elif a.side == "provider":
        figures = run(bare_provider(a.url, a.jobs, a.inflight))
    elif a.side == "raw_same":
        figures = run(raw_sdk(a.url, a.jobs, a.inflight, same=True))
    else:
        figures = asyncio.run(raw_sdk(a.url, a.jobs, a.inflight, same=False))
    print(json.dumps(figures))


def _transport() -> str:
    from core.providers.anthropic import http_transport

    return http_transport()


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _paired(a: list[dict[str, float]], b: list[dict[str, float]], key: str = "per_s") -> float:
    """The median over rounds of a/b, each round's two sides run back to back: the machine's load drifts
    between rounds far more than between two neighbouring sides, so pairs are what a ratio should compare."""
    return statistics.median(x[key] / y[key] for x, y in zip(a, b, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=100)
    p.add_argument("--high-inflight", type=int, default=400, help="the pipeline again at this many in flight")
    p.add_argument("--latency", type=float, default=0.05, help="fake provider latency per call, seconds")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; figures are the medians")
    p.add_argument("--obs", action="store_true", help="also the pipeline with no metrics and with Prometheus + OTel")
    p.add_argument("--obs-only", action="store_true", help="only those two sides (the observability cost)")
    p.add_argument(
        "--side",
        choices=["pipeline", "pipeline_bare", "pipeline_obs", "raw_default", "raw_same", "provider"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--url", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        return _side_main(a)
    proc, url = spawn("--latency", str(a.latency))
    a.obs = a.obs or a.obs_only
    receiver = _start_receiver() if a.obs else None
    rows: dict[str, list[dict[str, float]]] = {
        "pipeline": [],
        "raw_default": [],
        "raw_same": [],
        "provider": [],
        "high": [],
        "pipeline_bare": [],
        "pipeline_obs": [],
    }
    main_sides = () if a.obs_only else ("raw_default", "raw_same", "provider", "pipeline")
    try:
        for i in range(a.rounds):
            obs_pair = ("pipeline_bare", "pipeline_obs")[:: -1 if i % 2 else 1]  # alternate which runs first
            for side in main_sides + (obs_pair if a.obs else ()):
                rows[side].append(run_side(side, url, a.jobs, a.inflight))
            if a.high_inflight and not a.obs_only:
                rows["high"].append(run_side("pipeline", url, a.jobs, a.high_inflight))
    finally:
        for p in (proc, receiver):
            if p is not None:
                p.terminate()
                p.wait(timeout=10)
    line = {
        "benchmark": "throughput",
        "jobs": a.jobs,
        "inflight": a.inflight,
        "provider_latency_s": a.latency,
        "rounds": a.rounds,
        "transport": _transport(),
        "event_loop": event_loops.chosen(LOOP),
    }
    if not a.obs_only:
        line.update(_main_figures(rows))
    if a.obs:
        line.update(_obs_figures(rows))
    if rows["high"]:
        high = _median(rows["high"], "per_s")
        line.update(
            {
                "high_inflight": a.high_inflight,
                "high_jobs_per_s": round(high, 1),
                "high_vs_inflight": round(_paired(rows["high"], rows["pipeline"]), 3),
            }
        )
    print(json.dumps(line))


def _main_figures(rows: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    pipe, raw, same = (_median(rows[s], "per_s") for s in ("pipeline", "raw_default", "raw_same"))
    pipe_cpu, raw_cpu, same_cpu = (_median(rows[s], "cpu_ms") for s in ("pipeline", "raw_default", "raw_same"))
    return {
        "jobs_per_s": round(pipe, 1),
        "p50_job_ms": round(_median(rows["pipeline"], "p50_ms"), 1),
        "p99_job_ms": round(_median(rows["pipeline"], "p99_ms"), 1),
        "succeeded": min(r["succeeded"] for r in rows["pipeline"]),
        "raw_default_calls_per_s": round(raw, 1),
        "raw_same_calls_per_s": round(same, 1),
        "cpu_ms_per_job": round(pipe_cpu, 3),
        "raw_default_cpu_ms": round(raw_cpu, 3),
        "raw_same_cpu_ms": round(same_cpu, 3),
        "provider_calls_per_s": round(_median(rows["provider"], "per_s"), 1),
        "provider_cpu_ms": round(_median(rows["provider"], "cpu_ms"), 3),
        # each round's pipeline minus its bare provider calls (run back to back), the median of those
        "own_cpu_ms_per_job": _cpu_gap(rows["pipeline"], rows["provider"]),
        "own_cpu_rounds": [round(d, 3) for d in _cpu_gaps(rows["pipeline"], rows["provider"])],
        "provider_saves_cpu_ms": _cpu_gap(rows["raw_same"], rows["provider"]),  # its call vs messages.create's
        "vs_raw_default": round(_paired(rows["pipeline"], rows["raw_default"]), 3),
        "vs_raw_same": round(_paired(rows["pipeline"], rows["raw_same"]), 3),
        "all_rounds": {s: [round(r["per_s"], 1) for r in v] for s, v in rows.items() if v},
        "targets": TARGETS,
    }


def _cpu_gaps(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    """Each round's CPU per job of side a minus side b (run back to back)."""
    return [x["cpu_ms"] - y["cpu_ms"] for x, y in zip(a, b, strict=True)]


def _cpu_gap(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return round(statistics.median(_cpu_gaps(a, b)), 3)


def _obs_figures(rows: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    bare, obs = rows["pipeline_bare"], rows["pipeline_obs"]
    return {
        "no_metrics_jobs_per_s": round(_median(bare, "per_s"), 1),
        "prometheus_otel_jobs_per_s": round(_median(obs, "per_s"), 1),
        "observability_cost": round(1 - _paired(obs, bare), 3),
        "observability_cost_target": 0.05,
        "observability_pairs": [round(o["per_s"] / b["per_s"], 3) for o, b in zip(obs, bare, strict=True)],
        "otel_cpu_ms_per_job": round(_median(obs, "cpu_ms") - _median(bare, "cpu_ms"), 3),
    }


if __name__ == "__main__":
    main()
