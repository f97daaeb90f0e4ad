"""The Azure deployment proven where no emulator judges RBAC: each Function App of infra/azure runs in its own
process from the staged app folder, with the settings main.bicep gives it (its disabled functions
included), on Azurite for Table and Blob Storage; every call each app's identity makes is recorded at the
SDK's transport (Storage), by the app's Service Bus sender and bindings, and by the platform's Key Vault
reference resolution; and each is checked against the role assignments main.bicep makes for that app
(built-in roles expanded to their data actions: tests/azure_iam.py), in both directions.

Service Bus has no emulator that can be installed here: the test drives the queue the way Service Bus does
(deliveries with a rising count, abandon and redelivery, dead-lettering after the queue's maxDeliveryCount
from main.bicep, scheduled messages), and the apps' SDK sender is a recording stand-in whose messages join
that queue. The scenarios are the AWS and GCP proofs'.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import pytest

from core.config.api import hash_api_key
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests import azure_iam
from tests.bicep import Bicep, Unresolved
from tests.cloud_calls import Recorder, read
from tests.conftest import (
    MASKED_EMAIL,
    ROOT,
    SAMPLES,
    a_redacted_job_and_its_callback,
    erase_a_thread,
    masked_in_the_answer,
    safety_env,
    stage_source,
)

KEY = "azure-deploy-proof-key"
TENANT = "acme"
MODEL_KEY = "deployed-anthropic-key"
VAULT_KEY = "Tm90IGEgcmVhbCBrZXkgYnV0IDMyIGJ5dGVzIGxvbmc="  # as deploy.sh stores it: 32 bytes, base64


class AppHost:
    """One Function App's process (tests/azure_host.py), invoked one event at a time."""

    def __init__(self, app: str, env: dict[str, str], source: Path, record: Path, log: Path) -> None:
        self.app, self.log = app, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.azure_host", app, str(record)],
            cwd=source,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab"),
        )

    def invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else b""
        assert line, f"app {self.app} did not answer:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ServiceBus:
    """One queue with its dead-letter sub-queue, as Service Bus delivers it to the trigger: peek-lock deliveries
    with a rising delivery count, abandon and redeliver, dead-letter after `max_delivery_count`."""

    def __init__(self, max_delivery_count: int) -> None:
        self.max = max_delivery_count
        self.active: deque[dict[str, Any]] = deque()
        self.dead: deque[dict[str, Any]] = deque()

    def send(self, body: str, properties: dict[str, Any] | None = None, delay_s: float = 0.0) -> None:
        self.active.append(
            {
                "body": body,
                "id": uuid.uuid4().hex,
                "delivery_count": 0,
                "properties": properties or {},
                "visible_at": time.time() + delay_s,
            }
        )

    def take(self) -> dict[str, Any] | None:
        now = time.time()
        for m in list(self.active):
            if m["visible_at"] <= now:
                self.active.remove(m)
                m["delivery_count"] += 1
                return m
        return None

    def settle(self, m: dict[str, Any], completed: bool) -> None:
        if completed:
            return
        if m["delivery_count"] >= self.max:
            self.dead.append(m)
        else:
            self.active.append(m)


