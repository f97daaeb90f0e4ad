"""The GCP deployment proven where no emulator judges IAM or indexes: every function of infra/gcp runs in its
own process from the staged function source, with the environment Terraform gives it, behind the push
subscriptions Terraform declares (on the Pub/Sub emulator, Firestore's emulator, a Cloud Storage fake and a
Secret Manager fake), and every cloud call each one makes is recorded at the SDK's transport.

The scenarios are the AWS proof's: submit, idempotency and listings, a retry redelivered by Pub/Sub, big and
uploaded workflow documents, a spilled stream replayed over SSE, RAG with and without a snapshot, the
batch tick, a lost message re-sent, a dead-lettered job's callback, and the container worker (`alto worker
--cloud gcp`, as GKE runs it under the worker's identity) on infra/gcp/pull.tf's pull subscription. Then three
checks over the recordings: every call granted by the identity's own bindings in infra/gcp/functions.tf and
pull.tf (predefined roles expanded, IAM conditions evaluated: tests/gcp_iam.py), every binding needed by some
call, and every Firestore query served by a composite index infra/gcp/main.tf declares.

Two settings are not Terraform's: the subscriptions' retry backoff is 0-1 s here instead of 10-600 s, so that
redeliveries take seconds, and the pull subscription's ack deadline is the emulator's least (10 s), so that a job
of 12 s needs its lease extended.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config.api import hash_api_key
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread, free_port
from tests import gcp_iam
from tests.cloud_calls import read
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
from tests.fakes.gcs import FakeGcs
from tests.fakes.secret_manager import FakeSecretManager
from tests.hcl import Terraform

KEY = "gcp-deploy-proof-key"
TENANT = "acme"
FUNCTIONS = ("api", "worker", "dead-letter", "reconcile")


class Host:
    def __init__(self, name: str, entry: str, env: dict[str, str], source: Path, record: Path, log: Path) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gcp_host", entry, str(self.port), str(record), name],
            cwd=source,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab"),
        )
        assert self.proc.stdout is not None, log.read_text()[-3000:]
        assert self.proc.stdout.readline().strip() == b"ready", log.read_text()[-3000:]
        self.log = log

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Blackhole:
    """A push endpoint that acknowledges everything and does nothing: where a message goes to be lost."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class GcpDeployment:
    def __init__(
        self,
        emulators: dict[str, str],
        workdir: Path,
        gcs_url: str,
        secrets: FakeSecretManager,
        extra_env: dict[str, str],
    ) -> None:
        from google.cloud import pubsub_v1

        self.workdir = workdir
        self.project = f"alto-proof-{uuid.uuid4().hex[:6]}"
        self.tf = Terraform(
            ROOT / "infra" / "gcp",
            {
                "project": self.project,
                "api_key_hashes": f"{TENANT}={hash_api_key(KEY)}",
                "pull_workers": True,
                "safety_vault": True,
            },
        )
        self.source = self._stage(workdir / "source")
        self.record = workdir / "calls.jsonl"
        env = {
            **self.tf.local("env"),
            **emulators,
            "STORAGE_EMULATOR_HOST": gcs_url,
            "SECRET_MANAGER_EMULATOR_HOST": secrets.address,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{self.source}:{ROOT}",
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra_env,
        }
        self.env = env
        secrets.add_version(
            self.project,
            self.tf.value(self.tf.resources("google_secret_manager_secret")["anthropic"]["secret_id"]),
            b"deployed-anthropic-key",
        )
        from core.safety.vault import new_key

        self.vault_secret = self.tf.value(self.tf.resources("google_secret_manager_secret")["vault"]["secret_id"])
        secrets.add_version(self.project, self.vault_secret, new_key().encode())  # as deploy.sh stores it
        functions = self.tf.local("functions")
        self.hosts: dict[str, Host] = {}
        try:
            for name in FUNCTIONS:
                tmp = workdir / name / "tmp"
                tmp.mkdir(parents=True)
                self.hosts[name] = Host(
                    name,
                    functions[name]["entry"],
                    {**env, "TMPDIR": str(tmp)},
                    self.source,
                    self.record,
                    workdir / f"{name}.log",
                )
            self.publisher, self.subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
            self._messaging()
        except BaseException:
            self.stop()
            raise

    def _stage(self, dest: Path) -> Path:
        """The function source exactly as deploy.sh zips it (infra/stage.sh, then main.py and the requirements)."""
        stage_source(dest, "gcp")
        (dest / "main.py").write_text(
            "from adapters.gcp.main import api, dead_letter, reconcile, worker  # noqa: F401\n"
        )
        return dest

    def _messaging(self) -> None:
        """Topics and push subscriptions as infra/gcp/main.tf declares them, pushing to the function hosts."""
        topics = self.tf.resources("google_pubsub_topic")
        self.topics = {k: f"projects/{self.project}/topics/{self.tf.value(t['name'])}" for k, t in topics.items()}
        for path in self.topics.values():
            self.publisher.create_topic(name=path)
        subs = self.tf.resources("google_pubsub_subscription")
        target = {"jobs": "worker", "dead": "dead-letter"}
        self.subscriptions: dict[str, str] = {}
        for key, sub in subs.items():
            if key == "pull":  # the container workers' own: made when they first run (their test, below)
                continue
            request: dict[str, Any] = {
                "name": f"projects/{self.project}/subscriptions/{self.tf.value(sub['name'])}",
                "topic": self.topics[key],
                "ack_deadline_seconds": self.tf.value(sub["ack_deadline_seconds"]),
                "push_config": {"push_endpoint": self.hosts[target[key]].url},
                "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
            }
            if "dead_letter_policy" in sub:
                policy = sub["dead_letter_policy"][0]
                request["dead_letter_policy"] = {
                    "dead_letter_topic": self.topics["dead"],
                    "max_delivery_attempts": self.tf.value(policy["max_delivery_attempts"]),
                }
            self.subscriptions[key] = self.subscriber.create_subscription(request=request).name

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return httpx.request(
            method,
            self.hosts["api"].url.rstrip("/") + path,
            json=body,
            params=params,
            timeout=60,
            headers={"authorization": f"Bearer {KEY}", **(headers or {})},
        )

    def calls(self) -> list[dict[str, Any]]:
        return read(str(self.record))

    def logs(self) -> str:
        return "\n".join(f"--- {h.name}\n{h.log.read_text()[-2500:]}" for h in self.hosts.values())

    def stop(self) -> None:
        for h in self.hosts.values():
            h.stop()


