"""The GCP adapter: functions-framework with real CloudEvents, and the Pub/Sub and Firestore emulators
that ship with the Google Cloud CLI (started here directly, stopped by pid), pushing to
functions-framework servers on loopback. Cloud Storage is a JSON API fake (tests/fakes/gcs.py).
Where the CLI or Java is missing, the emulator tests skip and say why.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.models import JobStatus
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread, free_port
from tests.contracts import check_job_store, check_state_store
from tests.fakes.gcs import FakeGcs

ROOT = Path(__file__).resolve().parent.parent
KEY = "gcp-test-key"
MAIN = str(ROOT / "adapters" / "gcp" / "main.py")


class FunctionServer:
    """A functions-framework app for one target, served on loopback in a thread."""

    def __init__(self, target: str) -> None:
        import functions_framework
        from werkzeug.serving import make_server

        self.app = functions_framework.create_app(target=target, source=MAIN)
        self.port = free_port()
        self.answered = 0  # requests answered so far: a test waits on this, never on a fixed sleep
        self._answered = threading.Condition()
        self.server = make_server("127.0.0.1", self.port, self._counting, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/"

    def _counting(self, environ: Any, start_response: Any) -> Any:
        try:
            return list(self.app(environ, start_response))  # the whole response, before it counts as answered
        finally:
            with self._answered:
                self.answered += 1
                self._answered.notify_all()

    def wait_answered(self, n: int, timeout: float = 30.0) -> None:
        """Block until `n` requests have been answered in all."""
        with self._answered:
            assert self._answered.wait_for(lambda: self.answered >= n, timeout), f"{self.answered} of {n} answered"

    def close(self) -> None:
        self.server.shutdown()


class Gcp:
    def __init__(self, emulators: dict[str, str], monkeypatch, tmp_path: Path, gcs_url: str) -> None:
        from google.cloud import pubsub_v1

        run = uuid.uuid4().hex[:8]
        self.project = f"alto-{run}"
        env = {
            **emulators,
            "STORAGE_EMULATOR_HOST": gcs_url,
            "ALTO_GCP_PROJECT": self.project,
            "ALTO_TOPIC": "alto-jobs",
            "ALTO_BUCKET": "alto-bucket",
            "ALTO_DATA_DIR": str(tmp_path / "data"),
            "ALTO_CONFIG": str(tmp_path / "altostratus.yaml"),
            "ALTO_API_KEYS": f"acme={KEY}",
            "ALTO_FUNCTION_TIMEOUT_S": "60",
            "FAKE_KEY": "test-key",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        self.config = Path(env["ALTO_CONFIG"])
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.create_topic(name=f"projects/{self.project}/topics/alto-jobs").name
        self.dead_topic = self.publisher.create_topic(name=f"projects/{self.project}/topics/alto-jobs-dead").name
        self.servers: list[FunctionServer] = []
        self.configure({})

    def configure(self, config: dict[str, Any]) -> None:
        from adapters.gcp import clients
        from adapters.gcp.app import get_api_app, get_app

        self.config.write_text(yaml.safe_dump(config))
        for c in (clients.publisher, clients.firestore, clients.storage, clients.secret_manager):
            c.cache_clear()
        get_app.reset()
        get_api_app.reset()

    @property
    def app(self):
        from adapters.gcp.app import get_app

        return get_app()

    def client(self, target: str):
        import functions_framework

        return functions_framework.create_app(target=target, source=MAIN).test_client()

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        r = self.client("api").open(path, method=method, json=body, headers={"Authorization": f"Bearer {KEY}"})
        return r.status_code, r.get_json()

    def submit(self, prompt: str, **extra: Any) -> str:
        status, body = self.http("POST", "/v1/jobs", {"prompt": prompt, **extra})
        assert status == 202, body
        return body["job_id"]

    def serve(self, target: str) -> FunctionServer:
        s = FunctionServer(target)
        self.servers.append(s)
        return s

    def push(self, name: str, topic: str, endpoint: str, **extra: Any) -> str:
        return self.subscriber.create_subscription(
            request={
                "name": f"projects/{self.project}/subscriptions/{name}",
                "topic": topic,
                "ack_deadline_seconds": 30,
                "push_config": {"push_endpoint": endpoint},
                "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
                **extra,
            }
        ).name

    def wait(self, job_id: str, statuses: set[str], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.app.store.get(job_id)
            if job is not None and job.status.value in statuses:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never reached {statuses}: {self.app.store.get(job_id)}")

    def close(self) -> None:
        for s in self.servers:
            s.close()


@pytest.fixture(scope="module")
def gcs_url():
    with ServerThread(FakeGcs()) as srv:
        yield srv.url


@pytest.fixture
def gcp(emulators, monkeypatch, tmp_path, gcs_url):
    g = Gcp(emulators, monkeypatch, tmp_path, gcs_url)
    yield g
    g.close()


@pytest.fixture
def fake(monkeypatch):
    f = FakeAnthropic(FaultPlan())
    with ServerThread(f) as srv:
        yield f, srv.url


def anthropic_cfg(url: str, **governance: Any) -> dict[str, Any]:
    return {
        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 10}},
        "models": {"m": {"provider": "fake", "model_id": "claude-haiku-4-5"}},
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "governance": {"backoff_base_s": 0.2, "backoff_max_s": 0.5, "in_process_wait_s": 0, **governance},
    }


def _published_body(gcp: Gcp, job_id: str) -> str:
    job = gcp.app.store.get(job_id)
    return json.dumps({"job_id": job.id, "tenant": job.tenant, "trace_id": job.trace_id})


# ---------------------------------------------------------------- in-process CloudEvents


def test_worker_accepts_binary_structured_and_raw_push_events(gcp):
    worker = gcp.client("worker")
    ids = [gcp.submit(f"question {i}") for i in range(3)]
    msgs = [
        {"data": base64.b64encode(_published_body(gcp, j).encode()).decode(), "messageId": f"m{i}", "attributes": {}}
        for i, j in enumerate(ids)
    ]
    event_type = "google.cloud.pubsub.topic.v1.messagePublished"
    source = f"//pubsub.googleapis.com/projects/{gcp.project}/topics/alto-jobs"
    binary = worker.post(
        "/",
        json={"message": msgs[0], "subscription": "s"},
        headers={"ce-id": "e1", "ce-specversion": "1.0", "ce-type": event_type, "ce-source": source},
    )
    structured = worker.post(
        "/",
        data=json.dumps(
            {
                "specversion": "1.0",
                "id": "e2",
                "type": event_type,
                "source": source,
                "datacontenttype": "application/json",
                "data": {"message": msgs[1], "subscription": "s"},
            }
        ),
        headers={"content-type": "application/cloudevents+json"},
    )
    raw_push = worker.post("/", json={"message": msgs[2], "subscription": f"projects/{gcp.project}/subscriptions/s"})
    assert [r.status_code for r in (binary, structured, raw_push)] == [200, 200, 200]
    assert all(gcp.app.store.get(j).status is JobStatus.succeeded for j in ids)
    status, view = gcp.http("GET", f"/v1/jobs/{ids[0]}")
    assert status == 200
    assert view["status"] == "succeeded"
    assert view["result"]


def test_api_function_serves_the_same_contract(gcp):
    assert gcp.client("api").post("/v1/jobs", json={"prompt": "x"}).status_code == 401
    status, spec = gcp.http("GET", "/openapi.json")
    assert status == 200
    assert "/v1/jobs" in spec["paths"]
    status, body = gcp.http("POST", "/v1/jobs", {"prompt": "   "})
    assert status in (400, 422)
    assert body["error"]["field"]
    job_id = gcp.submit("hello")
    status, view = gcp.http("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert view["status"] == "queued"
    pulled = gcp.subscriber.create_subscription(name=f"projects/{gcp.project}/subscriptions/probe", topic=gcp.topic)
    assert pulled  # the topic exists; the job's message went to it (checked end to end below)


# ---------------------------------------------------------------- end to end on the emulators


def test_publish_push_worker_firestore_then_api_get(gcp):
    worker = gcp.serve("worker")
    gcp.push("jobs-push", gcp.topic, worker.url)
    job_id = gcp.submit("What is a visibility timeout?")
    job = gcp.wait(job_id, {"succeeded"})
    assert job.result_text
    assert job.provider_calls == 1
    _status, view = gcp.http("GET", f"/v1/jobs/{job_id}")
    assert view["status"] == "succeeded"


def test_failing_message_is_redelivered_then_dead_lettered_and_marked(gcp):
    dead_port = free_port()
    gcp.configure(
        {
            "providers": {
                "dead": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": f"http://127.0.0.1:{dead_port}"}
            },
            "models": {"broken": {"provider": "dead", "model_id": "claude-haiku-4-5"}},
            "routing": {"default": {"model": "broken", "max_tokens": 64}},
            "governance": {"max_attempts": 10, "backoff_base_s": 0.1, "backoff_max_s": 0.2, "in_process_wait_s": 0},
        }
    )
    worker, dead = gcp.serve("worker"), gcp.serve("dead_letter")
    gcp.push("dead-push", gcp.dead_topic, dead.url)
    gcp.push(
        "jobs-push",
        gcp.topic,
        worker.url,
        dead_letter_policy={"dead_letter_topic": gcp.dead_topic, "max_delivery_attempts": 5},
    )
    job_id = gcp.submit("always fails")
    job = gcp.wait(job_id, {"dead_lettered"}, timeout=60)
    assert job.provider_calls == 5  # one call per delivery, then Pub/Sub gave up and the DLQ function marked it
    assert "dead-lettered by the queue" in job.error.message
    assert job.attempts[-1].error_class.value == "transient"


def test_duplicates_bill_once(gcp, fake):
    f, url = fake
    gcp.configure(anthropic_cfg(url))
    worker = gcp.serve("worker")
    gcp.push("jobs-push", gcp.topic, worker.url)
    job_id = gcp.submit("bill me once")
    gcp.wait(job_id, {"succeeded"})
    before = worker.answered
    gcp.publisher.publish(gcp.topic, _published_body(gcp, job_id).encode()).result()  # a redelivered duplicate
    gcp.publisher.publish(gcp.topic, _published_body(gcp, job_id).encode()).result()
    worker.wait_answered(before + 2)  # both duplicates were delivered and answered
    job = gcp.app.store.get(job_id)
    assert job.status is JobStatus.succeeded
    assert job.provider_calls == 1
    assert f.stats["calls"] == 1


def test_deferred_copy_waits_for_its_time_without_spending_an_attempt(gcp):
    worker = gcp.client("worker")
    job_id = gcp.submit("later")
    not_before = time.time() + 1.0
    msg = {
        "data": base64.b64encode(_published_body(gcp, job_id).encode()).decode(),
        "messageId": "d1",
        "attributes": {"not_before": f"{not_before:.3f}"},
    }
    r = worker.post("/", json={"message": msg, "subscription": "s"})
    assert r.status_code == 200
    assert time.time() >= not_before
    assert gcp.app.store.get(job_id).status is JobStatus.succeeded


# ---------------------------------------------------------------- ports


def test_firestore_stores_keep_the_port_contracts(gcp):
    from adapters.gcp import clients
    from adapters.gcp.firestore import FirestoreJobStore, FirestoreStateStore

    jobs = f"jobs-{uuid.uuid4().hex[:6]}"
    check_job_store(
        FirestoreJobStore(clients.firestore, collection=jobs),
        corrupt=lambda job_id: (
            clients.firestore().collection(jobs).document(job_id).update({"data": '{"id": "not a job"}'})
        ),
    )
    check_state_store(
        lambda clock: FirestoreStateStore(clients.firestore, collection=f"state-{uuid.uuid4().hex[:6]}", clock=clock)
    )


def test_claim_check_through_cloud_storage(gcp, monkeypatch):
    monkeypatch.setenv("ALTO_CLAIM_CHECK_BYTES", "1000")
    gcp.configure({})
    queue, blobs = gcp.app.queue, gcp.app.blobs
    sub = gcp.subscriber.create_subscription(name=f"projects/{gcp.project}/subscriptions/pull", topic=gcp.topic).name
    big = json.dumps({"job_id": "x", "tenant": "acme", "trace_id": "t", "pad": "z" * 5000})
    queue.send(big)
    m = gcp.subscriber.pull(subscription=sub, max_messages=1, timeout=10).received_messages[0].message
    assert len(m.data) < 300
    assert json.loads(m.data)["claim_check"].startswith("claim-check/")
    assert blobs.list("claim-check/")
    assert queue.delivery(m.message_id, m.data, dict(m.attributes), 1).body == big
    with pytest.raises(KeyError):
        blobs.get("nope")


def test_secret_manager_references_resolve_once_per_instance():
    """No Secret Manager emulator exists: a stand-in client records what the port asks for."""
    from types import SimpleNamespace

    from adapters.gcp.secrets import SecretManagerSecrets
    from core.errors import ConfigError
    from core.secrets import EnvSecrets

    calls: list[str] = []

    class Client:
        def access_secret_version(self, name: str):
            from google.api_core.exceptions import NotFound

            calls.append(name)
            if "missing" in name:
                raise NotFound("no such secret")
            return SimpleNamespace(payload=SimpleNamespace(data=b"sk-from-secret-manager"))

    client = Client()
    secrets = SecretManagerSecrets(lambda: client, lambda: "proj", EnvSecrets({"LOCAL": "x"}))
    assert secrets.resolve("gcp-sm:alto-anthropic-api-key") == "sk-from-secret-manager"
    assert secrets.resolve("gcp-sm:alto-anthropic-api-key") == "sk-from-secret-manager"
    assert secrets.resolve("gcp-sm:other/3") == "sk-from-secret-manager"
    assert calls == [
        "projects/proj/secrets/alto-anthropic-api-key/versions/latest",
        "projects/proj/secrets/other/versions/3",
    ]  # cached: one call per reference
    assert secrets.resolve("env:LOCAL") == "x"
    with pytest.raises(ConfigError, match="does not exist"):
        secrets.resolve("gcp-sm:missing")


def test_a_map_over_three_then_reduce_workflow_runs_end_to_end_on_pubsub_and_firestore(gcp, fake):
    from tests.test_workflows import document

    f, url = fake
    gcp.configure(anthropic_cfg(url))
    worker = gcp.serve("worker")
    gcp.push("jobs-push", gcp.topic, worker.url)
    status, body = gcp.http("POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 2500)}})
    assert status == 202, body
    job = gcp.wait(body["job_id"], {"succeeded", "failed"}, timeout=60)
    assert job.status is JobStatus.succeeded, job.error
    status, view = gcp.http("GET", f"/v1/jobs/{body['job_id']}")
    assert [s["children"]["total"] for s in view["steps"]] == [3, 1]
    assert view["usage"]["calls"] == 4 == f.stats["calls"]
    r = gcp.client("api").open(
        f"/v1/jobs?parent={body['job_id']}", method="GET", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert len(r.get_json()["jobs"]) == 4


def test_a_streaming_job_streams_sse_from_the_gen2_api_function_and_long_polls(gcp, fake):
    f, url = fake
    f.plan.stream_tokens, f.plan.stream_tps = 40, 80
    gcp.configure(anthropic_cfg(url))
    worker = gcp.serve("worker")
    gcp.push("jobs-push", gcp.topic, worker.url)
    _status, body = gcp.http("POST", "/v1/jobs", {"prompt": "stream through gcp", "stream": True})
    job_id = body["job_id"]
    r = gcp.client("api").open(
        f"/v1/jobs/{job_id}/events", method="GET", buffered=False, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == 200
    assert r.mimetype == "text/event-stream"
    chunks = [c.decode() for c in r.response]  # sent piece by piece as the job went on, until `done`
    text = "".join(chunks)
    assert len(chunks) >= 3
    assert "event: done" not in chunks[0]
    assert "event: done" in chunks[-1]
    assert "id: 1:1\nevent: delta" in text
    assert '"status":"succeeded"' in text
    r = gcp.client("api").open(
        f"/v1/jobs/{job_id}?after=1:1&wait_s=5", method="GET", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.get_json()["status"] == "succeeded"
    assert "tok39" in r.get_json()["result"]


def test_the_worker_exports_a_job_span_with_its_attempts_in_the_submits_trace(gcp, otel_memory):
    exporter, _ = otel_memory
    exporter.clear()
    gcp.configure({"observability": {"otel": {"enabled": True}}})
    worker = gcp.serve("worker")
    gcp.push("jobs-push-otel", gcp.topic, worker.url)
    job_id = gcp.submit("What is a visibility timeout?")
    job = gcp.wait(job_id, {"succeeded"})
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(job.trace_id, 16)]
    [root] = [s for s in spans if s.name == "alto.job"]
    [call] = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    assert root.attributes["alto.job.id"] == job_id
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.usage.input_tokens"] == job.usage.input_tokens