class AzureDeployment:
    def __init__(self, azurite: str, workdir: Path, extra_env: dict[str, str]) -> None:
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient

        self.bicep = Bicep(
            ROOT / "infra" / "azure" / "main.bicep",
            {"apiKeyHashes": f"{TENANT}={hash_api_key(KEY)}", "safetyVault": True},
        )
        self.source = self._stage(workdir / "app")
        self.record = workdir / "calls.jsonl"
        self.conn = azurite
        settings = self.bicep.settings()
        self.names = {
            k: settings[k] if not isinstance(settings[k], Unresolved) else self._deployed(k)
            for k in ("ALTO_JOBS_TABLE", "ALTO_STATE_TABLE", "ALTO_CONTAINER")
        }
        tables = TableServiceClient.from_connection_string(azurite)
        tables.create_table_if_not_exists(self.names["ALTO_JOBS_TABLE"])
        tables.create_table_if_not_exists(self.names["ALTO_STATE_TABLE"])
        containers = BlobServiceClient.from_connection_string(azurite)
        if not containers.get_container_client(self.names["ALTO_CONTAINER"]).exists():
            containers.create_container(self.names["ALTO_CONTAINER"])
        self.bus = ServiceBus(int(settings["ALTO_QUEUE__MAX_RECEIVES"]))
        self.hosts: dict[str, AppHost] = {}
        try:
            for app in self.bicep.var("appNames"):
                env = self._app_settings(app, settings)
                self.hosts[app] = AppHost(app, {**env, **extra_env}, self.source, self.record, workdir / f"{app}.log")
        except BaseException:
            self.stop()
            raise
        self.settings = settings

    def _deployed(self, setting: str) -> str:
        """A resource's name, as the deployment would give it: main.bicep names tables and the container itself."""
        resource = {
            "ALTO_JOBS_TABLE": "jobsTable",
            "ALTO_STATE_TABLE": "stateTable",
            "ALTO_CONTAINER": "dataContainer",
        }[setting]
        return str(self.bicep.resource(resource)["config"]["name"])

    def _stage(self, dest: Path) -> Path:
        """The app folder exactly as deploy.sh publishes it (infra/stage.sh, function_app.py, host.json)."""
        stage_source(dest, "azure")
        (dest / "function_app.py").write_text("from adapters.azure.function_app import app  # noqa: F401\n")
        for f in ("host.json", "requirements.txt"):
            (dest / f).write_bytes((ROOT / "adapters" / "azure" / f).read_bytes())
        return dest

    def _app_settings(self, app: str, settings: dict[str, Any]) -> dict[str, str]:
        """The app's settings as the platform hands them over: the deployed names filled in, storage through
        Azurite's connection (the local form of the same calls), Key Vault references resolved by the platform
        with the app's identity (recorded as that identity's call)."""
        extra = [s for s in self.bicep.var("disabledSettings")[app]]
        env: dict[str, str] = {}
        for k, v in {**settings, **{s["name"]: s["value"] for s in extra}}.items():
            env[k] = str(self.names.get(k, v))  # a resource name the deployment gives, or the value itself
        references = {  # setting -> (the grant that lists the apps holding it, its secret's name, the stored value)
            "ANTHROPIC_API_KEY": ("secret", self.bicep.var("secretName"), MODEL_KEY),
            "ALTO_VAULT_KEY": ("vaultKey", self.bicep.var("vaultKeyName"), VAULT_KEY),
        }
        for setting, (grant, secret, value) in references.items():
            holds_reference = app in self.bicep.var("grants")[grant]  # main.bicep sets the reference on these apps
            if holds_reference:
                Recorder(str(self.record), app).write(transport="keyvault", method="getSecret", secret=secret)
            env[setting] = value if holds_reference else ""
        env.update(
            {
                "ALTO_STORAGE_CONNECTION": self.conn,
                "WEBSITE_HOSTNAME": f"{app}.azurewebsites.net",
                "WEBSITE_SITE_NAME": app,
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": f"{self.source}:{ROOT}",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        return {k: v for k, v in env.items() if not v.startswith("<")}

    # ---------------------------------------------------------------- driving the apps

    def _enqueue(self, out: dict[str, Any]) -> dict[str, Any]:
        for body in out.get("out", []):
            self.bus.send(body)
        for body, props, delay in out.get("sent", []):
            self.bus.send(body, props, delay)
        return out

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        out = self._enqueue(
            self.hosts["api"].invoke(
                {
                    "function": "api",
                    "http": {
                        "method": method,
                        "path": path,
                        "params": params or {},
                        "body": json.dumps(body) if body is not None else "",
                        "headers": {
                            "Authorization": f"Bearer {KEY}",
                            "Content-Type": "application/json",
                            **(headers or {}),
                        },
                    },
                }
            )
        )
        assert "error" not in out, out
        h = out["http"]
        return h["status"], (json.loads(h["body"]) if h["mimetype"] == "application/json" else h["body"])

    def pump(self, done: Any, timeout_s: float = 60) -> None:
        """Deliver to the worker app as Service Bus would until `done()`."""
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out; logs:\n" + "\n".join(
                h.log.read_text()[-2500:] for h in self.hosts.values()
            )
            if (m := self.bus.take()) is not None:
                out = self._enqueue(self.hosts["worker"].invoke({"function": "worker", "message": m}))
                self.bus.settle(m, out["completed"])
            elif self.bus.dead:
                d = self.bus.dead.popleft()
                out = self._enqueue(self.hosts["worker"].invoke({"function": "dead_letter", "message": d}))
                if not out["completed"]:
                    self.bus.dead.append(d)
            else:
                time.sleep(0.05)

    def timer(self) -> None:
        out = self._enqueue(self.hosts["worker"].invoke({"function": "reconcile"}))
        assert out["completed"], out

    def calls(self) -> list[dict[str, Any]]:
        return read(str(self.record))

    def stop(self) -> None:
        for h in self.hosts.values():
            h.stop()


@pytest.fixture(scope="module")
def fake():
    f = FakeAnthropic(FaultPlan(), api_key=MODEL_KEY)
    with ServerThread(f) as srv:
        yield f, srv.url


@pytest.fixture(scope="module")
def az(azurite, fake, tmp_path_factory):
    _, url = fake
    d = AzureDeployment(
        azurite,
        tmp_path_factory.mktemp("azure-deploy"),
        {
            # the operator's choices for this run, as for the other proofs (and a sweep age of 1 s, since the timer
            # takes no argument to sweep sooner)
            "ALTO_GOVERNANCE__RECONCILE_AFTER_S": "1",
            "ALTO_PROVIDERS__ANTHROPIC__BASE_URL": url,
            "ALTO_GOVERNANCE__IN_PROCESS_WAIT_S": "0",
            "ALTO_GOVERNANCE__MAX_ATTEMPTS": "10",
            "ALTO_GOVERNANCE__BACKOFF_BASE_S": "0.2",
            "ALTO_GOVERNANCE__BACKOFF_MAX_S": "0.5",
            "ALTO_STREAM__INLINE_CHARS": "1000",
            "ALTO_BATCH__FLUSH_S": "0.01",
            "ALTO_OBSERVABILITY__AUDIT__ENABLED": "true",
            "ALTO_CALLBACKS__ALLOW": '["127.0.0.1"]',
            **safety_env("env:ALTO_VAULT_KEY"),  # the app setting main.bicep gives with safetyVault
        },
    )
    yield d
    d.stop()


def submit(az: AzureDeployment, **body: Any) -> str:
    status, out = az.http("POST", "/v1/jobs", body)
    assert status == 202, out
    return out["job_id"]


def view(az: AzureDeployment, job_id: str) -> dict[str, Any]:
    status, out = az.http("GET", f"/v1/jobs/{job_id}")
    assert status == 200, out
    return out


def until(
    az: AzureDeployment,
    job_id: str,
    statuses: tuple[str, ...] = ("succeeded", "failed", "dead_lettered"),
    timeout_s: float = 60,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(view(az, job_id))
        return seen["status"] in statuses

    az.pump(done, timeout_s)
    return seen


# ---------------------------------------------------------------- the apps' scenarios


def test_each_app_runs_only_its_own_functions_and_the_first_key_is_a_hash(az):
    assert (
        az.hosts["api"].invoke({"function": "worker", "message": {"body": "{}", "id": "x", "delivery_count": 1}})[
            "error"
        ]
        == "worker is disabled in app api"
    )
    assert (
        "is disabled in app worker"
        in az.hosts["worker"].invoke({"function": "api", "http": {"method": "GET", "path": "/healthz"}})["error"]
    )
    assert az.settings["ALTO_API_KEY_HASHES"] == f"{TENANT}={hash_api_key(KEY)}"
    out = az.hosts["api"].invoke({"function": "api", "http": {"method": "GET", "path": "/v1/jobs"}})
    assert out["http"]["status"] == 401


def test_submit_through_the_output_binding_then_the_worker_answers(az):
    done = until(az, submit(az, prompt="What is a visibility timeout?"))
    assert done["status"] == "succeeded", done
    assert done["result"], done


def test_an_idempotency_key_returns_the_first_job_and_listings_find_it(az):
    _, first = az.http("POST", "/v1/jobs", {"prompt": "exactly once"}, headers={"Idempotency-Key": "order-17"})
    _, again = az.http("POST", "/v1/jobs", {"prompt": "exactly once"}, headers={"Idempotency-Key": "order-17"})
    assert again["job_id"] == first["job_id"]
    until(az, first["job_id"])
    assert first["job_id"] in [j["job_id"] for j in az.http("GET", "/v1/jobs")[1]["jobs"]]
    listed = az.http("GET", "/v1/jobs", params={"status": "succeeded"})[1]["jobs"]
    assert first["job_id"] in [j["job_id"] for j in listed]
    assert {j["status"] for j in listed} == {"succeeded"}


def test_a_retry_is_abandoned_and_redelivered_then_answered(az, fake):
    f, _ = fake
    f.plan.script = ["529"]
    done = until(az, submit(az, prompt="retry me through the queue"))
    assert done["status"] == "succeeded", done
    assert len(done["attempts"]) == 2, done


def test_a_big_workflow_input_is_stashed_by_the_api_and_read_by_the_worker(az):
    from tests.test_workflows import document

    status, out = az.http("POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 12000)}})
    assert status == 202, out
    assert until(az, out["job_id"], timeout_s=120)["status"] == "succeeded"


def test_a_document_uploaded_by_the_operator_is_a_workflow_input_and_a_missing_one_is_refused(az):
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(az.conn).get_container_client(az.names["ALTO_CONTAINER"])
    container.upload_blob("workflow-inputs/handbook.md", (SAMPLES / "retries.md").read_bytes(), overwrite=True)
    status, out = az.http(
        "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/handbook.md"}}
    )
    assert status == 202
    assert until(az, out["job_id"])["status"] == "succeeded"
    status, out = az.http(
        "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/none.md"}}
    )
    assert status == 422
    assert "no blob" in out["error"]["message"]