@pytest.fixture(scope="module")
def fake():
    f = FakeAnthropic(FaultPlan(), api_key="deployed-anthropic-key")
    with ServerThread(f) as srv:
        yield f, srv.url


@pytest.fixture(scope="module")
def gcs():
    store = FakeGcs()
    with ServerThread(store) as srv:
        yield store, srv.url


@pytest.fixture(scope="module")
def gcp(emulators, gcs, fake, tmp_path_factory):
    _, url = fake
    with FakeSecretManager() as secrets, pytest.MonkeyPatch.context() as mp:
        for k, v in emulators.items():  # the test's own clients (the operator's hands) reach the emulators too
            mp.setenv(k, v)
        mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        d = GcpDeployment(
            emulators,
            tmp_path_factory.mktemp("gcp-deploy"),
            gcs[1],
            secrets,
            {
                # the operator's choices for this run, as for the AWS proof: the model's address (the fake), retries
                # back to Pub/Sub at once, deliveries enough to reach the dead-letter policy, a small inline stream,
                # a quick batch window, the audit log on, callbacks allowed to loopback
                "ALTO_PROVIDERS__ANTHROPIC__BASE_URL": url,
                "ALTO_GOVERNANCE__IN_PROCESS_WAIT_S": "0",
                "ALTO_GOVERNANCE__MAX_ATTEMPTS": "10",
                "ALTO_GOVERNANCE__BACKOFF_BASE_S": "0.2",
                "ALTO_GOVERNANCE__BACKOFF_MAX_S": "0.5",
                "ALTO_STREAM__INLINE_CHARS": "1000",
                "ALTO_BATCH__FLUSH_S": "0.01",
                "ALTO_OBSERVABILITY__AUDIT__ENABLED": "true",
                "ALTO_CALLBACKS__ALLOW": '["127.0.0.1"]',
                **safety_env("gcp-sm:alto-vault-key"),  # infra/gcp/main.tf's secret, with the default name
            },
        )
        d.gcs_host = gcs[1].removeprefix("http://")
        d.secrets = secrets
        yield d
        d.stop()


