"""Worker processes for the multi-process benchmarks: `alto serve --workers-only` processes sharing one
data dir, started together, waited on until given jobs are terminal, and always stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worker_processes(env: dict[str, str], processes: int, loops: int = 1) -> Iterator[list[subprocess.Popen]]:
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "core.entrypoints.cli", "serve", "--workers-only", "--workers", str(loops)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        yield workers
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=15)
            except subprocess.TimeoutExpired:
                w.kill()


def wait_terminal(app: Any, ids: list[str], timeout_s: float) -> float:
    """Seconds until every job in `ids` is terminal (or `timeout_s` passed).

    The watcher shares the machine with the workers it measures, so it reads as little as it can: jobs in
    submission order, each read until it is terminal, never one already seen to be. Workers finish jobs
    roughly in that order, so a poll costs the jobs finished since the last one (re-reading every pending
    job each poll took a third of a core at 6,000 jobs, taken from the workers)."""
    t0 = time.perf_counter()
    i, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        while i < len(ids) and app.store.get(ids[i]).status.terminal:
            i += 1
        if i == len(ids):
            break
        time.sleep(0.05)
    return time.perf_counter() - t0