def test_a_spilled_stream_is_replayed_over_sse_by_the_api(az, fake):
    f, _ = fake
    f.plan.stream_tokens = 600
    try:
        job_id = submit(az, prompt="stream a long answer", stream=True)
        done = until(az, job_id)
    finally:
        f.plan.stream_tokens = 0
    assert done["status"] == "succeeded"
    assert "tok599" in done["result"]
    status, body = az.http("GET", f"/v1/jobs/{job_id}/events")
    assert status == 200
    assert "event: done" in body
    assert "tok599" in body


def test_a_thread_is_erased_with_its_image_and_its_spilled_stream(az, fake):
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(az.conn).get_container_client(az.names["ALTO_CONTAINER"])
    erase_a_thread(
        lambda method, path: az.http(method, path),
        lambda **body: submit(az, **body),
        lambda job_id: until(az, job_id),
        lambda prefix: sorted(b.name for b in container.list_blobs(name_starts_with=prefix)),
        fake[0],
        TENANT,
    )


def test_rag_without_a_snapshot_fails_the_job_saying_why(az):
    done = until(az, submit(az, prompt="What does the manual say?", collection="manuals"))
    assert done["status"] == "failed"
    assert "collection 'manuals' has no documents" in done["error"]["message"]


def test_rag_with_a_published_snapshot_answers_with_citations(az, make_app):
    from azure.storage.blob import BlobServiceClient

    from adapters.azure.blobs import AzureBlobStore

    blobs = AzureBlobStore(
        lambda: BlobServiceClient.from_connection_string(az.conn).get_container_client(az.names["ALTO_CONTAINER"])
    )
    operator = make_app(blobs=blobs)  # `alto ingest --publish`
    operator.library.ingest(SAMPLES, tenant=TENANT, collection="docs")
    operator.library.publish(TENANT, "docs")
    done = until(az, submit(az, prompt="Which errors are never retried?", collection="docs"))
    assert done["status"] == "succeeded", done
    assert done["citations"], done


