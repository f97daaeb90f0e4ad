"""Streaming a queued job's output through the stores: SSE and long-poll on `alto serve` against the fake
Messages API's real SSE stream, resumption, cut streams, fallbacks, truncation and output checks."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, anthropic_config

ACME = {"Authorization": f"Bearer {KEYS['acme']}"}


def events(client: httpx.Client, job_id: str, last_id: str | None = None) -> list[dict[str, Any]]:
    """Every SSE event of the job until `done`, parsed: {"event", "id", "data"}."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    out: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        cur: dict[str, Any] = {}
        for line in r.iter_lines():
            if not line:
                if "event" in cur:
                    out.append(cur)
                cur = {}
                continue
            name, _, value = line.partition(": ")
            cur[name] = json.loads(value) if name == "data" else value
    return out


def texts(evs: list[dict[str, Any]]) -> str:
    """What a client shows: deltas appended, dropped at each reset."""
    shown = ""
    for e in evs:
        if e["event"] == "reset":
            shown = ""
        elif e["event"] == "delta":
            shown += e["data"]["text"]
    return shown


@pytest.fixture
def streaming_fake():
    fake = FakeAnthropic(FaultPlan(stream_tokens=40, stream_tps=80))  # half a second per stream
    with ServerThread(fake) as srv:
        yield fake, srv.url


def submit(client: httpx.Client, prompt: str = "stream me", **extra: Any) -> str:
    r = client.post("/v1/jobs", json={"prompt": prompt, "stream": True, **extra})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def test_deltas_arrive_in_order_and_add_up_to_the_result(live, streaming_fake):
    _fake, url = streaming_fake
    app, base = live(anthropic_config(url))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        evs = events(c, job_id)
    deltas = [e for e in evs if e["event"] == "delta"]
    assert len(deltas) >= 3  # 0.5 s of tokens written at most every 250 ms: the first at once, the rest at close
    assert [e["id"] for e in deltas] == [f"1:{n}" for n in range(1, len(deltas) + 1)]
    assert evs[-1]["event"] == "done"
    assert evs[-1]["data"]["status"] == "succeeded"
    assert texts(evs) == evs[-1]["data"]["result"]
    assert evs[-1]["data"]["result"].count("tok") >= 30
    job = app.store.get(job_id)
    assert job.usage.output_tokens == 40  # the stream's own usage event


def test_last_event_id_resumes_without_gaps_or_repeats(live, streaming_fake):
    _fake, url = streaming_fake
    _app, base = live(anthropic_config(url))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        whole = events(c, job_id)
        ids = [e["id"] for e in whole if e["event"] == "delta"]
        resumed = events(c, job_id, last_id=ids[0])
        r = c.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "nonsense"})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "Last-Event-ID"
    again = [e for e in resumed if e["event"] == "delta"]
    assert [e["id"] for e in again] == ids[1:]
    first = next(e for e in whole if e["event"] == "delta")["data"]["text"]
    assert first + texts(resumed) == texts(whole)


def test_a_cut_stream_is_retried_with_a_reset_and_its_partial_usage_is_billed(live, streaming_fake):
    fake, url = streaming_fake
    fake.plan.script = ["cut"]
    app, base = live(anthropic_config(url))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        evs = events(c, job_id, last_id="1:0")  # a client that had begun reading attempt 1
    job = app.store.get(job_id)
    assert job.status.value == "succeeded"
    assert [a.outcome for a in job.attempts] == ["error", "succeeded"]
    assert "message_stop" in job.attempts[0].error
    assert job.attempts[0].usage is not None
    assert job.usage.output_tokens == job.attempts[0].usage.output_tokens + 40  # the cut half was generated too
    assert [e["event"] for e in evs].count("reset") == 1  # attempt 2 starts over what attempt 1 had shown
    assert texts(evs) == job.result_text


def test_a_stream_that_keeps_getting_cut_is_never_a_success(live, streaming_fake):
    fake, url = streaming_fake
    fake.plan.rates = {"cut": 1.0}
    _app, base = live(anthropic_config(url, max_attempts=2, in_process_wait_s=0))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        evs = events(c, job_id)
    done = evs[-1]["data"]
    assert done["status"] == "dead_lettered"
    assert done["result"] is None
    assert all(a["error_class"] == "transient" for a in done["attempts"])
    assert done["usage"]["output_tokens"] > 0  # what was streamed before each cut is counted


