"""The storage path alone: jobs through the embedded stores with the offline provider, 1, 2 and 4 worker
processes on one data dir, side by side in three modes: `loop` (the default: group commit on the loop while
the locks are free, on the storage thread while another process holds one), `thread` (every group on the
storage thread, `embedded.group_on_loop: false`) and `inline` (each call its own transaction on the loop,
`embedded.storage_thread: false`).

All jobs are submitted first (not timed); then P worker processes drain the queue. jobs/s runs from the
first claim to the last finish, read from the jobs themselves. Each worker reports the share of its wall
time its event loop spent waiting for SQLite's write lock (`loop_blocked`, inline mode's cost) and the
storage thread's (`thread_waiting`, which the loop never feels), how many calls each commit carried, the
share of groups committed on the loop (`on_loop`), and the loop's p99 / max scheduling lag (a 5 ms ticker: how late it ran). Target: ≥ 3,000 jobs/s with
two processes.

    python benchmarks/storage.py [--jobs 6000] [--processes 1 2 4] [--modes thread inline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
TARGET_TWO_PROCESSES = 3000.0


def _settings(data_dir: str, mode: str) -> dict:
    return {
        "data_dir": data_dir,
        "embedded": {"storage_thread": mode != "inline", "group_on_loop": mode == "loop"},
        "logging": {"level": "ERROR"},
        "queue": {"poll_interval_s": 0.02},
        "governance": {"breaker": {"enabled": True}},
    }


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - t - 0.005)


async def _work(data_dir: str, mode: str, concurrency: int) -> dict:
    from core.bootstrap import bootstrap
    from core.config.worker import Settings
    from core.embedded import sqlite
    from core.embedded.storage_thread import storage_thread
    from core.entrypoints.local import WorkerPool

    app = bootstrap(Settings.model_validate(_settings(data_dir, mode)))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    done = [0]
    pool = WorkerPool(app, concurrency=concurrency, on_outcome=lambda d, o: done.__setitem__(0, done[0] + 1))
    lags: list[float] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    tasks = [asyncio.create_task(pool.run(stop)), asyncio.create_task(_ticker(lags, stop))]
    print("ready", flush=True)
    await stop.wait()
    pool.notify()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    st = storage_thread()
    lags.sort()
    return {
        "deliveries": done[0],
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "loop_blocked": sqlite.LOCK_WAIT_S["other"] / wall,
        "thread_waiting": sqlite.LOCK_WAIT_S["storage_thread"] / wall,
        "calls_per_commit": st.calls / st.groups if st.groups else 1.0,  # inline: each call its own commit
        "on_loop": st.loop_groups / st.groups if st.groups else 0.0,
        "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0,
        "lag_max_ms": lags[-1] * 1000 if lags else 0.0,
    }


def run(n: int, processes: int, mode: str, concurrency: int) -> dict:
    from benchmarks.workers import wait_terminal
    from core.bootstrap import bootstrap
    from core.config.worker import Settings
    from core.models import JobRequest

    with tempfile.TemporaryDirectory() as d:
        app = bootstrap(Settings.model_validate(_settings(d, mode)))
        ids = [app.service.submit("bench", JobRequest(prompt=f"question {i} about storage"))[0].id for i in range(n)]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", d, "--mode", mode, "--concurrency", str(concurrency)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for w in workers:
                assert w.stdout is not None and w.stdout.readline().strip() == "ready"
            wait_terminal(app, ids, timeout_s=300)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            reports = [json.loads(w.communicate(timeout=60)[0].strip().splitlines()[-1]) for w in workers]
        jobs = [app.store.get(j) for j in ids]
    ok = sum(1 for j in jobs if j.status.value == "succeeded")
    start = min(j.attempts[0].started_at for j in jobs if j.attempts)
    end = max(j.finished_at for j in jobs if j.finished_at)
    return {
        "mode": mode,
        "processes": processes,
        "jobs": n,
        "succeeded": ok,
        "jobs_per_s": round(n / (end - start), 1),
        "cpu_ms_per_job": round(sum(r["cpu_s"] for r in reports) * 1000 / n, 3),
        "loop_blocked": round(statistics.mean(r["loop_blocked"] for r in reports), 4),
        "thread_waiting": round(statistics.mean(r["thread_waiting"] for r in reports), 4),
        "calls_per_commit": round(statistics.mean(r["calls_per_commit"] for r in reports), 1),
        "on_loop": round(statistics.mean(r["on_loop"] for r in reports), 3),
        "lag_p99_ms": round(max(r["lag_p99_ms"] for r in reports), 1),
        "lag_max_ms": round(max(r["lag_max_ms"] for r in reports), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=6000)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--modes", nargs="+", default=["loop", "thread", "inline"], choices=["loop", "thread", "inline"])
    p.add_argument("--concurrency", type=int, default=64, help="jobs in flight per worker process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="loop", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(_work(a.child, a.mode, a.concurrency))))
        return
    rows = [run(a.jobs, n, mode, a.concurrency) for n in a.processes for mode in a.modes]
    for row in rows:
        print(json.dumps({"benchmark": "storage", **row}))
    two = [r["jobs_per_s"] for r in rows if r["processes"] == 2 and r["mode"] == "loop"]
    print(
        json.dumps(
            {
                "benchmark": "storage",
                "summary": True,
                "two_processes_jobs_per_s": two[0] if two else None,
                "target": TARGET_TWO_PROCESSES,
            }
        )
    )


if __name__ == "__main__":
    main()
