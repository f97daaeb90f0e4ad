"""kill -9 of worker processes mid-run (bounded: 200 jobs, 3 kills): no job is lost, provider calls per
job stay within budget, a permanent error is never retried, and every reply paid for but lost with its
worker is on the job as a `lost` attempt with its estimated cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from core.bootstrap import bootstrap
from core.config import load_settings
from core.embedded.secrets import EnvSecrets
from core.models import ErrorClass, JobRequest, JobStatus
from core.testing.fake_anthropic import spawn

ROOT = Path(__file__).resolve().parent.parent
JOBS, KILLS, BUDGET = 200, 3, 3


def worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.entrypoints.cli", "serve", "--workers-only", "--workers", "1"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def calls_so_far(url: str) -> int:
    with urllib.request.urlopen(url + "/_stats") as r:
        return int(json.loads(r.read())["stats"].get("calls", 0))


def wait_for_calls(url: str, *, more: int, timeout_s: float = 30.0) -> None:
    """Until the provider has received `more` calls beyond those it had: a worker's start-up time varies."""
    target, deadline = calls_so_far(url) + more, time.monotonic() + timeout_s
    while calls_so_far(url) < target:
        assert time.monotonic() < deadline, "the worker made no calls"
        time.sleep(0.05)
    time.sleep(0.3)


def test_kill_9_loses_no_job_keeps_budgets_and_reports_lost_replies(tmp_path):
    fake, url = spawn("--latency", "1.0", "--rates", json.dumps({"400": 0.05, "500": 0.05}), "--seed", "7")
    cfg = tmp_path / "altostratus.yaml"
    cfg.write_text(yaml.safe_dump({
        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 10}},
        "models": {"m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1.0,
                         "output_per_mtok": 5.0}},
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "governance": {"max_attempts": BUDGET, "lease_s": 2, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                       "in_process_wait_s": 0.2, "reconcile_after_s": 5, "reconcile_interval_s": 2},
        "queue": {"visibility_timeout_s": 3, "max_receives": 10, "poll_interval_s": 0.05},
        "server": {"concurrency": 16},
        "logging": {"level": "ERROR"},
    }))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}, "ALTO_CONFIG": str(cfg),
           "ALTO_DATA_DIR": str(tmp_path / "data"), "FAKE_KEY": "test-key"}
    try:
        app = bootstrap(load_settings(cfg, env=env), secrets=EnvSecrets(env))
        ids = [app.service.submit("t", JobRequest(prompt=f"question {i} marker:k{i}"))[0].id for i in range(JOBS)]
        for _ in range(KILLS):
            w = worker(env)
            wait_for_calls(url, more=16)  # kill with a full set of calls in flight (each takes 1 s)
            w.send_signal(signal.SIGKILL)
            w.wait()
        w = worker(env)
        deadline = time.monotonic() + 120
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            time.sleep(0.25)
            pending = {j for j in pending if not app.store.get(j).status.terminal}
        w.terminate()
        w.wait(timeout=30)
        with urllib.request.urlopen(url + "/_stats") as r:
            history = json.loads(r.read())["history"]
    finally:
        fake.terminate()
        fake.wait(timeout=10)

    assert not pending, f"{len(pending)} jobs never finished"
    jobs = {j: app.store.get(j) for j in ids}
    lost_total = double_paid = 0
    for i, job_id in enumerate(ids):
        job, calls = jobs[job_id], history.get(f"k{i}", [])
        lost = [a for a in job.attempts if a.outcome == "lost"]
        lost_total += len(lost)
        assert len(calls) <= job.provider_calls <= BUDGET, (job_id, calls, job.provider_calls)
        seen = [n for n, a in enumerate(job.attempts) if a.error_class is ErrorClass.permanent]
        if seen:  # a permanent error the worker saw is the last attempt and fails the job (a 400 lost with a
            # killed worker was never seen: that attempt is `lost`, and the job rightly tries again)
            assert seen == [len(job.attempts) - 1] and job.status is JobStatus.failed, (job_id, calls)
        unserved = calls.count("ok") - (1 if job.status is JobStatus.succeeded else 0)
        double_paid += max(0, unserved)
        # a reply the provider began but nobody received is either lost with its worker (recorded as
        # `lost`, with its estimated cost) or a call the worker gave up on at its deadline (a timeout)
        gave_up = [a for a in job.attempts if a.error_class is ErrorClass.transient and a.status_code is None]
        assert unserved <= len(lost) + len(gave_up), (job_id, calls, [a.outcome for a in job.attempts])
        if lost:
            assert job.usage.estimated_cost_usd > 0 and job.usage.cost_usd >= job.usage.estimated_cost_usd
    assert lost_total > 0, "the kills hit no call in flight: the test proved nothing"
    print(f"kill -9: {JOBS} jobs, {KILLS} kills, {lost_total} lost attempts, {double_paid} replies paid twice")
