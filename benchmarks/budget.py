"""Budget: worker processes sharing one spend budget never spend past it, and use nearly all of it.

The fake Anthropic server (its own process) answers every call with exactly `--max-tokens` output
tokens after 0.1 s; two worker processes (`alto serve --workers-only`, sharing the embedded state) run
`--jobs` jobs submitted up front against a daily budget that fits about half of them
(`on_exhausted: fail`). Spend is read from the budget record itself, and checked against the jobs'
own billed cost. Prints one JSON line; required: overshoot_usd == 0 and utilisation >= 0.9.

    python benchmarks/budget.py [--jobs 200] [--processes 2] [--fits 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bootstrap import bootstrap  # noqa: E402
from core.config import load_settings  # noqa: E402
from core.governance.budget import scopes  # noqa: E402
from core.models import JobRequest  # noqa: E402
from core.secrets import EnvSecrets  # noqa: E402
from core.testing.fake_anthropic import spawn  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from workers import wait_terminal, worker_processes  # noqa: E402

PRICE_IN, PRICE_OUT = 1.0, 5.0  # claude-haiku-4-5's published prices, USD per million tokens


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--fits", type=float, default=0.5, help="share of the jobs the budget pays for")
    p.add_argument("--max-tokens", type=int, default=64)
    a = p.parse_args(argv)
    per_job = (40 * PRICE_IN + a.max_tokens * PRICE_OUT) / 1e6  # ~40 input tokens per prompt below
    budget = round(per_job * a.jobs * a.fits, 6)
    fake, url = spawn("--stream-tokens", str(a.max_tokens), "--stream-tps", str(a.max_tokens * 10))
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "altostratus.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url}},
                        # token_margin as the built-in Claude entries have it: the provider's count of the input may
                        # run above ours, and the reservation must cover it
                        "models": {
                            "m": {
                                "provider": "fake",
                                "model_id": "claude-haiku-4-5",
                                "input_per_mtok": PRICE_IN,
                                "output_per_mtok": PRICE_OUT,
                                "token_margin": 0.25,
                            }
                        },
                        "routing": {"default": {"model": "m", "max_tokens": a.max_tokens}},
                        "tenants": {"bench": {"budgets": {"daily_usd": budget}}},
                        "server": {"concurrency": 50},
                        "queue": {"poll_interval_s": 0.05},
                        "logging": {"level": "ERROR"},
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
            ids = [
                app.service.submit("bench", JobRequest(prompt=f"Summarise the lease rules, variant {i}."))[0].id
                for i in range(a.jobs)
            ]
            with worker_processes(env, a.processes, loops=2):
                elapsed = wait_terminal(app, ids, 300)
            jobs = [app.store.get(j) for j in ids]
            rec = app.state.get(scopes("bench", None, app.settings.tenants["bench"].budgets, time.time())[0].key)
    finally:
        fake.terminate()
    spent = rec.value["spent"] if rec is not None else 0.0
    errors = sorted({j.error.message[:160] for j in jobs if j.error})[:2]
    billed = sum(j.usage.cost_usd for j in jobs)
    out = {
        "benchmark": "budget",
        "jobs": a.jobs,
        "processes": a.processes,
        "budget_usd": budget,
        "spent_usd": round(spent, 8),
        "billed_usd": round(billed, 8),
        "overshoot_usd": round(max(0.0, spent - budget), 8),
        "utilisation": round(spent / budget, 4),
        "held_at_end": len(rec.value["holds"]) if rec is not None else 0,
        "succeeded": sum(j.status.value == "succeeded" for j in jobs),
        "budget_exhausted": sum(
            j.status.value == "failed" and "budget_exhausted" in (j.error.message if j.error else "") for j in jobs
        ),
        "elapsed_s": round(elapsed, 2),
        "sample_errors": errors,
    }
    out["ok"] = (
        out["overshoot_usd"] == 0
        and out["utilisation"] >= 0.9
        and abs(spent - billed) < 1e-9
        and out["succeeded"] + out["budget_exhausted"] == a.jobs
        and out["held_at_end"] == 0
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
