"""The Azure adapter: the v2 app's own functions called in-process with real `HttpRequest`s and
`ServiceBusMessage`s, the output binding captured through a real `func.Out`, Table and Blob Storage
on Azurite (npm, started here on loopback, stopped by pid). Functions Core Tools and a Service Bus
emulator can't be installed offline: Service Bus's redelivery and dead-lettering are driven here with
rising delivery counts, and the SDK sender sits behind the queue port.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.models import JobStatus
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread, free_port
from tests.contracts import check_job_store, check_state_store

ROOT = Path(__file__).resolve().parent.parent
KEY = "azure-test-key"


_FUNCTIONS: dict[str, Any] = {}


def app_functions() -> dict[str, Any]:
    """The app's indexed functions (indexing twice trips the library's duplicate-name check)."""
    if not _FUNCTIONS:
        import adapters.azure.function_app as fa

        _FUNCTIONS.update({f.get_function_name(): f for f in fa.app.get_functions()})
    return _FUNCTIONS


def _out_base():
    import azure.functions as func

    return func.Out


class Out(_out_base()):  # type: ignore[misc]
    """A real `func.Out` implementation: what the host hands the api function for its output binding."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


class FakeSender:
    """Stands in for azure.servicebus's ServiceBusSender behind the queue port."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.scheduled: list[tuple[Any, Any]] = []

    def send_messages(self, msg: Any) -> None:
        self.sent.append(msg)

    def schedule_messages(self, msg: Any, when: Any) -> list[int]:
        self.scheduled.append((msg, when))
        return [len(self.scheduled)]


class Azure:
    def __init__(self, conn: str, monkeypatch, tmp_path: Path) -> None:
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient

        run = uuid.uuid4().hex[:8]
        self.env = {
            "ALTO_STORAGE_CONNECTION": conn,
            "ALTO_QUEUE_NAME": "alto-jobs",
            "ALTO_JOBS_TABLE": f"jobs{run}",
            "ALTO_STATE_TABLE": f"state{run}",
            "ALTO_CONTAINER": f"alto{run}",
            "ALTO_CONFIG": str(tmp_path / "altostratus.yaml"),
            "ALTO_DATA_DIR": str(tmp_path / "data"),
            "ALTO_API_KEYS": f"acme={KEY}",
            "FAKE_KEY": "test-key",
            "WEBSITE_HOSTNAME": "alto-test.azurewebsites.net",
        }  # the platform sets it on every app
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        tables = TableServiceClient.from_connection_string(conn)
        tables.create_table(self.env["ALTO_JOBS_TABLE"])
        tables.create_table(self.env["ALTO_STATE_TABLE"])
        BlobServiceClient.from_connection_string(conn).create_container(self.env["ALTO_CONTAINER"])
        self.sender = FakeSender()
        self.loop = asyncio.new_event_loop()
        self.config = Path(self.env["ALTO_CONFIG"])
        self.configure({})

    def configure(self, config: dict[str, Any]) -> None:
        from adapters.azure import app as azure_app

        self.config.write_text(yaml.safe_dump(config))
        azure_app.reset()
        azure_app.get_app.factory = lambda: azure_app.build(sender_factory=lambda: self.sender)
        azure_app.get_api_app.factory = lambda: azure_app.build(api_only=True, sender_factory=lambda: self.sender)
        self.functions = {name: f.get_user_function() for name, f in app_functions().items()}

    @property
    def app(self):
        from adapters.azure.app import get_app

        return get_app()

    def http(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None, raw: bool = False
    ) -> tuple[int, Any, Out]:
        import azure.functions as func

        out = Out()
        req = func.HttpRequest(
            method,
            f"http://localhost{path}",
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            body=json.dumps(body).encode() if body else b"",
            params=params or {},
        )
        resp = self.functions["api"](req, out)
        return resp.status_code, (resp if raw else json.loads(resp.get_body())), out

    def message(self, body: str, delivery_count: int = 1, props: dict[str, Any] | None = None, mid: str | None = None):
        from azure.functions.servicebus import ServiceBusMessage

        return ServiceBusMessage(
            body=body.encode(),
            message_id=mid or uuid.uuid4().hex,
            delivery_count=delivery_count,
            application_properties=props or {},
            user_properties={},
            content_type="application/json",
        )

    def run_worker(self, msg: Any) -> bool:
        """One delivery; True if the function returned (Service Bus completes), False if it raised (abandon).
        Every delivery runs on one event loop, as in the Functions host (the provider's client lives on it)."""
        try:
            self.loop.run_until_complete(self.functions["worker"](msg))
            return True
        except Exception as e:
            from core.errors import Redeliver

            assert isinstance(e, Redeliver), e
            return False

    def service_bus(self, body: str, max_delivery_count: int = 5) -> str:
        """Drive one message the way Service Bus would: redeliver on abandon with a rising count,
        dead-letter after maxDeliveryCount. Returns 'completed' or 'dead-lettered'."""
        mid = uuid.uuid4().hex
        for count in range(1, max_delivery_count + 1):
            if self.run_worker(self.message(body, count, mid=mid)):
                return "completed"
        self.functions["dead_letter"](self.message(body, max_delivery_count, mid=mid))
        return "dead-lettered"


@pytest.fixture
def azure(azurite, monkeypatch, tmp_path) -> Iterator[Azure]:
    az = Azure(azurite, monkeypatch, tmp_path)
    yield az
    az.loop.close()


def anthropic_cfg(url: str, **governance: Any) -> dict[str, Any]:
    return {
        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 10}},
        "models": {"m": {"provider": "fake", "model_id": "claude-haiku-4-5"}},
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "governance": {"backoff_base_s": 0.1, "backoff_max_s": 0.2, "in_process_wait_s": 0, **governance},
    }


