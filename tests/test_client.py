"""The Python client (`core.client`) against the local service over real HTTP: typed submit (with idempotency
keys), long-poll waits, event streams resumed with Last-Event-ID across a connection a proxy cuts, cancel and
replay, the API's errors as exceptions carrying its code and field, callback verification, and the async client."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from typing import Any

import pytest

from core.client import ApiError, AsyncClient, Client, Unreachable, WebhookVerificationError, verify_webhook
from core.models import JobRequest
from core.views import JobView, SubmitResponse
from tests.conftest import KEYS, anthropic_config

SECRET = "whsec_" + base64.b64encode(b"a 24-byte webhook secret").decode()


class Counting(Client):
    """The client, counting the HTTP requests it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[str] = []

    def _open(self, method: str, path: str, *rest: Any) -> Any:
        self.requests.append(f"{method} {path}")
        return super()._open(method, path, *rest)


class CuttingProxy:
    """A loopback TCP proxy that forwards each request to `upstream` and cuts the first event stream's response
    after `cut_after` bytes, as a load balancer's idle timeout or a dropped mobile connection would."""

    def __init__(self, upstream: str, cut_after: int) -> None:
        self.upstream = int(upstream.rsplit(":", 1)[1])
        self.cut_after, self.cut = cut_after, False
        self.heads: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        text, _, body = head.partition(b"\r\n\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in text.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        while len(body) < length:  # the whole request, however the client's writes arrived
            body += conn.recv(65536)
        head = text + b"\r\n\r\n" + body
        self.heads.append(text.decode())
        cutting = b"/events" in head.split(b"\r\n")[0] and not self.cut
        self.cut = self.cut or cutting
        with socket.create_connection(("127.0.0.1", self.upstream)) as up:
            up.sendall(head)
            sent = 0
            while chunk := up.recv(4096):
                if cutting and sent + len(chunk) >= self.cut_after:
                    conn.sendall(chunk[: self.cut_after - sent])
                    break
                conn.sendall(chunk)
                sent += len(chunk)
        conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def service(live, fake_anthropic):
    fake, url = fake_anthropic
    cfg = anthropic_config(url)
    cfg["callbacks"] = {"allow": ["127.0.0.1"], "backoff_base_s": 0.05, "backoff_max_s": 0.2, "max_tries": 3}
    cfg["tenants"] = {"acme": {"webhook_secret": "env:HOOK_SECRET"}}
    app, base = live(cfg, env={"HOOK_SECRET": SECRET})
    return fake, app, base


def test_submit_and_wait_are_typed_and_wait_long_polls(service):
    fake, _, base = service
    fake.plan.latency_s = 1.5
    client = Counting(base, KEYS["acme"])
    submitted = client.submit(prompt="What is a visibility timeout?")
    assert isinstance(submitted, SubmitResponse)
    view = client.wait(submitted.job_id, timeout_s=30)
    assert isinstance(view, JobView)
    assert view.status.value == "succeeded" and view.result
    gets = [r for r in client.requests if r.startswith("GET")]
    assert len(gets) <= 2, gets  # one long poll covers the 1.5 s call: no polling loop


def test_a_conversation_and_a_request_model_go_as_they_are(service):
    _, _, base = service
    client = Client(base, KEYS["acme"])
    messages = [
        {"role": "user", "content": "My kettle arrived damaged."},
        {"role": "assistant", "content": "Refund or replacement?"},
        {"role": "user", "content": "A replacement."},
    ]
    view = client.wait(client.submit(messages=messages, system="Be brief.").job_id, timeout_s=30)
    assert view.result.startswith("Fake answer about: A replacement.")
    assert view.prompt.history_turns == 2
    again = client.wait(client.submit(JobRequest(prompt="Which errors are never retried?")).job_id, timeout_s=30)
    assert again.status.value == "succeeded"


def test_an_idempotency_key_returns_the_same_job_and_a_reuse_is_an_error_naming_the_header(service):
    _, _, base = service
    client = Client(base, KEYS["acme"])
    first = client.submit(prompt="exactly once", idempotency_key="order-17")
    assert client.submit(prompt="exactly once", idempotency_key="order-17").job_id == first.job_id
    with pytest.raises(ApiError) as e:
        client.submit(prompt="something else", idempotency_key="order-17")
    assert (e.value.status, e.value.code, e.value.field) == (422, "idempotency_key_reused", "Idempotency-Key")


def test_bad_input_is_refused_before_sending_and_the_apis_errors_carry_code_and_field(service):
    _, _, base = service
    client = Client(base, KEYS["acme"])
    with pytest.raises(ValueError, match="ends with the user turn"):  # the API's own model, checked here first
        client.submit(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    with pytest.raises(ApiError) as e:
        client.call("POST", "/v1/jobs", {"prompt": "x", "collection": "nothing-here"})
    assert (e.value.status, e.value.field) == (422, "collection")
    with pytest.raises(ApiError) as e:
        client.get("job_does_not_exist")
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as e:
        Client(base, "wrong-key").get("job_x")
    assert e.value.status == 401
    with pytest.raises(Unreachable, match="cannot reach"):
        Client("http://127.0.0.1:9", KEYS["acme"], retries=0).get("job_x")


def test_a_stream_resumes_after_a_cut_connection_without_repeating_or_losing_text(service):
    fake, _, base = service
    fake.plan.stream_tokens, fake.plan.stream_tps = 200, 200.0  # about a second of deltas, within max_tokens
    proxy = CuttingProxy(base, cut_after=700)
    try:
        client = Client(proxy.url, KEYS["acme"])
        job_id = client.submit(prompt="stream a long answer", stream=True).job_id
        events = list(client.stream(job_id, timeout_s=60))
    finally:
        proxy.close()
    assert proxy.cut
    resumed = [h for h in proxy.heads if "/events" in h.split("\r\n")[0]][1:]
    assert resumed and any("last-event-id: 1:" in h.lower() for h in resumed), resumed  # picked up where it broke
    deltas = [e for e in events if e.event == "delta"]
    assert [e.seq for e in deltas] == sorted({e.seq for e in deltas})  # none repeated, in order
    done = events[-1]
    assert done.event == "done" and done.view.status.value == "succeeded"
    assert "".join(e.text for e in deltas) == done.view.result


def test_cancel_and_replay(service):
    fake, _, base = service
    fake.plan.latency_s = 3.0
    client = Client(base, KEYS["acme"])
    job_id = client.submit(prompt="cancel me").job_id
    assert client.cancel(job_id).status.value == "cancelled"
    with pytest.raises(ApiError) as e:
        client.cancel(job_id)
    assert e.value.status == 409  # already finished
    fake.plan.latency_s, fake.plan.script = 0.0, ["400"]  # refused once: a permanent failure
    failed = client.wait(client.submit(prompt="fail me once").job_id, timeout_s=30)
    assert failed.status.value == "failed"
    assert client.replay(failed.job_id).status.value == "queued"
    assert client.wait(failed.job_id, timeout_s=30).status.value == "succeeded"


def test_a_callback_verifies_with_the_tenants_secret_and_nothing_else_does(service):
    from tests.test_callbacks import Receiver

    _, _, base = service
    hook = Receiver(204)
    try:
        client = Client(base, KEYS["acme"])
        job_id = client.submit(prompt="call me back", callback_url=hook.url).job_id
        client.wait(job_id, timeout_s=30)
        deadline = time.monotonic() + 10
        while not hook.got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hook.close()
    headers, body = hook.got[0]
    view = verify_webhook(body, headers, SECRET)
    assert view.job_id == job_id and view.status.value == "succeeded"
    with pytest.raises(WebhookVerificationError, match="altered"):
        verify_webhook(body.replace(b"succeeded", b"failed"), headers, SECRET)
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify_webhook(body, headers, SECRET, now=time.time() + 3600)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(body, {}, SECRET)


def test_the_async_client_submits_waits_and_streams(service):
    fake, _, base = service
    fake.plan.stream_tokens = 50

    async def go() -> tuple[JobView, list[str]]:
        client = AsyncClient(base, KEYS["acme"])
        job_id = (await client.submit(prompt="stream for asyncio", stream=True)).job_id
        kinds = [e.event async for e in client.stream(job_id, timeout_s=30)]
        return await client.wait(job_id, timeout_s=30), kinds

    view, kinds = asyncio.run(go())
    assert view.status.value == "succeeded"
    assert kinds[-1] == "done" and "delta" in kinds


def test_a_thread_through_the_client(service):
    _, _, base = service
    client = Client(base, KEYS["acme"])
    first = client.wait(client.submit(prompt="My kettle is broken.", thread_id="c-1").job_id, timeout_s=30)
    second = client.wait(client.submit(prompt="It is the blue one.", thread_id="c-1").job_id, timeout_s=30)
    assert second.prompt.history_turns == 2
    thread = client.thread("c-1")
    assert [m.content for m in thread.messages] == [
        "My kettle is broken.",
        first.result,
        "It is the blue one.",
        second.result,
    ]
    assert client.erase_thread("c-1").erased_jobs == [first.job_id, second.job_id]
    with pytest.raises(ApiError) as e:
        client.thread("c-1")
    assert e.value.status == 404


def test_the_client_needs_a_url_and_a_key(monkeypatch):
    monkeypatch.delenv("ALTO_URL", raising=False)
    monkeypatch.delenv("ALTO_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ALTO_URL"):
        Client()
    with pytest.raises(ValueError, match="ALTO_API_KEY"):
        Client("http://127.0.0.1:1")


def test_the_documented_example_runs_as_written(service, tmp_path):
    """The README's Python example, run as a user would: a script with ALTO_URL and ALTO_API_KEY set."""
    import os
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    _, _, base = service
    page = (ROOT / "README.md").read_text()
    [code] = re.findall(r"```python[^\n]*\n(.*?)^```", page, re.S | re.M)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "ALTO_URL": base, "ALTO_API_KEY": KEYS["acme"], "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("succeeded Fake answer about: A replacement, please."), r.stdout
    assert "\nlow\n" in r.stdout  # the extraction's priority, read from the checked object
    assert "\ntool_use\nFake answer about: 18 C and sunny\n" in r.stdout  # the call, then the answer from its result
    assert "Fake answer about: Which errors are never retried?" in r.stdout
