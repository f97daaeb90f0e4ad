"""Threads: a 50-turn conversation on one thread, the tokens sent per turn with the history fitted to the window
against a client resending the whole conversation, and its cost with the earlier turns cached.

Each user turn is ~300 tokens; the fake Messages API answers briefly and reports prompt-cache reads and writes as
Anthropic does (claude-haiku-4-5's prices: $1 / $5 per million input / output, cache reads $0.10, writes $1.25).
Runs, one job at a time as a client would send them:
  `resend`   no thread: every job carries the whole conversation so far (a 1M-token window, so none fails);
  `fitted`   on a thread with an 8,000-token window: the service sends what fits, oldest exchanges left out;
  `cached`   as `fitted`, with `cache_min_tokens: 1024`: the last earlier turn is a prompt-cache breakpoint.
Prints one JSON line: tokens sent at turns 10, 25 and 50 and in total, per run, and each run's cost.

    python benchmarks/threads.py [--turns 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bootstrap import bootstrap  # noqa: E402
from core.config.worker import Settings  # noqa: E402
from core.entrypoints.local import run_until_done  # noqa: E402
from core.models import Job, JobRequest  # noqa: E402
from core.secrets import EnvSecrets  # noqa: E402
from core.testing.fake_anthropic import FakeAnthropic, ServerThread  # noqa: E402

PRICES = {"input_per_mtok": 1.0, "output_per_mtok": 5.0, "cache_read_per_mtok": 0.1, "cache_write_per_mtok": 1.25}


def turn(i: int) -> str:
    detail = " ".join(
        f"Detail {i}.{k}: the kettle's element reading was {k * 7 % 13} ohms on test {k}." for k in range(20)
    )
    return f"Turn {i}: here is what I found about order {1000 + i}. {detail}"


def settings(url: str, data: Path, *, window: int, cache_min: int | None) -> Settings:
    model: dict[str, Any] = {"provider": "fake", "model_id": "claude-haiku-4-5", "context_window": window, **PRICES}
    if cache_min is not None:
        model["cache_min_tokens"] = cache_min
    return Settings.model_validate(
        {
            "data_dir": str(data),
            "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_ANTHROPIC_KEY", "base_url": url}},
            "models": {"haiku": model},
            "routing": {"default": {"model": "haiku", "max_tokens": 256}},
        }
    )


def conversation(url: str, turns: int, mode: str) -> list[Job]:
    """Run the conversation one job at a time; the finished jobs, in order."""
    window = 1_000_000 if mode == "resend" else 8_000
    app = bootstrap(
        settings(url, Path(tempfile.mkdtemp()), window=window, cache_min=1024 if mode == "cached" else None),
        secrets=EnvSecrets({"FAKE_ANTHROPIC_KEY": "test-key"}),
    )
    done: list[Job] = []
    history: list[dict[str, Any]] = []
    for i in range(turns):
        user = {"role": "user", "content": turn(i)}
        if mode == "resend":
            request = JobRequest.model_validate({"messages": [*history, user], "cache": False})
        else:
            request = JobRequest(prompt=turn(i), thread_id="bench", cache=False)
        job, _ = app.service.submit("acme", request)
        asyncio.run(run_until_done(app, [job.id], timeout_s=60))
        finished = app.store.get(job.id)
        assert finished is not None and finished.result_text is not None, finished
        history += [user, {"role": "assistant", "content": finished.result_text}]
        done.append(finished)
    return done


def summary(jobs: list[Job]) -> dict[str, Any]:
    sent = [j.assembly.input_tokens for j in jobs if j.assembly is not None]
    return {
        "sent_at": {n: sent[n - 1] for n in (10, 25, 50) if n <= len(sent)},
        "sent_total": sum(sent),
        "dropped_turns_last": jobs[-1].assembly.history_dropped if jobs[-1].assembly else 0,
        "cache_read_tokens": sum(j.usage.cache_read_tokens for j in jobs),
        "cost_usd": round(sum(j.usage.cost_usd for j in jobs), 6),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=50)
    args = p.parse_args()
    fake = FakeAnthropic(api_key="test-key")
    with ServerThread(fake) as srv:
        runs = {mode: summary(conversation(srv.url, args.turns, mode)) for mode in ("resend", "fitted", "cached")}
    out = {
        "turns": args.turns,
        **{f"{mode}_{k}": v for mode, r in runs.items() for k, v in r.items()},
        "tokens_ratio_fitted_to_resend": round(runs["fitted"]["sent_total"] / runs["resend"]["sent_total"], 3),
        "cost_ratio_cached_to_fitted": round(runs["cached"]["cost_usd"] / runs["fitted"]["cost_usd"], 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
