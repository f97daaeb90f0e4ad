"""Threads: the service keeps a tenant's conversation, so a client sends only its new turn. Jobs on one thread run
in submission order whatever the queue's delivery order (a later one waits, spending no attempt), a failed job adds
nothing, a duplicated delivery adds its turns once, a job killed between its end and its settling loses nothing,
the history is fitted to the window oldest turns first, and a thread can be read and erased over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from core.entrypoints.local import run_until_done
from core.jobs.threads import ERASED, Threads
from core.models import Job, JobRequest, JobStatus, QueueMessage
from core.ports import Delivery
from core.tokenizers import counter
from tests.conftest import anthropic_config, wait_terminal
from tests.test_api import ACME
from tests.test_workflows import deliver

QUESTIONS = ["My kettle arrived damaged.", "It is the blue one, order 1182.", "Can I have a replacement?"]


def submit(app: Any, prompt: str, thread: str = "support-1182", **extra: Any) -> Job:
    return app.service.submit("acme", JobRequest(prompt=prompt, thread_id=thread, **extra))[0]


@pytest.fixture
def app(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    return make_app(anthropic_config(url, in_process_wait_s=0))


def test_turns_run_in_order_and_each_sees_the_ones_before(app, fake_anthropic):
    fake, _ = fake_anthropic
    jobs = [submit(app, q) for q in QUESTIONS]
    asyncio.run(run_until_done(app, [j.id for j in jobs], timeout_s=60))
    done = [app.store.get(j.id) for j in jobs]
    assert [j.status for j in done] == [JobStatus.succeeded] * 3
    assert [j.assembly.history_turns for j in done] == [0, 2, 4]
    last = next(r for r in fake.requests if QUESTIONS[2] in str(r["messages"][-1]["content"]))
    assert [m["role"] for m in last["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in last["messages"][::2]] == QUESTIONS
    thread = app.service.thread("acme", "support-1182")
    assert [m.content for m in thread.messages[::2]] == QUESTIONS
    assert thread.messages[1].content == done[0].result_text and thread.pending == []


def test_a_later_turn_delivered_first_waits_without_spending_an_attempt(app):
    first, second = submit(app, QUESTIONS[0]), submit(app, QUESTIONS[1])
    outcome = deliver(app, second)
    assert outcome.action == "defer"
    waiting = app.store.get(second.id)
    assert waiting.attempts == [] and first.id in waiting.waiting.reason
    assert deliver(app, first).status is JobStatus.succeeded
    assert deliver(app, second).status is JobStatus.succeeded
    assert app.store.get(second.id).assembly.history_turns == 2


def test_a_duplicated_delivery_adds_its_turns_once(app, fake_anthropic):
    fake, _ = fake_anthropic
    fake.plan.latency_s = 0.5
    job = submit(app, QUESTIONS[0])
    body = QueueMessage.for_job(job).model_dump_json()

    async def twice() -> list[Any]:
        try:
            return await asyncio.gather(
                *(app.service.process(Delivery(message_id=f"m{i}", body=body)) for i in range(2))
            )
        finally:
            await app.providers.aclose()

    asyncio.run(twice())
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    assert fake.stats["calls"] == 1
    assert len(app.service.thread("acme", "support-1182").messages) == 2


def test_a_failed_turn_adds_nothing_and_the_next_runs_after_it(app, fake_anthropic):
    fake, _ = fake_anthropic
    jobs = [submit(app, q) for q in QUESTIONS]
    assert deliver(app, jobs[0]).status is JobStatus.succeeded
    fake.plan.script = ["400"]  # refused: a permanent failure
    assert deliver(app, jobs[1]).status is JobStatus.failed
    assert deliver(app, jobs[2]).status is JobStatus.succeeded
    assert app.store.get(jobs[2].id).assembly.history_turns == 2  # the first exchange only
    assert [m.content for m in app.service.thread("acme", "support-1182").messages[::2]] == [QUESTIONS[0], QUESTIONS[2]]


def test_a_replayed_turn_is_refused_saying_to_submit_it_again(app, fake_anthropic):
    fake, _ = fake_anthropic
    fake.plan.script = ["400"]
    job = submit(app, QUESTIONS[0])
    assert deliver(app, job).status is JobStatus.failed
    app.service.replay_for("acme", job.id)  # its turn is settled (it added nothing): it can't run in its place now
    assert deliver(app, job).status is JobStatus.failed
    assert "submit its prompt again as a new turn" in app.store.get(job.id).error.message


def test_a_turn_whose_settling_was_cut_off_is_settled_by_the_next(app, monkeypatch):
    """A worker killed after a job's end was written and before its thread was told: the next turn finds the job
    ended and settles it (its turns added once)."""
    jobs = [submit(app, q) for q in QUESTIONS[:2]]
    monkeypatch.setattr(Threads, "ended", lambda self, job: (_ for _ in ()).throw(RuntimeError("killed")))
    assert deliver(app, jobs[0]).status is JobStatus.succeeded
    monkeypatch.undo()
    assert app.service.thread("acme", "support-1182").pending == [jobs[0].id, jobs[1].id]  # not settled yet
    assert deliver(app, jobs[1]).status is JobStatus.succeeded
    assert app.store.get(jobs[1].id).assembly.history_turns == 2
    assert len(app.service.thread("acme", "support-1182").messages) == 4


def test_the_history_is_fitted_to_the_window_oldest_turns_first(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"].update(context_window=1500, token_margin=0.05)
    app = make_app(cfg)
    long = "the kettle's element, thermostat and switch were all checked again " * 12  # ~130 tokens a turn
    jobs = [submit(app, f"turn {i}: {long}") for i in range(8)]
    asyncio.run(run_until_done(app, [j.id for j in jobs], timeout_s=90))
    last = app.store.get(jobs[-1].id)
    assert last.status is JobStatus.succeeded, last.error
    a = last.assembly
    assert a.history_dropped > 0 and a.history_turns % 2 == 0  # whole exchanges left out, oldest first
    assert a.input_tokens + a.margin_tokens + a.reserved_output_tokens <= a.window  # within it, to the token
    count = counter(a.tokenizer).count
    sent = fake.requests[-1]["messages"]
    assert sent[0]["role"] == "user" and sent[0]["content"].startswith(f"turn {8 - 1 - a.history_turns // 2}:")
    assert a.history_tokens == sum(count(m["content"]) for m in sent[:-1])


def test_read_and_erase_over_http(live, fake_anthropic):
    _, url = fake_anthropic
    app, base = live(anthropic_config(url))
    with httpx.Client(base_url=base, headers=ACME) as c:
        r = c.post("/v1/jobs", json={"prompt": QUESTIONS[0], "thread_id": "t-9"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert wait_terminal(c, r.json()["status_url"], ACME)["status"] == "succeeded"
        thread = c.get("/v1/threads/t-9").json()
        assert [m["role"] for m in thread["messages"]] == ["user", "assistant"] and thread["jobs"] == [job_id]
        erased = c.delete("/v1/threads/t-9").json()
        assert erased["erased_jobs"] == [job_id]
        assert c.get("/v1/threads/t-9").status_code == 404
        view = c.get(f"/v1/jobs/{job_id}").json()
        assert view["result"] is None
    assert app.store.get(job_id).request.prompt == ERASED


def test_erasing_a_thread_deletes_its_images_and_its_streamed_answers(live, fake_anthropic):
    """DELETE /v1/threads/{id} takes what the turns left beyond the job records: the images they sent inline (kept
    under the thread's own prefix, so an image another job shares is untouched) and their streamed text, inline in
    the stream log and spilled to the blob store. A replay of the stream then shows nothing."""
    import base64

    from tests.test_images import IMAGE

    fake, url = fake_anthropic
    fake.plan.stream_tokens = 600  # ~4,000 characters: over the inline 1,000, so the answer spills
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"]["vision"] = True
    cfg["stream"] = {"inline_chars": 1000}
    cfg["routing"]["default"]["max_tokens"] = 1024  # room for the 600
    app, base = live(cfg)
    picture = {"type": "image", "data": base64.b64encode(IMAGE).decode()}
    turn = {"role": "user", "content": [picture, {"type": "text", "text": "What is in this picture?"}]}
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        ids = []
        for body in ({"messages": [turn], "thread_id": "t-img", "stream": True}, {"messages": [turn]}):
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            assert wait_terminal(c, r.json()["status_url"], ACME)["status"] == "succeeded"
            ids.append(r.json()["job_id"])
        threaded, other = ids
        kept = app.blobs.list("workflow-inputs/images/threads/acme/t-img/")
        assert len(kept) == 1 and app.blobs.list(f"streams/{threaded}/")
        assert "tok599" in c.get(f"/v1/jobs/{threaded}/events").text
        erased = c.delete("/v1/threads/t-img").json()
        assert erased["erased_jobs"] == [threaded] and erased["erased_objects"] == 2
        assert app.blobs.list("workflow-inputs/images/threads/") == [] and app.blobs.list(f"streams/{threaded}/") == []
        assert "tok599" not in c.get(f"/v1/jobs/{threaded}/events").text
        assert app.blobs.list("workflow-inputs/images/")  # the other job's copy, outside any thread: untouched
        assert c.get(f"/v1/jobs/{other}").json()["status"] == "succeeded"
    fake.plan.stream_tokens = 0


def test_a_queued_turn_of_an_erased_thread_is_refused_saying_why(app):
    first, second = submit(app, QUESTIONS[0]), submit(app, QUESTIONS[1])
    assert deliver(app, first).status is JobStatus.succeeded
    app.service.erase_thread("acme", "support-1182")
    assert deliver(app, second).status is JobStatus.failed
    assert "was erased" in app.store.get(second.id).error.message
    fresh = submit(app, "a new start")  # the same id starts a new thread
    assert deliver(app, fresh).status is JobStatus.succeeded
    assert app.store.get(fresh.id).thread.seq == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"prompt": "x", "thread_id": "t", "lane": "batch"}, "run online, in order"),
        ({"workflow": "summarize", "inputs": {"document": "x"}, "thread_id": "t"}, "workflow"),
        ({"prompt": "x", "thread_id": "bad id!"}, "thread_id"),
    ],
)
def test_thread_mistakes_are_refused(live, body, words):
    _, base = live()
    r = httpx.post(f"{base}/v1/jobs", json=body, headers=ACME)
    assert r.status_code == 422 and words in r.text, r.text


def test_kill_9_mid_thread_loses_no_turn_adds_none_twice_and_never_interleaves(tmp_path):
    """Four threads of six turns each, through worker processes killed (-9) twice mid-run with calls in flight and
    one in twenty calls refused: every thread ends up with exactly its succeeded jobs' turns, in submission order,
    each once, and every job ran seeing exactly the succeeded turns submitted before it on its thread."""
    import json
    import os
    import signal
    import time

    import yaml

    from core.bootstrap import bootstrap
    from core.config import load_settings
    from core.secrets import EnvSecrets
    from core.testing.fake_anthropic import spawn
    from tests.test_kill import wait_for_calls, worker

    fake, url = spawn("--latency", "1.0", "--rates", json.dumps({"400": 0.05}), "--seed", "11")
    cfg = tmp_path / "altostratus.yaml"
    model = {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1.0, "output_per_mtok": 5.0}
    cfg.write_text(
        yaml.safe_dump(
            {
                "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url}},
                "models": {"m": model},
                "routing": {"default": {"model": "m", "max_tokens": 64}},
                "governance": {"max_attempts": 4, "lease_s": 2, "in_process_wait_s": 0.2, "reconcile_after_s": 5},
                "queue": {"visibility_timeout_s": 3, "max_receives": 20, "poll_interval_s": 0.05},
                "server": {"concurrency": 8},
                "logging": {"level": "ERROR"},
            }
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_CONFIG": str(cfg),
        "ALTO_DATA_DIR": str(tmp_path / "data"),
        "FAKE_KEY": "test-key",
    }
    threads = [f"thread-{t}" for t in range(4)]
    try:
        app = bootstrap(load_settings(cfg, env=env), secrets=EnvSecrets(env))
        jobs = {t: [submit(app, f"{t} turn {i}", thread=t).id for i in range(6)] for t in threads}
        for _ in range(2):
            w = worker(env)
            wait_for_calls(url, more=4)
            w.send_signal(signal.SIGKILL)
            w.wait()
        w = worker(env)
        every = [j for ids in jobs.values() for j in ids]
        deadline = time.monotonic() + 180
        while any(not app.store.get(j).status.terminal for j in every) and time.monotonic() < deadline:
            time.sleep(0.25)
        w.terminate()
        w.wait(timeout=30)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    assert all(app.store.get(j).status.terminal for j in every), "jobs left unfinished"
    for t, ids in jobs.items():
        done = [app.store.get(j) for j in ids]
        succeeded = [j for j in done if j.status is JobStatus.succeeded]
        assert succeeded, t
        for n, job in enumerate(done):  # each ran after, and with, exactly the successes submitted before it
            before = [j for j in done[:n] if j.status is JobStatus.succeeded]
            if job.status is JobStatus.succeeded:
                assert job.assembly.history_turns == 2 * len(before), (t, n, job.assembly)
        thread = app.service.thread("acme", t)
        assert [m.content for m in thread.messages[::2]] == [j.request.prompt for j in succeeded]
        assert [m.content for m in thread.messages[1::2]] == [j.result_text for j in succeeded]
        assert thread.jobs == [j.id for j in succeeded] and thread.pending == []


def test_with_summaries_the_left_out_turns_are_summarized_once_per_span_by_a_billed_job(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"].update(context_window=1500, token_margin=0.05)
    cfg["threads"] = {"fit": "summary", "summary_max_tokens": 64}
    app = make_app(cfg)
    long = "the kettle's element, thermostat and switch were all checked again " * 12
    jobs = [submit(app, f"turn {i}: {long}") for i in range(9)]
    for job in jobs:  # a turn that needs a summary waits for it; the worker runs both
        asyncio.run(run_until_done(app, [job.id], timeout_s=60))
    summaries = [j for j in app.store.list(tenant="acme", limit=100) if j.request.task == "thread-summary"]
    assert summaries, "no summary job was made"
    assert all(s.status is JobStatus.succeeded and s.usage.cost_usd > 0 for s in summaries)  # billed like any job
    summarized = [
        r for r in fake.requests if str(r["messages"][0]["content"]).startswith("[A summary of this conversation")
    ]
    assert len(summarized) > len(summaries)  # a span's summary is made once and reused by the turns after it
    last = app.store.get(jobs[-1].id)
    assert last.status is JobStatus.succeeded, last.error
    sent = next(r for r in reversed(fake.requests) if "turn 8:" in str(r["messages"][-1]["content"]))["messages"]
    assert sent[0]["content"].startswith("[A summary of this conversation's first") and sent[1]["content"] == "Noted."
    a = last.assembly
    assert a.input_tokens + a.margin_tokens + a.reserved_output_tokens <= a.window
    erased = app.service.erase_thread("acme", "support-1182").erased_jobs
    assert {s.id for s in summaries} <= set(erased)  # erasing the thread blanks its summaries' transcripts too
    assert all(app.store.get(s.id).request.prompt == ERASED for s in summaries)
