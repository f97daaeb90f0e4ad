"""Benchmarks run (small N) and report consistent figures; speed targets live in their output, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_benchmark_runs_and_every_job_succeeds():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--jobs", "60", "--inflight", "20",
                          "--latency", "0.01"], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["jobs"] == line["succeeded"] == 60
    assert line["jobs_per_s"] > 0 and line["raw_sdk_calls_per_s"] > 0
    assert line["ratio"] == round(line["jobs_per_s"] / line["raw_sdk_calls_per_s"], 3)
    assert line["p50_job_ms"] <= line["p99_job_ms"]