def test_an_error_event_mid_stream_takes_the_typed_fallback_and_the_client_resets(live, streaming_fake):
    fake, url = streaming_fake
    fake.plan.script = ["stream_error"]  # an `overloaded_error` event inside the 200: like a 529
    cfg = anthropic_config(url)
    cfg["models"]["backup"] = {**cfg["models"]["fake-sonnet"], "model_id": "claude-sonnet-4-5"}
    cfg["routing"]["default"]["fallbacks"] = {"rate_limited": ["backup"]}
    app, base = live(cfg)
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        evs = events(c, job_id, last_id="1:1")  # a client that had shown attempt 1's first delta
    job = app.store.get(job_id)
    assert job.status.value == "succeeded"
    assert job.route.model == "backup"
    assert [a.status_code for a in job.attempts] == [529, None]
    assert [e["event"] for e in evs].count("reset") == 1  # attempt 2 replaced what it had shown
    assert texts(evs) == job.result_text


def test_an_output_check_failing_after_streaming_fails_the_job_and_the_events_say_so(live, streaming_fake):
    _fake, url = streaming_fake
    _app, base = live({**anthropic_config(url), "guardrails": {"max_output_chars": 50}})
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        job_id = submit(c)
        evs = events(c, job_id)
    assert len(texts(evs)) > 50  # it was streamed...
    done = evs[-1]["data"]
    assert done["status"] == "failed"
    assert done["result"] is None
    assert "50" in done["error"]["message"]


def test_long_poll_answers_as_soon_as_there_is_new_text_or_the_job_ends(live):
    fake = FakeAnthropic(FaultPlan(stream_tokens=60, stream_tps=40, latency_s=0.3))
    with ServerThread(fake) as srv:
        _app, base = live(anthropic_config(srv.url))
        with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
            job_id = submit(c)
            first = c.get(f"/v1/jobs/{job_id}", params={"after": "0", "wait_s": 10}).json()
            assert first["status"] == "running"
            assert first["partial"]["seq"] >= 1
            assert first["partial"]["text"]
            cursor = f"{first['partial']['attempt']}:{first['partial']['seq']}"
            t0 = time.monotonic()
            second = c.get(f"/v1/jobs/{job_id}", params={"after": cursor, "wait_s": 10}).json()
            assert time.monotonic() - t0 < 2  # the next write comes within flush_ms
            assert second["partial"] is None or second["partial"]["seq"] > first["partial"]["seq"]
            while second["status"] not in ("succeeded", "failed"):
                p = second["partial"]
                second = c.get(
                    f"/v1/jobs/{job_id}", params={"after": f"{p['attempt']}:{p['seq']}" if p else "0", "wait_s": 10}
                ).json()
            assert second["status"] == "succeeded"
            assert second["partial"] is None
            assert second["result"].startswith(first["partial"]["text"])
            assert c.get(f"/v1/jobs/{job_id}", params={"wait_s": "forever"}).status_code == 422


def test_a_cache_hit_streams_the_cached_text_as_one_delta(live, streaming_fake):
    fake, url = streaming_fake
    _app, base = live(anthropic_config(url, cache={"enabled": True}))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        first = events(c, submit(c))
        second = events(c, submit(c))
    assert fake.stats["calls"] == 1
    assert [e["event"] for e in second][-2:] == ["delta", "done"]
    assert texts(second) == texts(first)


def test_ask_stream_prints_the_answer_as_it_is_written(tmp_path, streaming_fake):
    import os
    import subprocess
    import sys

    import yaml

    _fake, url = streaming_fake
    cfg = tmp_path / "altostratus.yaml"
    cfg.write_text(yaml.safe_dump(anthropic_config(url)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_DATA_DIR": str(tmp_path / "d"),
        "ALTO_CONFIG": str(cfg),
        "FAKE_ANTHROPIC_KEY": "test-key",
    }
    alto = str(__import__("pathlib").Path(sys.executable).with_name("alto"))
    p = subprocess.run([alto, "ask", "--stream", "stream to me"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Fake answer about:")
    assert "tok39" in p.stdout
    assert "fake/fake-sonnet" in p.stdout


def test_a_workflows_last_step_streams_through_the_parents_events(live, streaming_fake):
    from tests.test_workflows import TRIAGE

    _fake, url = streaming_fake
    app, base = live({**anthropic_config(url), "workflows": {"triage@2": TRIAGE}})
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        r = c.post("/v1/jobs", json={"workflow": "triage", "inputs": {"input": "refund after 90 days"}, "stream": True})
        job_id = r.json()["job_id"]
        evs = events(c, job_id)
    done = evs[-1]["data"]
    assert done["status"] == "succeeded"
    assert texts(evs) == done["result"]
    assert "tok39" in done["result"]
    kids = app.service.children("acme", job_id)
    assert [k.request.stream for k in kids] == [False, True]  # only the call whose text is the result streams
