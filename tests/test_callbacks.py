"""Completion callbacks: SSRF refused at submit and at send, no redirects, Standard Webhooks signatures
(checked with the reference library), delivery on every terminal status as its own queued work with
backoff and bounded tries, and the outcome in the job view. Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, anthropic_config

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}
SECRET = "whsec_" + base64.b64encode(b"a 24-byte webhook secret").decode()
FAST = {"allow": ["127.0.0.1"], "backoff_base_s": 0.05, "backoff_max_s": 0.2, "max_tries": 3}


class Receiver:
    """A webhook endpoint answering each POST with the next status of `statuses` (the last one repeats)."""

    def __init__(self, *statuses: int, location: str | None = None) -> None:
        self.statuses = list(statuses) or [204]
        self.got: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                self.send_response(status)
                if location:
                    self.send_header("location", location)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*statuses: int, location: str | None = None) -> Receiver:
        made.append(Receiver(*statuses, location=location))
        return made[-1]

    yield make
    for r in made:
        r.close()


def settle(app, job_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = app.store.get(job_id)
        if job.status.terminal and job.callback is not None and job.callback.state != "pending":
            return job
        time.sleep(0.02)
    return app.store.get(job_id)


def submit(c: httpx.Client, callback_url: str, **extra: Any) -> httpx.Response:
    return c.post("/v1/jobs", json={"prompt": "x", "callback_url": callback_url, **extra}, headers=AUTH)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://127.0.0.1:6379/",
        "http://[::1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://localhost:8080/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
        "http://intranet/",
        "https://user:s3cret@hooks.example.com/done",
    ],
)
def test_internal_targets_and_credentials_are_refused_at_submit(live, url):
    _app, base = live()
    with httpx.Client(base_url=base) as c:
        r = submit(c, url)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == "callback_url", r.text
        assert c.get("/v1/jobs", headers=AUTH).json()["jobs"] == []
    assert "s3cret" not in r.text


INTERNAL_V4 = ["127.0.0.1", "10.0.0.7", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
CONFIGURED_NAT64 = "2001:db8:64::/96"


def v6_spellings(v4: str) -> list[str]:
    """Every IPv6 form an IPv4 address can hide in: mapped, compatible, 6to4, Teredo (client, obfuscated,
    and server), NAT64 under the well-known prefix, the local-use range and a configured prefix."""
    import ipaddress

    n = int(ipaddress.IPv4Address(v4))
    hexed = f"{n >> 16:x}:{n & 0xFFFF:x}"
    teredo_client = ipaddress.IPv6Address(
        (0x20010000 << 96) | (int(ipaddress.IPv4Address("8.8.8.8")) << 64) | ((~n) & 0xFFFFFFFF)
    )
    teredo_server = ipaddress.IPv6Address(
        (0x20010000 << 96) | (n << 64) | int(ipaddress.IPv4Address("1.1.1.1")) ^ 0xFFFFFFFF
    )
    return [
        f"::ffff:{v4}",
        f"::{v4}",
        f"::{hexed}",
        f"2002:{hexed}::1",
        str(teredo_client),
        str(teredo_server),
        f"64:ff9b::{v4}",
        f"64:ff9b::{hexed}",
        f"64:ff9b:1:{hexed}::",
        f"2001:db8:64::{hexed}",
    ]


@pytest.mark.parametrize("v4", INTERNAL_V4)
def test_every_ipv6_embedding_of_an_internal_address_is_refused_at_submit_and_at_send(live, v4):
    from core.webhooks.sender import post
    from core.webhooks.targets import Policy

    _app, base = live({"callbacks": {"nat64_prefixes": [CONFIGURED_NAT64]}})
    with httpx.Client(base_url=base) as c:
        for v6 in v6_spellings(v4):
            r = submit(c, f"http://[{v6}]/hook")
            assert r.status_code == 422, (v6, r.text)
            assert r.json()["error"]["field"] == "callback_url", (v6, r.text)
            dns = FakeDns({"hooks.example.com": v6})
            refused = post(
                "http://hooks.example.com/hook",
                b"{}",
                {},
                timeout_s=2,
                policy=Policy(
                    nat64_prefixes=[CONFIGURED_NAT64],
                    resolver=lambda h, p, dns=dns, **kw: [
                        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (dns.answers[h], p, 0, 0))
                    ],
                ),
            )
            assert refused.error, (v6, refused)
            assert refused.error.startswith("refused:"), (v6, refused)
        assert c.get("/v1/jobs", headers=AUTH).json()["jobs"] == []  # nothing stored for any of them


def test_a_public_address_embedded_in_ipv6_is_still_public():
    import ipaddress

    from core.webhooks.targets import is_public

    for v6 in ("64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:1.1.1.1", "2606:4700::1111"):
        assert is_public(ipaddress.IPv6Address(v6)), v6


def test_a_public_target_is_accepted_and_an_allowed_internal_one_too(live):
    _app, base = live({"callbacks": {"allow": ["10.1.0.0/16", "hooks.internal"]}})
    with httpx.Client(base_url=base) as c:
        assert submit(c, "https://hooks.example.com/done?x=1").status_code == 202
        assert submit(c, "http://10.1.2.3/hook").status_code == 202
        assert submit(c, "http://hooks.internal/hook").status_code == 202
        assert submit(c, "http://10.2.0.1/hook").status_code == 422


def test_a_succeeded_job_posts_its_view_signed_as_standard_webhooks(live, receiver):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    hook = receiver(204)
    app, base = live(
        {"callbacks": FAST, "tenants": {"acme": {"webhook_secret": "env:HOOK_SECRET"}}}, env={"HOOK_SECRET": SECRET}
    )
    with httpx.Client(base_url=base) as c:
        r = submit(c, hook.url)
        job = settle(app, r.json()["job_id"])
        view = c.get(f"/v1/jobs/{job.id}", headers=AUTH).json()
    assert job.status.value == "succeeded"
    assert len(hook.got) == 1
    headers, body = hook.got[0]
    assert json.loads(body)["job_id"] == job.id
    assert json.loads(body)["status"] == "succeeded"
    Webhook(SECRET).verify(body, headers)  # raises unless the signature is valid and the timestamp recent
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"succeeded", b"failed"), headers)
    assert view["callback"]["state"] == "delivered"
    assert view["callback"]["tries"] == 1
    assert view["callback"]["status_code"] == 204
    assert view["callback"]["id"] == headers["webhook-id"]


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(live, receiver):
    flaky = receiver(500, 503, 204)
    down = receiver(500)
    app, base = live({"callbacks": FAST})
    with httpx.Client(base_url=base) as c:
        ok = settle(app, submit(c, flaky.url).json()["job_id"])
        dead = settle(app, submit(c, down.url).json()["job_id"])
    assert ok.callback.state == "delivered"
    assert ok.callback.tries == 3
    assert len(flaky.got) == 3
    assert len({h["webhook-id"] for h, _ in flaky.got}) == 1  # one event, one id, on every try
    assert dead.callback.state == "failed"
    assert dead.callback.tries == 3 == len(down.got)
    assert dead.callback.error == "answered 500"
    assert dead.status.value == "succeeded"  # the result is not at risk


def test_failed_and_dead_lettered_jobs_call_back_too(live, receiver):
    hook = receiver(204)
    for fault, status in (("400", "failed"), ("500", "dead_lettered")):
        with ServerThread(FakeAnthropic(FaultPlan(rates={fault: 1.0}))) as srv:
            app, base = live({**anthropic_config(srv.url, max_attempts=1), "callbacks": FAST})
            with httpx.Client(base_url=base) as c:
                job = settle(app, submit(c, hook.url).json()["job_id"])
        assert job.status.value == status
        assert job.callback.state == "delivered"
        assert job.callback.event == status
    assert [json.loads(b)["status"] for _, b in hook.got] == ["failed", "dead_lettered"]


def test_redirects_are_not_followed(live, receiver):
    target = receiver(204)
    bouncer = receiver(302, location=target.url)
    app, base = live({"callbacks": {**FAST, "max_tries": 1}})
    with httpx.Client(base_url=base) as c:
        job = settle(app, submit(c, bouncer.url).json()["job_id"])
    assert job.callback.state == "failed"
    assert "redirects are not followed" in job.callback.error
    assert len(bouncer.got) == 1
    assert target.got == []


class Dripper:
    """A receiver that reads the request, then sends its status line one byte every `every_s` seconds, and
    records when each connection opened and closed."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.connections: list[list[float]] = []  # [opened, closed]
        self.ids: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        span = [time.monotonic(), 0.0]
        self.connections.append(span)
        data = b""
        while b"\r\n\r\n" not in data:  # the whole request, so that what is read next can only be a hang-up
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").splitlines()
        length = next((int(v.split(":", 1)[1]) for v in lines if v.lower().startswith("content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        self.ids += [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("webhook-id:")]
        import select

        poller = select.poll()  # not select(): a long test run's descriptors pass FD_SETSIZE (1024)
        poller.register(conn, select.POLLIN)
        try:
            for ch in b"HTTP/1.1 204 No Content\r\n\r\n":
                conn.sendall(bytes([ch]))
                if poller.poll(self.every_s * 1000) and not conn.recv(1):  # the caller hung up
                    break
        except OSError:
            pass
        finally:
            span[1] = time.monotonic()
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_slow_receiver_is_cut_at_the_deadline_inside_the_message_lease(live):
    """A receiver that drips its answer a byte at a time held a delivery for 40 s against a 10 s timeout, past
    the queue's visibility timeout, and the same event was POSTed again meanwhile. Now the whole delivery is
    bounded, by the callback timeout and by the message's lease: no two deliveries of the event overlap."""
    drip = Dripper(every_s=0.5)  # the full answer would take 13 s
    cfg = {
        "callbacks": {**FAST, "timeout_s": 10, "max_tries": 2, "backoff_base_s": 0.1},
        "queue": {"visibility_timeout_s": 4},
    }
    try:
        app, base = live(cfg)
        with httpx.Client(base_url=base) as c:
            job = settle(app, submit(c, drip.url).json()["job_id"], timeout=30)
        assert job.callback.state == "failed", job.callback
        assert job.callback.status_code is None, job.callback  # never answered
        assert len(drip.connections) == 2
        assert len(set(drip.ids)) == 1  # two tries of one event
        (a_open, a_close), (b_open, b_close) = sorted(drip.connections)
        assert a_close <= b_open  # the second try started after the first was cut
        assert a_close - a_open < 4
        assert b_close - b_open < 4  # each inside the 4 s lease, not 13 s
    finally:
        drip.close()


class FakeDns:
    """Answers for names this test owns; counts the look-ups, as rebinding would need a second one."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int, **kw: Any) -> list[tuple[Any, ...]]:
        self.lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.answers[host], port))]


def test_a_name_that_resolves_to_an_internal_address_is_refused_at_send_time(receiver):
    from core.webhooks.sender import post
    from core.webhooks.targets import Policy

    hook = receiver(204)
    url = hook.url.replace("127.0.0.1", "hooks.example.com")
    dns = FakeDns({"hooks.example.com": "127.0.0.1"})
    Policy(resolver=dns).check_url(url)  # nothing in the URL itself says it is internal
    sent = post(url, b"{}", {}, policy=Policy(resolver=dns), timeout_s=5)
    assert sent.status_code is None
    assert sent.error.startswith("refused:")
    assert "127.0.0.1" in sent.error
    assert hook.got == []


def test_the_connection_goes_to_the_address_that_was_checked_naming_the_host(receiver):
    from core.webhooks.sender import post
    from core.webhooks.targets import Policy

    hook = receiver(204)
    port = hook.server.server_port
    dns = FakeDns({"hooks.example.com": "127.0.0.1"})
    sent = post(
        f"http://hooks.example.com:{port}/hook?a=1",
        b"{}",
        {"x-test": "1"},
        policy=Policy(["127.0.0.0/8"], resolver=dns),
        timeout_s=5,
    )
    assert sent.ok
    assert dns.lookups == ["hooks.example.com"]  # one look-up: nothing to rebind between
    headers, _ = hook.got[0]
    assert headers["host"] == f"hooks.example.com:{port}"
    assert headers["x-test"] == "1"


def test_cancel_during_a_call_bills_it_on_the_job_and_a_replay_waits_for_it(live, receiver):
    """With a 2 s provider: DELETE the job while its call is in flight, then replay it at once. Before, the
    replay was accepted, the provider billed two calls, the job recorded one and was marked succeeded twice,
    and the receiver got two callbacks, the first saying `running`. Now the replay is refused until the call
    ends, the call is billed on the cancelled job, and each terminal state sends one callback, of itself."""
    hook = receiver(204)
    fake = FakeAnthropic(FaultPlan(latency_s=2.0))
    with ServerThread(fake) as srv:
        app, base = live({**anthropic_config(srv.url), "callbacks": FAST})
        with httpx.Client(base_url=base, headers=AUTH) as c:
            job_id = submit(c, hook.url).json()["job_id"]
            deadline = time.monotonic() + 10
            while fake.inflight == 0 and time.monotonic() < deadline:  # the call is in flight
                time.sleep(0.02)
            time.sleep(0.3)
            cancelled = c.delete(f"/v1/jobs/{job_id}")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "cancelled"
            early = c.post(f"/v1/jobs/{job_id}/replay")
            assert early.status_code == 409
            assert "in flight" in early.json()["error"]["message"]
            deadline = time.monotonic() + 10
            while app.store.get(job_id).call_in_flight_until is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            view = c.get(f"/v1/jobs/{job_id}").json()
            assert view["status"] == "cancelled"
            assert view["usage"]["cost_usd"] > 0
            assert len(view["attempts"]) == 1
            assert view["result"] is None  # billed, never served
            assert fake.stats["calls"] == 1
            replayed = c.post(f"/v1/jobs/{job_id}/replay")
            assert replayed.status_code == 200, replayed.text
            done = settle(app, job_id)
            deadline = time.monotonic() + 10
            while len(hook.got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert done.status.value == "succeeded"
    assert fake.stats["calls"] == 2
    assert len(done.attempts) == 2
    assert all(a.usage is not None and a.usage.cost_usd > 0 for a in done.attempts)
    posted = [json.loads(body) for _, body in hook.got]
    assert [p["status"] for p in posted] == ["cancelled", "succeeded"]  # one per terminal state, never `running`
    assert len({h["webhook-id"] for h, _ in hook.got}) == 2