def submit(gcp: GcpDeployment, **body: Any) -> str:
    r = gcp.http("POST", "/v1/jobs", body)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def view(gcp: GcpDeployment, job_id: str) -> dict[str, Any]:
    r = gcp.http("GET", f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def until(
    gcp: GcpDeployment,
    job_id: str,
    statuses: tuple[str, ...] = ("succeeded", "failed", "dead_lettered"),
    timeout_s: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        v = view(gcp, job_id)
        if v["status"] in statuses:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stayed {v['status']}\n{gcp.logs()}")
        time.sleep(0.2)


# ---------------------------------------------------------------- the functions' scenarios


def test_the_first_key_is_a_hash_variable_and_nothing_answers_without_it(gcp):
    assert gcp.env["ALTO_API_KEY_HASHES"] == f"{TENANT}={hash_api_key(KEY)}"
    r = httpx.get(gcp.hosts["api"].url + "v1/jobs")
    assert r.status_code == 401


def test_submit_then_the_pushed_worker_answers(gcp):
    done = until(gcp, submit(gcp, prompt="What is a visibility timeout?"))
    assert done["status"] == "succeeded", done
    assert done["result"], done


def test_an_idempotency_key_returns_the_first_job_and_listings_find_it(gcp):
    first = gcp.http("POST", "/v1/jobs", {"prompt": "exactly once"}, headers={"idempotency-key": "order-17"}).json()
    again = gcp.http("POST", "/v1/jobs", {"prompt": "exactly once"}, headers={"idempotency-key": "order-17"}).json()
    assert again["job_id"] == first["job_id"]
    until(gcp, first["job_id"])
    assert first["job_id"] in [j["job_id"] for j in gcp.http("GET", "/v1/jobs").json()["jobs"]]
    listed = gcp.http("GET", "/v1/jobs", params={"status": "succeeded"}).json()["jobs"]
    assert first["job_id"] in [j["job_id"] for j in listed]
    assert {j["status"] for j in listed} == {"succeeded"}


def test_a_retry_is_redelivered_by_pubsub_and_answered(gcp, fake):
    f, _ = fake
    f.plan.script = ["529"]
    done = until(gcp, submit(gcp, prompt="retry me through the subscription"))
    assert done["status"] == "succeeded", done
    assert len(done["attempts"]) == 2, done


def test_a_big_workflow_input_is_stashed_by_the_api_and_read_by_the_worker(gcp, gcs):
    from tests.test_workflows import document

    r = gcp.http("POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 12000)}})
    assert r.status_code == 202, r.text
    done = until(gcp, r.json()["job_id"], timeout_s=120)
    assert done["status"] == "succeeded", done
    assert any(n.startswith("workflow-inputs/") for _, n in gcs[0].objects)


def test_a_document_uploaded_by_the_operator_is_a_workflow_input_and_a_missing_one_is_refused(gcp, gcs):
    store, _ = gcs
    store.objects[(gcp.env["ALTO_BUCKET"], "workflow-inputs/handbook.md")] = (SAMPLES / "retries.md").read_bytes()
    r = gcp.http(
        "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/handbook.md"}}
    )
    assert r.status_code == 202, r.text
    assert until(gcp, r.json()["job_id"])["status"] == "succeeded"
    r = gcp.http("POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/none.md"}})
    assert r.status_code == 422
    assert "no blob" in r.json()["error"]["message"]


def test_a_spilled_stream_is_replayed_over_sse_by_the_api(gcp, fake, gcs):
    f, _ = fake
    f.plan.stream_tokens = 600
    try:
        job_id = submit(gcp, prompt="stream a long answer", stream=True)
        done = until(gcp, job_id)
    finally:
        f.plan.stream_tokens = 0
    assert done["status"] == "succeeded"
    assert "tok599" in done["result"]
    assert any(n.startswith("streams/") for _, n in gcs[0].objects)
    body = gcp.http("GET", f"/v1/jobs/{job_id}/events").text
    assert "event: done" in body
    assert "tok599" in body


