"""kill -9 of worker processes mid-run (bounded: 200 jobs, 3 kills), with cancels of running jobs and
replays of some of them in flight: no job is lost, every provider call is recorded on its job, calls per run
stay within budget, a permanent error is never retried, every reply paid for but lost with its worker is on
the job as a `lost` attempt with its estimated cost, and each ending sends one callback, of itself."""

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
from core.models import ErrorClass, JobRequest, JobStatus
from core.secrets import EnvSecrets
from core.testing.fake_anthropic import spawn

ROOT = Path(__file__).resolve().parent.parent
JOBS, KILLS, BUDGET, CANCELS = 200, 3, 3, 12
TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


def worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core.entrypoints.cli", "serve", "--workers-only", "--workers", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


def cancel_some_running(app, ids: list[str], cancelled: set[str]) -> None:
    """DELETE jobs whose call is in flight (a live lease), as a user would while workers run and die."""
    from core.errors import AltoError

    for job_id in ids:
        job = app.store.get(job_id)
        if len(cancelled) >= CANCELS:
            return
        if job.status is JobStatus.running and job_id not in cancelled:
            try:
                app.service.cancel("t", job_id)
                cancelled.add(job_id)
            except AltoError:  # it ended meanwhile
                pass


def replay_when_allowed(app, job_id: str) -> bool:
    """POST /replay as a user would right after a cancel: refused (409) while its call is in flight."""
    from core.errors import InputError

    try:
        app.service.replay_for("t", job_id)
        return True
    except InputError as e:
        assert e.status == 409, e
        return False