# ---------------------------------------------------------------- the functions


def test_api_output_binding_worker_tables_then_api_get(azure):
    status, body, out = azure.http("POST", "/v1/jobs", {"prompt": "What is a visibility timeout?"})
    # the app's own host name, not the request's Host header
    assert status == 202
    assert body["status_url"].startswith("https://alto-test.azurewebsites.net/v1/jobs/")
    queued = json.loads(out.get())  # the message went to the output binding, not the SDK
    assert queued["job_id"] == body["job_id"]
    assert azure.sender.sent == []
    status, view, out = azure.http("GET", f"/v1/jobs/{body['job_id']}")
    assert view["status"] == "queued"
    assert out.get() is None
    assert azure.service_bus(out_body := json.dumps(queued)) == "completed"
    status, view, _ = azure.http("GET", f"/v1/jobs/{body['job_id']}")
    assert view["status"] == "succeeded"
    assert view["result"]
    assert out_body  # (the same body a real trigger would carry)
    assert azure.http("POST", "/v1/jobs", None)[0] in (400, 401, 422)


def test_poison_message_is_abandoned_until_service_bus_dead_letters_it(azure):
    dead_port = free_port()
    cfg = anthropic_cfg(f"http://127.0.0.1:{dead_port}", max_attempts=10)
    azure.configure(cfg)
    _, body, out = azure.http("POST", "/v1/jobs", {"prompt": "always fails"})
    assert azure.service_bus(out.get()) == "dead-lettered"
    job = azure.app.store.get(body["job_id"])
    assert job.status is JobStatus.dead_lettered
    assert job.provider_calls == 5
    assert "dead-lettered by the queue after 5 deliveries" in job.error.message


def test_a_retry_with_a_delay_schedules_a_copy_that_carries_the_count(azure):
    fake = FakeAnthropic(FaultPlan(script=["429"], retry_after_s=3))  # the provider says: come back in 3 s
    with ServerThread(fake) as srv:
        azure.configure(anthropic_cfg(srv.url, max_attempts=10, retry_after_cap_s=30))
        _, body, out = azure.http("POST", "/v1/jobs", {"prompt": "retry me later"})
        assert azure.run_worker(azure.message(out.get(), delivery_count=1)) is True  # completed: a copy carries on
    ((msg, when),) = azure.sender.scheduled
    assert msg.application_properties == {"alto_deliveries": 1}
    from datetime import datetime

    assert 2 < (when - datetime.now(UTC)).total_seconds() <= 3.5
    copy = azure.app.queue.delivery("c", str(msg), 1, {"alto_deliveries": 1})
    assert copy.receive_count == 2
    assert json.loads(copy.body)["job_id"] == body["job_id"]