def test_the_reconcile_timer_sends_a_due_batch_and_applies_it(az):
    job_id = submit(az, prompt="a report nobody waits for", lane="batch")
    az.pump(lambda: view(az, job_id)["status"] != "queued")
    time.sleep(0.05)
    az.timer()
    assert until(az, job_id)["lane"] == "batch"


def test_the_reconcile_sweep_resends_a_job_whose_message_was_lost(az):
    job_id = submit(az, prompt="my message will be lost")
    az.bus.active.clear()  # lost
    time.sleep(1.1)  # past this run's reconcile_after_s
    az.timer()
    assert until(az, job_id)["status"] == "succeeded"


def test_a_redacted_job_is_sealed_by_the_api_and_its_callback_opened_by_the_worker(az, fake):
    """Under a policy that redacts (safetyVault=true): both apps hold the vault key's reference."""
    a_redacted_job_and_its_callback(
        lambda **body: submit(az, **body), lambda job_id: until(az, job_id), az.pump, fake[0]
    )


def test_a_batched_answer_is_masked_by_the_reconcile_timer(az):
    job_id = submit(az, prompt=f"Repeat {MASKED_EMAIL}", task="masked", lane="batch")
    az.pump(lambda: view(az, job_id)["status"] != "queued")
    time.sleep(0.05)
    az.timer()
    masked_in_the_answer(until(az, job_id))