def test_a_thread_is_erased_with_its_image_and_its_spilled_stream(gcp, fake, gcs):
    def call(method: str, path: str) -> tuple[int, Any]:
        r = gcp.http(method, path)
        return r.status_code, r.json()

    erase_a_thread(
        call,
        lambda **body: submit(gcp, **body),
        lambda job_id: until(gcp, job_id),
        lambda prefix: sorted(n for _, n in gcs[0].objects if n.startswith(prefix)),
        fake[0],
        TENANT,
    )


def test_rag_without_a_snapshot_fails_the_job_saying_why(gcp):
    done = until(gcp, submit(gcp, prompt="What does the manual say?", collection="manuals"))
    assert done["status"] == "failed"
    assert "collection 'manuals' has no documents" in done["error"]["message"]


def test_rag_with_a_published_snapshot_answers_with_citations(gcp, gcs, make_app, monkeypatch):
    from adapters.gcp.gcs import GcsBlobStore

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp.env["STORAGE_EMULATOR_HOST"])

    def storage() -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gs

        return gs.Client(project=gcp.project, credentials=AnonymousCredentials())

    operator = make_app(blobs=GcsBlobStore(storage, gcp.env["ALTO_BUCKET"]))  # `alto ingest --publish`
    operator.library.ingest(SAMPLES, tenant=TENANT, collection="docs")
    operator.library.publish(TENANT, "docs")
    done = until(gcp, submit(gcp, prompt="Which errors are never retried?", collection="docs"))
    assert done["status"] == "succeeded", done
    assert done["citations"], done