def test_duplicates_bill_once(azure):
    fake = FakeAnthropic(FaultPlan())
    with ServerThread(fake) as srv:
        azure.configure(anthropic_cfg(srv.url))
        _, body, out = azure.http("POST", "/v1/jobs", {"prompt": "bill me once"})
        for _ in range(3):  # at-least-once: the same message delivered again and again
            assert azure.run_worker(azure.message(out.get()))
    job = azure.app.store.get(body["job_id"])
    assert job.status is JobStatus.succeeded
    assert job.provider_calls == 1
    assert fake.stats["calls"] == 1


# ---------------------------------------------------------------- ports on Azurite


def test_table_stores_conditional_writes_reject_the_second_claim(azure):
    from azure.data.tables import UpdateMode

    from adapters.azure.app import table_service
    from adapters.azure.tables import TableJobStore, TableStateStore, partition

    jobs = lambda: table_service().get_table_client(azure.env["ALTO_JOBS_TABLE"])  # noqa: E731
    # a prompt bigger than one Table property: the job's JSON is split and joined back
    check_job_store(
        TableJobStore(jobs),
        prompt="p" * 50_000,
        corrupt=lambda job_id: jobs().update_entity(
            {"PartitionKey": partition("job", job_id), "RowKey": job_id, "data0": '{"id": "not a job"}', "parts": 1},
            mode=UpdateMode.MERGE,
        ),
    )
    check_state_store(
        lambda clock: TableStateStore(
            lambda: table_service().get_table_client(azure.env["ALTO_STATE_TABLE"]), clock=clock
        )
    )


def test_expired_jobs_and_state_are_purged_from_the_tables(azure):
    """Table Storage has no TTL: the reconcile timer deletes ended jobs past their retention and expired state."""
    import time

    from core.models import Job, JobRequest

    app = azure.app
    now = time.time()
    old = Job(
        id="old",
        tenant="acme",
        request=JobRequest(prompt="p"),
        request_hash="h",
        trace_id="t",
        created_at=now - 100,
        updated_at=now - 100,
        status=JobStatus.succeeded,
        finished_at=now - 100,
    )
    fresh = old.model_copy(update={"id": "fresh"})
    app.store.retention_s, app.state.clock = 50, (lambda: now - 100)
    app.store.create(old)
    app.state.put_if_absent("idem:acme:k", {"job_id": "old"}, ttl_s=10)
    app.store.retention_s, app.state.clock = 3600, time.time
    app.store.create(fresh)
    app.state.put_if_absent("idem:acme:live", {"job_id": "fresh"}, ttl_s=3600)
    azure.loop.run_until_complete(azure.functions["reconcile"](None))
    assert app.store.get("old") is None
    assert app.store.get("fresh") is not None
    assert app.state.get("idem:acme:live") is not None
    assert app.state.purge_expired(time.time()) == 0  # the expired key went with the timer's run


def test_claim_check_round_trip_through_blob_storage(azure):
    queue = azure.app.queue
    big = json.dumps({"job_id": "x", "tenant": "acme", "trace_id": "t", "pad": "z" * 300_000})
    token = queue.collect()
    queue.send(big)
    (sent,) = queue.collected(token)
    assert len(sent) < 1000
    assert json.loads(sent)["claim_check"].startswith("claim-check/")
    assert azure.app.blobs.list("claim-check/")
    assert queue.delivery("m", sent.encode(), 1, {}).body == big
    with pytest.raises(KeyError):
        azure.app.blobs.get("missing")


# ---------------------------------------------------------------- Key Vault references