def test_a_dead_lettered_job_is_marked_and_its_callback_delivered(az, fake):
    from tests.test_callbacks import Receiver

    f, _ = fake
    f.plan.script = ["500"] * az.bus.max
    receiver = Receiver(204)
    try:
        job_id = submit(az, prompt="this one always fails", callback_url=receiver.url)
        done = until(az, job_id, ("dead_lettered",), timeout_s=90)
        assert len(done["attempts"]) == az.bus.max
        assert "dead-lettered by the queue" in done["error"]["message"]
        az.pump(lambda: bool(receiver.got))
        assert json.loads(receiver.got[0][1])["status"] == "dead_lettered"
    finally:
        receiver.close()
        f.plan.script = []


# ---------------------------------------------------------------- role assignments, from the recordings


def test_every_call_was_granted_and_every_role_assignment_was_needed(az):
    from urllib.parse import urlsplit

    calls = az.calls()
    assert {c["function"] for c in calls} == set(az.bicep.var("appNames")), "an app made no call: is recording on?"
    endpoints = dict(p.split("=", 1) for p in az.conn.strip(";").split(";"))
    table_host, blob_host = (urlsplit(endpoints[k]).netloc for k in ("TableEndpoint", "BlobEndpoint"))
    assignments = azure_iam.assignments(az.bicep)
    denied = []
    needs = [(c["function"], n) for c in calls for n in azure_iam.needs(c, table_host=table_host, blob_host=blob_host)]
    needs += [(app, azure_iam.Need(azure_iam.PLATFORM[1], azure_iam.PLATFORM[2])) for app in az.bicep.var("appNames")]
    for app, need in needs:
        allowing = [a for a in assignments if a.app == app and a.grants(need)]
        if not allowing:
            denied.append((app, need.action, need.resource))
        elif len(allowing) == 1:
            allowing[0].used.add(need)
    assert not denied, "calls no role assignment of the app grants:\n" + "\n".join(map(str, sorted(set(denied))))
    unneeded = [(a.app, a.role, a.resource) for a in assignments if not a.used]
    assert not unneeded, "role assignments no call needed:\n" + "\n".join(map(str, unneeded))
    per_app = defaultdict(int)
    for c in calls:
        per_app[c["function"]] += 1
    print(f"\ncalls recorded: {len(calls)} {dict(per_app)}; role assignments, each needed: {len(assignments)}")
