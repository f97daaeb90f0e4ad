"""Fixtures: real SQLite under tmp_path, real HTTP servers on loopback, no network, no cloud."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.bootstrap import App, bootstrap
from core.config import load_settings
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "docs"
KEYS = {"acme": "acme-key", "beta": "beta-key"}
DEPLOY_KEY = "deploy-proof-key"


def pytest_sessionstart(session: Any) -> None:
    """Every test starts its own service on its own data folder, and the shared threads (the storage thread,
    the loops' pools) keep a connection to each folder they touched: a whole run holds a few thousand files,
    past a soft limit of 1,024. Raised to the hard limit, as a long-running test process should."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def require_tool(name: str, how: str) -> Any:
    """A tool a test needs is missing: skip saying how to get it, or fail where `make test` promised it
    (ALTO_REQUIRE_TOOLS=1), so CI can never pass by skipping a proof."""
    import os

    message = f"{name} is not installed ({how})"
    if os.environ.get("ALTO_REQUIRE_TOOLS") == "1":
        pytest.fail(message + "; `make test` installs it", pytrace=False)
    pytest.skip(message)  # the first API key the AWS deploy proof gives its stack, as a hash parameter


GCLOUD_SDK = Path(os.environ.get("CLOUDSDK_ROOT", "/usr/lib/google-cloud-sdk"))


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    """The Pub/Sub and Firestore emulators that ship with the Google Cloud CLI: their *_EMULATOR_HOST values."""
    import shutil

    from tests.pull_rigs import gcp_emulators

    if (
        not (GCLOUD_SDK / "platform" / "pubsub-emulator").exists()
        or not (GCLOUD_SDK / "platform" / "cloud-firestore-emulator").exists()
    ):
        require_tool(
            "the Google Cloud CLI's emulators",
            f"not under {GCLOUD_SDK}: install google-cloud-sdk with the "
            "pubsub and firestore emulator components, or set CLOUDSDK_ROOT",
        )
    if shutil.which("java") is None:
        require_tool("java", "the Pub/Sub and Firestore emulators need Java 11+ on PATH")
    with gcp_emulators(tmp_path_factory.mktemp("emulators"), GCLOUD_SDK) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def moto_url():
    """moto's server on loopback (one per test module): SQS, DynamoDB, S3 and the rest over real HTTP."""
    import logging

    from moto.server import ThreadedMotoServer

    from core.testing.servers import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # its dev key


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite (npm) on loopback, stopped by pid: its connection string (Blob and Table endpoints)."""
    import subprocess

    from core.testing.servers import free_port
    from tests.contracts import stop, wait_port

    azurite = ROOT / "node_modules" / ".bin" / "azurite"
    if not azurite.exists():
        require_tool("Azurite", "run `npm ci`")
    blob, table = free_port(), free_port()
    folder = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(azurite),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--location",
            str(folder),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(blob),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(free_port()),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(table),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for port in (blob, table):
        wait_port(port, proc, timeout=30)
    try:
        yield (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1;"
        )
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def aws_packaged(tmp_path_factory) -> dict[str, Any]:
    """`npx osls package` once per run: the CloudFormation template and the bundle, as `osls deploy` would
    upload them, with the first API key given the documented way (`--param apiKeyHashes=...`)."""
    return osls_package(tmp_path_factory.mktemp("sls"))


@pytest.fixture(scope="session")
def aws_packaged_safety(tmp_path_factory) -> dict[str, Any]:
    """The same, with the safety bundle (`--param bundle=safety`: the vault's cipher, the api's vault key)."""
    return osls_package(tmp_path_factory.mktemp("sls-safety"), "bundle=safety")


def osls_package(out: Path, *params: str) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    from core.config.api import hash_api_key

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lambda_cold_start import python312

    if not (ROOT / "node_modules" / ".bin" / "osls").exists():
        require_tool("osls", "run `npm ci`")
    py312 = python312()
    if py312 is None:
        require_tool("python3.12", "the Lambda runtime's Python, for the bundle's bytecode; set ALTO_LAMBDA_PYTHON")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "fake", "AWS_SECRET_ACCESS_KEY": "fake", "ALTO_LAMBDA_PYTHON": py312}
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        env.pop(k, None)
    keys = f"--param=apiKeyHashes=acme={hash_api_key(DEPLOY_KEY)}"
    command = ["npx", "--no-install", "osls", "package", "--stage", "ci", "--package", str(out), keys]
    r = subprocess.run(
        command + [f"--param={p}" for p in params], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    template = json.loads((out / "cloudformation-template-update-stack.json").read_text())
    return {"dir": out, "template": template, "zip": out / "altostratus.zip", "log": r.stdout, "python312": py312}


class ManualClock:
    """Time a test moves by hand (`advance`, or set `t`), from `start` (the wall clock's now by default): a
    timeout or a delay passes without a sleep. Pass it where the core takes a clock (`bootstrap(clock=...)`,
    `SqliteQueue(clock=...)`, a governance component's `clock=`)."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., App]:
    def make(config: dict[str, Any] | None = None, env: dict[str, str] | None = None, **ports: Any) -> App:
        cfg = tmp_path / "altostratus.yaml"
        cfg.write_text(yaml.safe_dump(config or {}))
        base_env = {
            "ALTO_DATA_DIR": str(tmp_path / "data"),
            "ALTO_API_KEYS": ",".join(f"{t}={k}" for t, k in KEYS.items()),
            "FAKE_ANTHROPIC_KEY": "test-key",
        }
        settings = load_settings(cfg, env={**base_env, **(env or {})})
        from core.secrets import EnvSecrets

        return bootstrap(settings, secrets=EnvSecrets({**base_env, **(env or {})}), **ports)

    return make


@pytest.fixture
def fake_anthropic() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic(FaultPlan())
    with ServerThread(fake) as srv:
        yield fake, srv.url


@pytest.fixture
def provider_fakes(monkeypatch) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Fake Anthropic (keeping request bodies), OpenAI and Bedrock servers on loopback, with the test credentials
    Bedrock's signer needs: (fakes, urls) by provider, for tests/test_routing.py's `config`."""
    from core.testing.fake_bedrock import FakeBedrock
    from core.testing.fake_providers import FakeOpenAI

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fakes: dict[str, Any] = {"anthropic": FakeAnthropic(), "openai": FakeOpenAI(), "bedrock": FakeBedrock()}
    fakes["anthropic"].keep_requests = True
    threads = {k: ServerThread(v).__enter__() for k, v in fakes.items()}
    yield fakes, {k: t.url for k, t in threads.items()}
    for t in threads.values():
        t.__exit__(None, None, None)


def anthropic_config(base_url: str, **governance: Any) -> dict[str, Any]:
    return {
        "providers": {
            "fake": {"type": "anthropic", "api_key": "env:FAKE_ANTHROPIC_KEY", "base_url": base_url, "timeout_s": 5}
        },
        "models": {
            "fake-sonnet": {
                "provider": "fake",
                "model_id": "claude-haiku-4-5",
                "input_per_mtok": 3.0,
                "output_per_mtok": 15.0,
            }
        },
        "routing": {"default": {"model": "fake-sonnet", "max_tokens": 256}},
        "governance": {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "retry_after_cap_s": 0.05, **governance},
    }


@pytest.fixture
def live(make_app: Callable[..., App]) -> Callable[..., tuple[App, str]]:
    """Start the local service (API + workers) on a loopback port; returns (app, base_url)."""
    from core.entrypoints.local import LocalService

    servers: list[ServerThread] = []

    def start(
        config: dict[str, Any] | None = None, workers: int = 1, env: dict[str, str] | None = None, **ports: Any
    ) -> tuple[App, str]:
        app = make_app(config, env, **ports)
        srv = ServerThread(LocalService(app, workers=workers).asgi).__enter__()
        servers.append(srv)
        return app, srv.url

    yield start
    for s in servers:
        s.__exit__(None, None, None)


def safety_env(vault_key: str) -> dict[str, str]:
    """A deploy proof's safety policies, by task so the other scenarios run as before: `private` redacts the job's
    PII before the provider (sealed by whoever submits, opened by whoever shows a view), `masked` masks PII in
    answers only (the fakes echo the question, so the answer holds a value the prompt sent in the clear)."""
    import json

    policies = {"private": {"pii": "redact"}, "masked": {"pii": {"action": "redact", "on": ["output"]}}}
    return {
        "ALTO_SAFETY__POLICIES": json.dumps(policies),
        "ALTO_SAFETY__TASKS": json.dumps({"private": "private", "masked": "masked"}),
        "ALTO_SAFETY__VAULT_KEY": vault_key,
    }


def a_redacted_job_and_its_callback(
    submit: Callable[..., str],
    until: Callable[[str], dict[str, Any]],
    delivered: Callable[[Callable[[], bool]], None],
    fake: Any,
) -> None:
    """A deploy proof's redaction scenario (under `safety_env`'s `private` task): the api seals the values at
    submit and opens them for its views, the worker opens them for the callback, and the provider sees only
    placeholders. `delivered(done)` drives the cloud's queue until `done()`."""
    from tests.test_callbacks import Receiver

    fake.keep_requests = True
    email = "maria.garcia@example.com"
    receiver = Receiver(204)
    try:
        done = until(submit(prompt=f"Write to {email}", task="private", callback_url=receiver.url))
        assert done["status"] == "succeeded", done
        assert email in done["result"]  # the fake echoes the question: restored by the api
        delivered(lambda: bool(receiver.got))
        assert email in receiver.got[0][1].decode()
    finally:
        receiver.close()
        fake.keep_requests = False
    sent = json.dumps(fake.requests)
    assert "[EMAIL_" in sent and email not in sent


MASKED_EMAIL = "lars.jensen@example.org"  # sent in the clear under `masked`, echoed, masked in the answer


def masked_in_the_answer(done: dict[str, Any]) -> None:
    assert done["status"] == "succeeded" and done["lane"] == "batch", done
    assert MASKED_EMAIL not in done["result"] and "[EMAIL_" in done["result"]  # masked for good
    assert [(x["rule"], x["stage"]) for x in done["safety"]["findings"]] == [("pii.email", "output")]


def erase_a_thread(
    call: Callable[[str, str], tuple[int, Any]],
    submit: Callable[..., str],
    until: Callable[[str], dict[str, Any]],
    keys: Callable[[str], list[str]],
    fake: Any,
    tenant: str,
) -> None:
    """The thread scenario each deploy proof runs on its cloud: a turn that sends an image inline and streams an
    answer long enough to spill, a second turn, the thread read, then erased with its objects. `call(method, path)`
    is (status, JSON) from the api; `keys(prefix)` lists the bucket."""
    import base64

    from tests.test_images import IMAGE

    picture = {"type": "image", "data": base64.b64encode(IMAGE).decode()}
    first = [{"role": "user", "content": [picture, {"type": "text", "text": "What is in this picture?"}]}]
    fake.plan.stream_tokens = 600  # ~4,000 characters: past the inline 1,000, so the worker spills it
    try:
        a = submit(messages=first, thread_id="t-erase", stream=True)
        assert until(a)["status"] == "succeeded"
    finally:
        fake.plan.stream_tokens = 0
    b = submit(messages=[{"role": "user", "content": "And its colours?"}], thread_id="t-erase")
    assert until(b)["status"] == "succeeded"
    status, thread = call("GET", "/v1/threads/t-erase")
    assert status == 200 and [m["role"] for m in thread["messages"]] == ["user", "assistant"] * 2, thread
    images = f"workflow-inputs/images/threads/{tenant}/t-erase/"
    assert len(keys(images)) == 1 and keys(f"streams/{a}/")
    status, erased = call("DELETE", "/v1/threads/t-erase")
    assert status == 200 and erased["erased_jobs"] == [a, b] and erased["erased_objects"] == 2, erased
    assert keys(images) == [] and keys(f"streams/{a}/") == []
    assert call("GET", "/v1/threads/t-erase")[0] == 404


def stage_source(dest: Path, cloud: str) -> None:
    """The function source as the cloud's deploy.sh stages it (`infra/stage.sh`), with its deployed config."""
    import subprocess
    import sys

    script = f'source infra/stage.sh && stage "{dest}" {cloud}'
    env = {
        "ROOT": str(ROOT),
        "CONFIG": str(ROOT / "infra" / cloud / "altostratus.yaml"),
        "PYTHON": sys.executable,
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def serve_until_healthy(
    alto: str, env: dict[str, str], cwd: Path, *, workers: int, timeout: float = 20.0
) -> tuple[Any, str, Any]:
    """`alto serve` in a process of its own on a free port, once `/healthz` answers 200: (process, base url, that
    health response). Fails the test if it exits or stays unhealthy past `timeout`."""
    import subprocess

    import httpx

    from core.testing.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [alto, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = httpx.get(f"{url}/healthz", timeout=0.5)
            if health.status_code == 200:
                return proc, url, health
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _out, err = proc.communicate(timeout=20)
            raise AssertionError(f"alto serve did not start: {err[-2000:]}")
        time.sleep(0.1)


def wait_terminal(client: Any, url: str, headers: dict[str, str], timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(url, headers=headers).json()
        if body["status"] in ("succeeded", "failed", "dead_lettered") or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


class Collector:
    """An HTTP receiver (OTLP/HTTP by default) on a loopback port: keeps each POST's body by path and its
    headers, and answers 503 to the first `fail` posts (a collector restarting), then 200 with `reply`."""

    def __init__(self, fail: int = 0, reply: tuple[bytes, bytes] = (b"application/x-protobuf", b"")) -> None:
        self.fail = fail
        self.reply = reply  # (content type, body)
        self.bodies: dict[str, list[bytes]] = {}
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.bodies.setdefault(scope["path"], []).append(body)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        status = 503 if len(self.headers) <= self.fail else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", self.reply[0])]})
        await send({"type": "http.response.body", "body": self.reply[1] if status == 200 else b""})


@pytest.fixture(scope="session")
def otel_memory() -> Any:
    """One in-memory OpenTelemetry pipeline for the test process (the global providers can be set once):
    (span exporter, metric reader). Tests clear the exporter and read deltas."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return exporter, reader
