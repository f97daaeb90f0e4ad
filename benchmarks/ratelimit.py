"""Rate-limit benchmark: workers in several processes share one token bucket and stay under the
provider's limit while using almost all of it.

The fake Anthropic server (its own process) enforces N requests/minute with a token bucket and
answers 429 beyond it. Worker processes (`alto serve --workers-only`, sharing the embedded SQLite
state) are configured with the same limit. Jobs are submitted up front, so workers are always
backlogged; the sustained rate is measured on the provider's side, excluding the initial burst.
Prints one JSON line; required: ratio >= 0.95 and provider_429s == 0.

    python benchmarks/ratelimit.py [--rpm 600] [--burst 5] [--seconds 30] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bootstrap import bootstrap  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.models import JobRequest  # noqa: E402
from core.secrets import EnvSecrets  # noqa: E402
from core.testing.fake_anthropic import spawn  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from workers import wait_terminal, worker_processes  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rpm", type=float, default=600.0, help="the provider's limit, requests per minute")
    p.add_argument("--burst", type=float, default=5.0, help="the provider's bucket capacity, requests")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the backlog should last at the limit")
    p.add_argument("--processes", type=int, default=2, help="worker processes sharing the bucket")
    p.add_argument("--latency", type=float, default=0.05, help="fake provider latency, seconds")
    p.add_argument(
        "--headroom",
        type=float,
        default=2.0,
        help="requests of the provider's burst we leave unused to absorb network jitter",
    )
    p.add_argument("--rate-share", type=float, default=1.0, help="fraction of the provider's rate we configure")
    a = p.parse_args(argv)

    jobs = int(a.rpm / 60.0 * a.seconds + max(1.0, a.burst - a.headroom))
    fake, url = spawn("--rpm", str(a.rpm), "--burst", str(a.burst), "--latency", str(a.latency))
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "altostratus.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url}},
                        "models": {
                            "m": {
                                "provider": "fake",
                                "model_id": "claude-haiku-4-5",
                                "limits": {
                                    "requests_per_minute": a.rpm * a.rate_share,
                                    "burst_s": max(1.0, a.burst - a.headroom) / (a.rpm * a.rate_share) * 60.0,
                                },
                            }
                        },
                        "routing": {"default": {"model": "m", "max_tokens": 64}},
                        "server": {"concurrency": 32},
                        "queue": {"poll_interval_s": 0.05},
                        "logging": {"level": "WARNING"},
                    }
                )
            )
            env = {
                **os.environ,
                "ALTO_CONFIG": str(cfg),
                "ALTO_DATA_DIR": str(Path(d) / "data"),
                "FAKE_KEY": "test-key",
            }
            app = bootstrap(load_settings(cfg, env=env), secrets=EnvSecrets(env))
            ids = [app.service.submit("bench", JobRequest(prompt=f"question {i}"))[0].id for i in range(jobs)]
            with worker_processes(env, a.processes):
                elapsed = wait_terminal(app, ids, a.seconds * 3 + 60)
            done = [app.store.get(j) for j in ids]
            with urllib.request.urlopen(url + "/_stats") as r:
                provider = json.loads(r.read())
    finally:
        fake.terminate()
        fake.wait(timeout=10)

    accepted, span = provider["accepted"], provider["accepted_span_s"]
    # the first requests ride on our full bucket (burst minus headroom); the rest arrive at the refill rate
    sustained_rpm = (accepted - max(1.0, a.burst - a.headroom)) / span * 60.0 if span > 0 else 0.0
    out = {
        "benchmark": "ratelimit",
        "limit_rpm": a.rpm,
        "burst": a.burst,
        "processes": a.processes,
        "jobs": jobs,
        "succeeded": sum(j.status.value == "succeeded" for j in done),
        "provider_calls": provider["stats"].get("calls", 0),
        "provider_429s": provider["stats"].get("429_rate_limit", 0),
        "rejected_after_s": provider.get("rejected_after_s", []),
        "sustained_rpm": round(sustained_rpm, 1),
        "ratio": round(sustained_rpm / a.rpm, 4),
        "elapsed_s": round(elapsed, 2),
    }
    out["ok"] = out["ratio"] >= 0.95 and out["provider_429s"] == 0 and out["succeeded"] == jobs
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