def test_the_scheduled_reconcile_sends_a_due_batch_and_applies_it(gcp, fake):
    _f, _ = fake
    job_id = submit(gcp, prompt="a report nobody waits for", lane="batch")
    deadline = time.monotonic() + 30
    while view(gcp, job_id)["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.05)
    r = httpx.post(gcp.hosts["reconcile"].url, json={}, timeout=60)  # what Cloud Scheduler sends
    assert r.status_code == 200, r.text
    counts = r.json()
    assert counts["batch_submitted"] == 1, counts
    assert counts["batch_applied"] == 1, counts
    assert until(gcp, job_id)["lane"] == "batch"


def test_the_reconcile_sweep_resends_a_job_whose_message_was_lost(gcp):
    with ServerThread(Blackhole()) as hole:
        gcp.subscriber.modify_push_config(
            subscription=gcp.subscriptions["jobs"], push_config={"push_endpoint": hole.url + "/"}
        )
        try:
            job_id = submit(gcp, prompt="my message will be lost")
            time.sleep(1.0)
        finally:
            gcp.subscriber.modify_push_config(
                subscription=gcp.subscriptions["jobs"], push_config={"push_endpoint": gcp.hosts["worker"].url}
            )
    assert view(gcp, job_id)["status"] == "queued"
    r = httpx.post(gcp.hosts["reconcile"].url, json={"older_than_s": 0.01}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["requeued"] >= 1, r.text
    assert until(gcp, job_id)["status"] == "succeeded"


def test_a_dead_lettered_job_is_marked_and_its_callback_delivered(gcp, fake):
    from tests.test_callbacks import Receiver

    f, _ = fake
    attempts = int(gcp.env["ALTO_QUEUE__MAX_RECEIVES"])
    f.plan.script = ["500"] * attempts  # every delivery fails, until the subscription's policy gives up
    receiver = Receiver(204)
    try:
        job_id = submit(gcp, prompt="this one always fails", callback_url=receiver.url)
        done = until(gcp, job_id, ("dead_lettered",), timeout_s=90)
        assert len(done["attempts"]) == attempts
        assert "dead-lettered by the queue" in done["error"]["message"]
        deadline = time.monotonic() + 30
        while not receiver.got and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receiver.got
        assert json.loads(receiver.got[0][1])["status"] == "dead_lettered"
    finally:
        receiver.close()
        f.plan.script = []


def test_a_redacted_job_is_sealed_by_the_api_and_its_callback_opened_by_the_worker(gcp, fake):
    """Under a policy that redacts (-var safety_vault=true): the api and the worker read the vault key under their
    own bindings."""

    def delivered(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)

    a_redacted_job_and_its_callback(
        lambda **body: submit(gcp, **body), lambda job_id: until(gcp, job_id), delivered, fake[0]
    )


def test_a_batched_answer_is_masked_by_the_reconciler_with_the_vault_key(gcp):
    job_id = submit(gcp, prompt=f"Repeat {MASKED_EMAIL}", task="masked", lane="batch")
    deadline = time.monotonic() + 60
    while view(gcp, job_id)["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        r = httpx.post(gcp.hosts["reconcile"].url, json={}, timeout=60)  # what Cloud Scheduler sends
        assert r.status_code == 200, r.text
        time.sleep(0.2)
    masked_in_the_answer(view(gcp, job_id))


def test_a_container_worker_as_the_worker_identity_pulls_extends_and_drains(gcp, fake):
    """The move of docs/clouds/containers.md: the push subscription points elsewhere and `alto worker --cloud gcp`
    answers from the pull subscription infra/gcp/pull.tf declares, as the worker function's service account (GKE
    Workload Identity, pull.tf's gke_worker binding), recorded with the functions' calls for the grant check."""
    import signal

    f, _ = fake
    sub = gcp.tf.resources("google_pubsub_subscription")["pull"]
    name = f"projects/{gcp.project}/subscriptions/{gcp.tf.value(sub['name'])}"
    gcp.subscriber.create_subscription(
        request={
            "name": name,
            "topic": gcp.topics["jobs"],
            "ack_deadline_seconds": 10,
            "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
            "dead_letter_policy": {
                "dead_letter_topic": gcp.topics["dead"],
                "max_delivery_attempts": gcp.tf.value(sub["dead_letter_policy"][0]["max_delivery_attempts"]),
            },
        }
    )
    tmp = gcp.workdir / "container" / "tmp"
    tmp.mkdir(parents=True)
    env = {
        **gcp.env,
        "TMPDIR": str(tmp),
        "ALTO_SUBSCRIPTION": gcp.tf.value(sub["name"]),
        "ALTO_QUEUE__VISIBILITY_TIMEOUT_S": "10",  # each lease extension: the subscription's ack deadline here
        "ALTO_PULL__JOB_DEADLINE_S": "60",
    }
    port, log = free_port(), gcp.workdir / "container.log"
    with ServerThread(Blackhole()) as hole:
        gcp.subscriber.modify_push_config(
            subscription=gcp.subscriptions["jobs"], push_config={"push_endpoint": hole.url + "/"}
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.gcp_host", "alto-worker", str(port), str(gcp.record), "container"],
            cwd=gcp.source,
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
        )
        f.plan.latency_s = 12.0  # longer than the ack deadline: the lease manager extends it
        try:
            ids = [submit(gcp, prompt=f"pulled by a GKE worker {i}") for i in range(2)]
            for job_id in ids:
                done = until(gcp, job_id, timeout_s=90)
                assert done["status"] == "succeeded", (done, log.read_text()[-3000:])
                assert len(done["attempts"]) == 1, done  # held past its 10 s deadline, never redelivered
        finally:
            f.plan.latency_s = 0.0
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
            gcp.subscriber.modify_push_config(
                subscription=gcp.subscriptions["jobs"], push_config={"push_endpoint": gcp.hosts["worker"].url}
            )
    assert code == 0, log.read_text()[-3000:]
    methods = {c["method"].rsplit("/", 1)[-1] for c in gcp.calls() if c["function"] == "container"}
    assert {"StreamingPull", "ModifyAckDeadline", "Acknowledge", "Commit"} <= methods, methods


# ---------------------------------------------------------------- grants and indexes, from the recordings


def _identity(gcp: GcpDeployment) -> dict[str, str]:
    """Which service account each recorded process runs as: a function as its own, the GKE worker as the one
    pull.tf's Workload Identity binding lets it act as."""
    binding = gcp.tf.resources("google_service_account_iam_member")["gke_worker"]
    assert binding["service_account_id"] == '${google_service_account.fn["worker"].name}'
    assert gcp.tf.value(binding["role"]) == "roles/iam.workloadIdentityUser"
    return {**{fn: fn for fn in FUNCTIONS}, "container": "worker"}


def _bindings(gcp: GcpDeployment) -> list[gcp_iam.Binding]:
    """Every binding functions.tf makes for a function's identity, from the table the resources iterate."""
    tf, grants = gcp.tf, gcp.tf.local("grants")
    firestore = tf.resources("google_project_iam_member")["firestore"]
    database_only = tf.value(firestore["condition"][0]["expression"])
    out = []
    for fn, g in grants.items():
        if g["firestore"]:
            out.append(gcp_iam.Binding(fn, tf.value(firestore["role"]), f"projects/{gcp.project}", database_only))
        if g["publish"]:
            out.append(gcp_iam.Binding(fn, "roles/pubsub.publisher", gcp.topics["jobs"]))
        secrets = [("anthropic", g["secret"]), ("vault", g["vault"] and tf.variables["safety_vault"])]
        for key, granted in secrets:
            secret = tf.value(tf.resources("google_secret_manager_secret")[key]["secret_id"])
            if granted:
                out.append(
                    gcp_iam.Binding(
                        fn, "roles/secretmanager.secretAccessor", f"projects/{gcp.project}/secrets/{secret}"
                    )
                )
        for role, prefixes in g["objects"].items():
            base = f"projects/_/buckets/{gcp.env['ALTO_BUCKET']}/objects/"
            expression = " || ".join(
                f'resource.name.startsWith("{base}{p}") || {gcp_iam.LIST_PREFIX}.startsWith("{p}")' for p in prefixes
            )
            out.append(gcp_iam.Binding(fn, role, f"projects/_/buckets/{gcp.env['ALTO_BUCKET']}", expression))
    pull = tf.resources("google_pubsub_subscription_iam_member")["pull_worker"]
    assert pull["member"] == '"serviceAccount:${google_service_account.fn["worker"].email}"'
    subscription = tf.value(tf.resources("google_pubsub_subscription")["pull"]["name"])
    out.append(
        gcp_iam.Binding("worker", tf.value(pull["role"]), f"projects/{gcp.project}/subscriptions/{subscription}")
    )
    return out


def test_every_call_was_granted_and_every_binding_was_needed(gcp):
    calls, identity = gcp.calls(), _identity(gcp)
    assert {c["function"] for c in calls} == set(identity), "a process made no cloud call: is recording on?"
    bindings = _bindings(gcp)
    denied, written = [], set()
    for call in calls:
        for need in gcp_iam.needs(call, storage_host=gcp.gcs_host, written=written):
            allowing = [b for b in bindings if b.function == identity[call["function"]] and b.grants(need)]
            if not allowing:
                denied.append((call["function"], need.permission, need.resource))
            elif len(allowing) == 1:
                allowing[0].used.add(need)
    assert not denied, "calls no binding of the function grants:\n" + "\n".join(map(str, sorted(set(denied))))
    unneeded = [(b.function, b.role, b.condition) for b in bindings if not b.used]
    assert not unneeded, "bindings no call needed (remove them, or add the scenario that uses them):\n" + "\n".join(
        map(str, unneeded)
    )
    per_function = defaultdict(int)
    for c in calls:
        per_function[c["function"]] += 1
    print(f"\ncloud calls recorded: {len(calls)} {dict(per_function)}; bindings, each needed: {len(bindings)}")


def test_every_firestore_query_has_its_composite_index(gcp):
    tf = gcp.tf
    index = tf.resources("google_firestore_index")["jobs"]  # one index per entry of local.job_indexes
    assert index["for_each"] == "${local.job_indexes}"
    declared = [
        (tf.value(index["collection"]), [(f, d) for f, d in fields]) for fields in tf.local("job_indexes").values()
    ]
    shapes = {
        json.dumps(shape)
        for c in gcp.calls()
        if c["method"].endswith("/RunQuery")
        if (shape := gcp_iam.query_shape(c["request"])) is not None
    }
    assert shapes, "no query was recorded"
    needed = {n for s in shapes if (n := gcp_iam.needed_index(json.loads(s))) is not None}
    missing = [n for n in needed if not any(gcp_iam.serves(fields, coll, n) for coll, fields in declared)]
    assert not missing, f"queries with no composite index in infra/gcp/main.tf: {missing}"
    unused = [(coll, fields) for coll, fields in declared if not any(gcp_iam.serves(fields, coll, n) for n in needed)]
    assert not unused, f"indexes no query used: {unused}"
    print(f"\nquery shapes: {len(shapes)}; composite indexes needed and declared: {len(needed)}")
