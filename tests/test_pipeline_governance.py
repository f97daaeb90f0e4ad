"""Budget, classification, duplicates and crash recovery through the local runtime and a real fake server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.embedded.stores import SqliteJobStore
from core.entrypoints.local import run_until_done
from core.models import ErrorClass, JobRequest, JobStatus, QueueMessage
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import anthropic_config


def fake(plan: FaultPlan) -> ServerThread:
    return ServerThread(FakeAnthropic(plan))


def submit_and_run(app, prompt="marker:one question", timeout=20.0, **kw):
    job, _ = app.service.submit("acme", JobRequest(prompt=prompt, **kw))
    asyncio.run(run_until_done(app, [job.id], timeout_s=timeout))
    return app.store.get(job.id)


def test_transient_errors_stop_at_the_budget_across_redeliveries(make_app):
    with fake(FaultPlan(rates={"500": 1.0})) as srv:
        # in_process_wait_s=0: every retry goes back through the queue as a redelivery
        app = make_app(anthropic_config(srv.url, max_attempts=3, in_process_wait_s=0))
        job = submit_and_run(app)
        calls = srv.server.config.app.stats["calls"]
    assert job.status is JobStatus.dead_lettered
    assert calls == 3 == job.provider_calls == len(job.attempts)
    assert all(a.error_class is ErrorClass.transient and a.status_code == 500 for a in job.attempts)
    assert "attempt budget exhausted" in job.error.message


def test_permanent_error_fails_once_without_retry(make_app):
    with fake(FaultPlan(rates={"400": 1.0})) as srv:
        app = make_app(anthropic_config(srv.url))
        job = submit_and_run(app)
        calls = srv.server.config.app.stats["calls"]
    assert job.status is JobStatus.failed
    assert calls == 1
    assert job.error.error_class is ErrorClass.permanent
    assert job.error.status_code == 400


@pytest.mark.parametrize("fault", ["429", "529", "reset", "malformed"])
def test_retryable_fault_then_success(make_app, fault):
    with fake(FaultPlan(script=[fault, "ok"], retry_after_s=120)) as srv:
        app = make_app(anthropic_config(srv.url))
        job = submit_and_run(app)
        calls = srv.server.config.app.stats["calls"]
    assert job.status is JobStatus.succeeded, job.error
    assert calls == 2
    assert [a.outcome for a in job.attempts] == ["error", "succeeded"]
    expected = {
        "429": ErrorClass.rate_limited,
        "529": ErrorClass.transient,
        "reset": ErrorClass.transient,
        "malformed": ErrorClass.malformed,
    }[fault]
    assert job.attempts[0].error_class is expected
    if fault == "reset":
        assert job.attempts[0].status_code is None
        assert "connection" in job.attempts[0].error


def test_duplicate_delivery_while_running_is_deferred_and_bills_once(make_app):
    with fake(FaultPlan(latency_s=0.5)) as srv:
        app = make_app(anthropic_config(srv.url))
        job, _ = app.service.submit("acme", JobRequest(prompt="marker:dup question"))
        message = QueueMessage(job_id=job.id, tenant=job.tenant, trace_id=job.trace_id).model_dump_json()
        app.queue.send(message)  # the platform delivers the same job twice, concurrently
        app.queue.send(message)
        asyncio.run(run_until_done(app, [job.id]))
        fa = srv.server.config.app
    job = app.store.get(job.id)
    assert job.status is JobStatus.succeeded
    assert fa.stats["calls"] == 1
    assert fa.replies_by_marker["dup"] == 1


class CrashOnResultWrite:
    """Wraps a job store; the worker dies right after the write that saved the provider's reply (the
    reply and the result are one write now: nothing after it, the ack included, happened)."""

    def __init__(self, inner):
        self.inner = inner
        self.crashed = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def update(self, job, *, expected_version):
        written = self.inner.update(job, expected_version=expected_version)
        if written and job.reply is not None and not self.crashed:
            self.crashed = True
            raise RuntimeError("worker killed right after the provider reply was saved")
        return written


def test_crash_after_reply_never_calls_the_provider_again(make_app, tmp_path):
    with fake(FaultPlan()) as srv:
        crashing = CrashOnResultWrite(SqliteJobStore(tmp_path / "data" / "jobs.db"))
        app = make_app(anthropic_config(srv.url, lease_s=0.5), store=crashing)
        job = submit_and_run(app)
        calls = srv.server.config.app.stats["calls"]
    assert crashing.crashed
    assert job.status is JobStatus.succeeded
    assert calls == 1
    assert job.provider_calls == 1
    assert job.result_text.startswith("Fake answer")


def test_queue_dead_letter_then_cli_replay_brings_it_back(make_app, tmp_path):
    fa = FakeAnthropic(FaultPlan(rates={"500": 1.0}))
    with ServerThread(fa) as srv:
        cfg = {
            **anthropic_config(srv.url, max_attempts=10, in_process_wait_s=0),
            "queue": {"max_receives": 2, "visibility_timeout_s": 30},
        }
        app = make_app(cfg)
        job = submit_and_run(app)
        assert job.status is JobStatus.dead_lettered
        assert "dead-lettered by the queue after 2 deliveries" in job.error.message
        assert job.provider_calls == 2
        assert app.queue.depth()["dead_lettered"] == 1

        env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
        env.update(ALTO_DATA_DIR=str(tmp_path / "data"), FAKE_ANTHROPIC_KEY="test-key")
        alto = [str(Path(sys.executable).with_name("alto")), "--config", str(tmp_path / "altostratus.yaml")]
        listed = subprocess.run([*alto, "dlq", "list", "--json"], env=env, capture_output=True, text=True, check=True)
        entry = json.loads(listed.stdout)[0]
        assert entry["job_id"] == job.id
        assert entry["message_id"]
        shown = json.loads(
            subprocess.run([*alto, "dlq", "show", job.id], env=env, capture_output=True, text=True, check=True).stdout
        )
        assert shown["input_hash"] == job.request_hash
        assert shown["prompt_template"] == "answer-with-citations@1"
        assert [a["error_class"] for a in shown["attempts"]] == ["transient", "transient"]
        fa.plan.rates = {}  # the operator fixed the cause
        out = subprocess.run([*alto, "dlq", "replay", job.id], env=env, capture_output=True, text=True, check=True)
        assert "replayed" in out.stdout
        assert app.queue.depth() == {"queued": 1, "dead_lettered": 0}
        asyncio.run(run_until_done(app, [job.id]))
    job = app.store.get(job.id)
    assert job.status is JobStatus.succeeded
    assert job.provider_calls == 1  # fresh budget
    assert len(job.attempts) == 3  # history kept


def test_importing_core_and_running_offline_loads_no_cloud_sdk(tmp_path):
    code = """
import asyncio, sys, json
from core.bootstrap import bootstrap
from core.config import load_settings
from core.models import JobRequest
from core.entrypoints.local import run_until_done
app = bootstrap(load_settings(env={"ALTO_DATA_DIR": sys.argv[1]}))
job, _ = app.service.submit("t", JobRequest(prompt="hello"))
asyncio.run(run_until_done(app, [job.id]))
from core.entrypoints.openapi import openapi_spec; openapi_spec()
sdks = ("anthropic", "boto3", "botocore", "google.cloud.pubsub_v1", "google.cloud.firestore", "google.cloud.storage",
        "google.api_core", "azure.functions", "azure.data", "azure.storage", "httpx", "httpx2", "functions_framework")
# (bare `google`/`google.cloud` can be namespace stubs that a .pth file creates at startup: not an SDK import)
heavy = sorted({s for s in sdks if s in sys.modules})
print(json.dumps({"status": app.store.get(job.id).status.value, "heavy": heavy}))
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": "succeeded", "heavy": []}