def test_a_key_vault_reference_the_platform_left_unresolved_is_never_used_as_a_key():
    """Until the secret exists and the identity may read it, the app setting holds the reference's own text;
    it must fail the job saying why, never reach a provider as its API key."""
    from adapters.azure.secrets import AppSettingSecrets
    from core.errors import ConfigError

    unresolved = "@Microsoft.KeyVault(VaultName=alto-kv;SecretName=anthropic-api-key)"
    secrets = AppSettingSecrets({"ANTHROPIC_API_KEY": unresolved, "OTHER": "sk-real"}, app="alto-worker-x")
    assert secrets.resolve("env:OTHER") == "sk-real"
    with pytest.raises(ConfigError) as e:
        secrets.resolve("env:ANTHROPIC_API_KEY")
    assert "did not resolve" in str(e.value)
    assert "az functionapp restart` alto-worker-x" in str(e.value)
    assert unresolved not in str(e.value)


def test_a_map_over_three_then_reduce_workflow_runs_end_to_end_on_service_bus_and_tables(azure):
    from tests.test_workflows import document

    fake = FakeAnthropic(FaultPlan())
    with ServerThread(fake) as srv:
        azure.configure(anthropic_cfg(srv.url))
        status, body, out = azure.http(
            "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 2500)}}
        )
        assert status == 202, body
        pending = [out.get()]
        while pending:  # Service Bus delivers what the workers send: children, then the parent's wake-up
            assert azure.service_bus(pending.pop(0)) == "completed"
            pending += [str(m) for m in azure.sender.sent]
            azure.sender.sent.clear()
    status, view, _ = azure.http("GET", f"/v1/jobs/{body['job_id']}")
    assert view["status"] == "succeeded", view
    assert view["result"], view
    assert [s["children"]["total"] for s in view["steps"]] == [3, 1]
    assert view["usage"]["calls"] == 4 == fake.stats["calls"]
    status, cancelled, _ = azure.http("DELETE", f"/v1/jobs/{body['job_id']}")
    assert status == 409
    assert "already succeeded" in cancelled["error"]["message"]


def test_a_streaming_job_long_polls_and_serves_buffered_sse_through_the_azure_api(azure):
    fake = FakeAnthropic(FaultPlan(stream_tokens=30))
    with ServerThread(fake) as srv:
        azure.configure(anthropic_cfg(srv.url))
        _, body, out = azure.http("POST", "/v1/jobs", {"prompt": "stream through azure", "stream": True})
        status, view, _ = azure.http("GET", f"/v1/jobs/{body['job_id']}", params={"after": "0", "wait_s": "0.2"})
        assert status == 200
        assert view["status"] == "queued"
        assert view["partial"] is None
        assert azure.service_bus(out.get()) == "completed"
    status, view, _ = azure.http("GET", f"/v1/jobs/{body['job_id']}", params={"after": "0", "wait_s": "5"})
    assert view["status"] == "succeeded"
    assert "tok29" in view["result"]
    status, resp, _ = azure.http("GET", f"/v1/jobs/{body['job_id']}/events", raw=True)
    text = resp.get_body().decode()
    assert status == 200
    assert resp.mimetype == "text/event-stream"
    assert "id: 1:1\nevent: delta" in text
    assert "event: done" in text


def test_the_worker_exports_a_job_span_with_its_attempts_in_the_submits_trace(azure, otel_memory):
    exporter, _ = otel_memory
    exporter.clear()
    azure.configure({"observability": {"otel": {"enabled": True}}})
    status, body, out = azure.http("POST", "/v1/jobs", {"prompt": "What is a visibility timeout?"})
    assert status == 202
    assert azure.service_bus(out.get()) == "completed"
    job = azure.app.store.get(body["job_id"])
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(job.trace_id, 16)]
    [root] = [s for s in spans if s.name == "alto.job"]
    [call] = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    assert root.attributes["alto.job.status"] == "succeeded"
    assert call.attributes["gen_ai.provider.name"]
    assert call.attributes["gen_ai.usage.output_tokens"] == job.usage.output_tokens
