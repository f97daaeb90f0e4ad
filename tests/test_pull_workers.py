"""`alto worker --cloud aws|gcp|azure`, as real processes on each cloud's queue stand-in (moto's SQS server, the
Pub/Sub emulator's pull subscription, the Service Bus fake): SIGTERM drains and exits 0 with nothing lost; kill -9
mid-job loses no job and pays for no reply twice (the kill test's counting); a job slower than the queue's lease
keeps its message hidden, renewed by the worker, and is received once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from core.models import JobStatus
from core.testing.fake_anthropic import ServerThread, spawn
from tests.fakes.gcs import FakeGcs
from tests.pull_rigs import AwsRig, AzureRig, GcpRig, Rig, pull_config


@pytest.fixture(scope="module")
def gcs_server():
    with ServerThread(FakeGcs()) as srv:
        yield srv.url


@pytest.fixture(params=["aws", "gcp", "azure"])
def rig(request, tmp_path, monkeypatch) -> Any:
    cloud = request.param
    if cloud == "aws":
        r: Rig = AwsRig(tmp_path, request.getfixturevalue("moto_url"))
    elif cloud == "gcp":
        emulators = request.getfixturevalue("emulators")
        for k, v in emulators.items():
            monkeypatch.setenv(k, v)
        r = GcpRig(tmp_path, emulators, request.getfixturevalue("gcs_server"))
    else:
        r = AzureRig(tmp_path, request.getfixturevalue("azurite"))
    for k, v in r.env.items():
        monkeypatch.setenv(k, v)
    yield r
    r.close()


@pytest.fixture
def provider():
    procs: list[subprocess.Popen[bytes]] = []

    def start(latency_s: float) -> str:
        proc, url = spawn("--latency", str(latency_s))
        procs.append(proc)
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_stats") as r:
        return json.loads(r.read())


def wait_until(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def metric(port: int, name: str) -> float:
    _, text = probe(port, "/metrics")
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def statuses(rig: Rig, ids: list[str]) -> list[JobStatus]:
    return [rig.app.store.get(i).status for i in ids]


def served_twice(rig: Rig, ids: list[str], prompts: list[str], history: dict[str, list[str]]) -> list[str]:
    """Jobs with more served replies than a success and its lost attempts explain (the kill test's counting)."""
    bad = []
    for job_id, prompt in zip(ids, prompts, strict=True):
        job = rig.app.store.get(job_id)
        oks = history.get(prompt.split("marker:")[1], []).count("ok")
        lost = sum(1 for a in job.attempts if a.outcome == "lost")
        if oks - (1 if job.status is JobStatus.succeeded else 0) > lost:
            bad.append(job_id)
    return bad


def busy_worker(rig: Rig, url: str, tag: str, jobs: int, concurrency: int) -> tuple[list[str], list[str], Any, int]:
    """`jobs` queued, one worker started with `concurrency`, returned once that many calls are in flight."""
    rig.configure(pull_config(url, visibility_s=rig.visibility_s, concurrency=concurrency))
    prompts = [f"{tag} {i} marker:{tag}{i}" for i in range(jobs)]
    ids = rig.submit(prompts)
    worker, port = rig.start_worker()
    wait_until("calls in flight", lambda: stats(url)["stats"].get("calls", 0) >= concurrency, 60)
    return prompts, ids, worker, port


def test_sigterm_drains_the_jobs_in_flight_exits_0_and_leaves_the_rest_on_the_queue(rig, provider):
    url = provider(1.5)
    # on Pub/Sub only the jobs in flight: the emulator does not reliably redeliver what a stream held when its
    # process exited (measured: some of a closed stream's messages were still held 90 s later), so what the
    # drain hands back there could not be shown to come back; SQS and the Service Bus fake show it
    jobs = 3 if rig.cloud == "gcp" else 9
    _, ids, worker, port = busy_worker(rig, url, "d", jobs=jobs, concurrency=3)
    assert probe(port, "/readyz")[0] == 200 and probe(port, "/healthz")[0] == 200
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0  # the jobs in flight took 1.5 s: well inside the grace
    done = [s for s in statuses(rig, ids) if s is JobStatus.succeeded]
    assert JobStatus.running not in statuses(rig, ids), statuses(rig, ids)  # none cut off
    assert len(done) == stats(url)["stats"]["calls"] >= 3  # every call it made was served before it left
    assert all(s in (JobStatus.succeeded, JobStatus.queued) for s in statuses(rig, ids))

    again, again_port = rig.start_worker()  # the rest were handed back or never taken: another worker finishes them
    try:
        wait_until("the second worker ready", lambda: probe(again_port, "/readyz")[0] == 200, 60)
        wait_until("every job done", lambda: all(s is JobStatus.succeeded for s in statuses(rig, ids)), 90)
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=30) == 0
    history = stats(url)["history"]
    assert all(history[f"d{i}"] == ["ok"] for i in range(jobs)), history  # one paid call per job, in all


def test_kill_9_mid_job_loses_nothing_and_never_pays_for_a_reply_twice(rig, provider):
    url = provider(1.0)
    prompts, ids, worker, _ = busy_worker(rig, url, "k", jobs=12, concurrency=6)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    again, _ = rig.start_worker()

    def done() -> bool:
        return all(s is JobStatus.succeeded for s in statuses(rig, ids))

    try:
        if rig.cloud == "gcp":
            # The emulator can hold what a killed stream leased for minutes (Pub/Sub redelivers at the ack
            # deadline; CI runs saw jobs still held after 180 s). The deployed reconcile schedule re-sends jobs
            # whose message is lost, again at every run: here a sweep every 30 s stands for it.
            for _ in range(6):
                try:
                    wait_until("every job done", done, 30)
                    break
                except AssertionError:
                    rig.app.service.reconcile(older_than_s=30)
        wait_until(f"every job done (now {[s.value for s in statuses(rig, ids)]})", done, 60)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)
    history = stats(url)["history"]
    assert not served_twice(rig, ids, prompts, history), history
    lost = [a for i in ids for a in rig.app.store.get(i).attempts if a.outcome == "lost"]
    assert lost, "the kill caught no call in flight: the test proved nothing"
    assert all(a.usage is None or a.usage.estimated_cost_usd >= 0 for a in lost)


def test_a_job_slower_than_the_queue_lease_keeps_its_message_hidden_and_is_received_once(rig, provider):
    url = provider(rig.visibility_s + 3)  # past the lease: at least one renewal needed, more on the shorter ones
    rig.configure(pull_config(url, visibility_s=rig.visibility_s, concurrency=4))
    [job_id] = rig.submit(["slow marker:s0"])
    worker, port = rig.start_worker()
    try:
        wait_until("the job done", lambda: rig.app.store.get(job_id).status.terminal, 90)
        assert rig.app.store.get(job_id).status is JobStatus.succeeded, rig.app.store.get(job_id).attempts
        time.sleep(rig.visibility_s)  # had the lease lapsed, the message would be visible again by now
        assert metric(port, "alto_worker_received_total") == 1
        if rig.cloud != "gcp":  # Pub/Sub's lease manager is the client library's, not the worker's keeper
            assert metric(port, "alto_worker_leases_renewed_total") >= 1
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert stats(url)["history"]["s0"] == ["ok"]
    assert rig.app.store.get(job_id).provider_calls == 1
    if rig.cloud != "gcp":
        assert rig.backlog() == 0