def test_kill_9_loses_no_job_keeps_budgets_and_reports_lost_replies(tmp_path):
    from tests.test_callbacks import Receiver

    hook = Receiver(204)
    fake, url = spawn("--latency", "1.0", "--rates", json.dumps({"400": 0.05, "500": 0.05}), "--seed", "7")
    cfg = tmp_path / "altostratus.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 10}
                },
                "models": {
                    "m": {
                        "provider": "fake",
                        "model_id": "claude-haiku-4-5",
                        "input_per_mtok": 1.0,
                        "output_per_mtok": 5.0,
                    }
                },
                "routing": {"default": {"model": "m", "max_tokens": 64}},
                "governance": {
                    "max_attempts": BUDGET,
                    "lease_s": 2,
                    "backoff_base_s": 0.05,
                    "backoff_max_s": 0.2,
                    "in_process_wait_s": 0.2,
                    "reconcile_after_s": 5,
                    "reconcile_interval_s": 2,
                },
                "queue": {"visibility_timeout_s": 3, "max_receives": 10, "poll_interval_s": 0.05},
                "server": {"concurrency": 16},
                "logging": {"level": "ERROR"},
                "callbacks": {"allow": ["127.0.0.1"], "backoff_base_s": 0.2, "backoff_max_s": 1, "max_tries": 10},
            }
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_CONFIG": str(cfg),
        "ALTO_DATA_DIR": str(tmp_path / "data"),
        "FAKE_KEY": "test-key",
    }
    try:
        app = bootstrap(load_settings(cfg, env=env), secrets=EnvSecrets(env))
        ids = [
            app.service.submit("t", JobRequest(prompt=f"question {i} marker:k{i}", callback_url=hook.url))[0].id
            for i in range(JOBS)
        ]
        cancelled: set[str] = set()
        for _ in range(KILLS):
            w = worker(env)
            wait_for_calls(url, more=16)  # kill with a full set of calls in flight (each takes 1 s)
            cancel_some_running(app, ids, cancelled)
            w.send_signal(signal.SIGKILL)
            w.wait()
        to_replay = set(sorted(cancelled)[: CANCELS // 2])
        w = worker(env)
        deadline = time.monotonic() + 120
        pending = set(ids)
        while (pending or to_replay) and time.monotonic() < deadline:
            time.sleep(0.25)
            to_replay = {j for j in to_replay if not replay_when_allowed(app, j)}
            pending = {j for j in ids if not app.store.get(j).status.terminal}
        while time.monotonic() < deadline and any(
            ((j := app.store.get(i)).callback is not None and j.callback.state == "pending")
            or j.earlier_callbacks
            or j.call_in_flight_until is not None
            for i in ids
        ):
            time.sleep(0.25)  # the last callbacks in flight, and the reconciler settling calls cut by a kill
        w.terminate()
        w.wait(timeout=30)
        with urllib.request.urlopen(url + "/_stats") as r:
            history = json.loads(r.read())["history"]
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        hook.close()

    assert not pending, f"{len(pending)} jobs never finished, {len(to_replay)} never replayed"
    assert not to_replay, f"{len(pending)} jobs never finished, {len(to_replay)} never replayed"
    assert cancelled, "no cancel caught a running job: the test proved nothing about cancels"
    jobs = {j: app.store.get(j) for j in ids}
    lost_total = double_paid = 0
    for i, job_id in enumerate(ids):
        job, calls = jobs[job_id], history.get(f"k{i}", [])
        lost = [a for a in job.attempts if a.outcome == "lost"]
        lost_total += len(lost)
        assert len(calls) <= len(job.attempts), (job_id, calls, job.attempts)  # every call is on its job
        runs = 2 if job_id in cancelled and job.status.value != "cancelled" else 1
        assert job.provider_calls <= BUDGET, (job_id, job.attempts)
        assert len(job.attempts) <= BUDGET * runs, (job_id, job.attempts)
        seen = [n for n, a in enumerate(job.attempts) if a.error_class is ErrorClass.permanent]
        if seen:  # a permanent error the worker saw is the last attempt and fails the job (a 400 lost with a
            # killed worker was never seen: that attempt is `lost`, and the job rightly tries again)
            assert seen == [len(job.attempts) - 1], (job_id, calls)
            assert job.status is JobStatus.failed, (job_id, calls)
        unserved = calls.count("ok") - (1 if job.status is JobStatus.succeeded else 0)
        double_paid += max(0, unserved)
        # a reply the provider began but nobody received is either lost with its worker (recorded as
        # `lost`, with its estimated cost) or a call the worker gave up on at its deadline (a timeout)
        gave_up = [a for a in job.attempts if a.error_class is ErrorClass.transient and a.status_code is None]
        assert unserved <= len(lost) + len(gave_up), (job_id, calls, [a.outcome for a in job.attempts])
        if lost:
            assert job.usage.estimated_cost_usd > 0
            assert job.usage.cost_usd >= job.usage.estimated_cost_usd
        if job_id in cancelled and job.status.value == "cancelled":  # a call in flight when cancelled is billed
            assert calls.count("ok") <= len([a for a in job.attempts if a.usage is not None]), (job_id, calls)
    # callbacks: every delivery names a terminal state, and each ending (webhook-id) reports one status
    events: dict[str, set[str]] = {}
    for headers, body in hook.got:
        view = json.loads(body)
        assert view["status"] in TERMINAL, view["status"]
        events.setdefault(headers["webhook-id"], set()).add(view["status"])
    assert all(len(statuses) == 1 for statuses in events.values())
    per_job: dict[str, int] = {}
    for headers, body in hook.got:
        per_job.setdefault(json.loads(body)["job_id"], set()).add(headers["webhook-id"])  # type: ignore[attr-defined]
    for job_id in ids:
        endings = 2 if job_id in cancelled and jobs[job_id].status.value != "cancelled" else 1
        assert len(per_job.get(job_id, ())) == endings, (job_id, per_job.get(job_id), jobs[job_id].callback)
    assert lost_total > 0, "the kills hit no call in flight: the test proved nothing"
    print(
        f"kill -9: {JOBS} jobs, {KILLS} kills, {len(cancelled)} cancels in flight ({CANCELS // 2} replayed), "
        f"{lost_total} lost attempts, {double_paid} replies paid twice, {len(hook.got)} callbacks"
    )
