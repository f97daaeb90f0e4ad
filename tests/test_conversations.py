"""Jobs that carry a conversation (`messages` and `system` instead of `prompt`), through every provider's
translation over real HTTP to its fake, and through the pipeline: validation, the exact token budget, retrieval
grounding the last user turn, the response cache, prompt-cache breakpoints, streaming and the batch lane."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus
from core.tokenizers import counter
from tests.conftest import SAMPLES, anthropic_config, wait_terminal
from tests.test_api import ACME
from tests.test_routing import config, run

CHAT = [
    {"role": "user", "content": "My order 1182 arrived damaged."},
    {"role": "assistant", "content": "Sorry to hear that. Would you like a refund or a replacement?"},
    {"role": "user", "content": [{"type": "text", "text": "A replacement, please."}]},
]
SYSTEM = "You are the support assistant of a hardware shop. Be brief."


def chat(**extra: Any) -> JobRequest:
    return JobRequest.model_validate({"messages": CHAT, "system": SYSTEM, **extra})


# ---------------------------------------------------------------- each provider's translation, on the wire


def test_anthropic_gets_the_turns_in_order_with_the_jobs_system_text(make_app, provider_fakes):
    fakes, urls = provider_fakes
    [job] = run(make_app(config(urls, "haiku")), chat())
    assert job.status is JobStatus.succeeded, job.error
    body = fakes["anthropic"].requests[-1]
    assert body["system"] == SYSTEM
    assert body["messages"] == [
        {"role": "user", "content": CHAT[0]["content"]},
        {"role": "assistant", "content": CHAT[1]["content"]},
        {"role": "user", "content": "A replacement, please."},
    ]
    assert job.result_text.startswith("Fake answer about: A replacement, please.")  # the last turn is answered


def test_openai_compatible_gets_system_then_the_turns(make_app, provider_fakes):
    fakes, urls = provider_fakes
    [job] = run(make_app(config(urls, "gpt")), chat())
    assert job.status is JobStatus.succeeded, job.error
    assert fakes["openai"].bodies[-1]["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": CHAT[0]["content"]},
        {"role": "assistant", "content": CHAT[1]["content"]},
        {"role": "user", "content": "A replacement, please."},
    ]
    assert job.result_text.startswith("Fake answer about: A replacement, please.")


def test_bedrock_converse_gets_alternating_turns_even_when_the_client_sent_two_user_turns_in_a_row(
    make_app, provider_fakes
):
    fakes, urls = provider_fakes
    messages = [CHAT[0], {"role": "user", "content": "It is the blue kettle."}, *CHAT[1:]]
    [job] = run(make_app(config(urls, "nova")), JobRequest.model_validate({"messages": messages, "system": SYSTEM}))
    assert job.status is JobStatus.succeeded, job.error  # the fake refuses what Converse refuses
    body = fakes["bedrock"].bodies[-1]
    assert body["system"] == [{"text": SYSTEM}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": f"{CHAT[0]['content']}\n\nIt is the blue kettle."}]
    assert job.result_text.startswith("Fake answer about: A replacement, please.")


def test_the_offline_provider_answers_the_last_user_turn(make_app):
    app = make_app()
    messages = [
        {"role": "user", "content": "Tell me about retries."},
        {"role": "assistant", "content": "Retries are budgeted per job."},
        {"role": "user", "content": "Which errors are never retried?"},
    ]
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    job, _ = app.service.submit("acme", JobRequest.model_validate({"messages": messages, "collection": "docs"}))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert done.citations  # grounded by retrieval on the last turn


# ---------------------------------------------------------------- the pipeline on a conversation


def test_history_counts_in_the_exact_budget_and_the_assembly_records_it(make_app, fake_anthropic):
    _, url = fake_anthropic
    app = make_app(anthropic_config(url))
    job, _ = app.service.submit("acme", chat())
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    a = done.assembly
    count = counter(a.tokenizer).count
    assert a.history_turns == 2
    assert a.history_tokens == count(CHAT[0]["content"]) + count(CHAT[1]["content"])
    assert a.system_tokens == count(SYSTEM)
    assert a.question_tokens == count("A replacement, please.")
    assert a.input_tokens == a.system_tokens + a.history_tokens + count("A replacement, please.")


def test_a_conversation_longer_than_the_window_fails_saying_to_send_fewer_turns(make_app, fake_anthropic):
    _, url = fake_anthropic
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"]["context_window"] = 2000
    app = make_app(cfg)
    long = [{"role": "user", "content": "lorem ipsum " * 2000}, {"role": "assistant", "content": "ok"}, CHAT[2]]
    job, _ = app.service.submit("acme", JobRequest.model_validate({"messages": long}))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.failed
    assert "fewer turns" in done.error.message, done.error


def test_retrieval_grounds_the_last_user_turn_and_the_context_goes_in_it(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    app = make_app(anthropic_config(url))
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    messages = [
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": "Hello! What would you like to know?"},
        {"role": "user", "content": "Which errors are never retried?"},
    ]
    job, _ = app.service.submit("acme", JobRequest.model_validate({"messages": messages, "collection": "docs"}))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert done.context_chunks
    sent = fake.requests[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "Hello there."}  # earlier turns as they were
    assert "<context>" in sent[-1]["content"] and "Question: Which errors are never retried?" in sent[-1]["content"]


def test_the_response_cache_keys_on_the_whole_conversation(make_app, fake_anthropic):
    _, url = fake_anthropic
    app = make_app(anthropic_config(url, cache={"enabled": True}))

    def ask(request: JobRequest):
        [job] = run(app, request)
        return job

    first, again = ask(chat()), ask(chat())
    assert again.cached_from == first.id
    other = [CHAT[0], {"role": "assistant", "content": "Shall I refund it?"}, CHAT[2]]
    different = ask(JobRequest.model_validate({"messages": other, "system": SYSTEM}))
    assert different.cached_from is None  # same last turn, other history: another answer
    plain = ask(JobRequest(prompt="A replacement, please."))
    assert plain.cached_from is None


def test_earlier_turns_are_marked_for_the_prompt_cache(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"]["cache_min_tokens"] = 50
    app = make_app(cfg)
    history = [
        {"role": "user", "content": "Here is our returns policy: " + "items may be returned within 30 days. " * 20},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": "Can I return a kettle after 20 days?"},
    ]
    job, _ = app.service.submit("acme", JobRequest.model_validate({"messages": history}))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    assert app.store.get(job.id).status is JobStatus.succeeded
    sent = fake.requests[-1]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["content"] == [{"type": "text", "text": "Understood.", "cache_control": {"type": "ephemeral"}}]
    assert sent[-1] == {"role": "user", "content": "Can I return a kettle after 20 days?"}


def test_the_batch_lane_sends_the_turns(clock, make_app, fake_anthropic):
    from tests.test_batch_lane import deliver_all, lane_config, tick

    fake, url = fake_anthropic
    app = make_app(lane_config(url), clock=clock)
    job, _ = app.service.submit("acme", chat(lane="batch"))
    deliver_all(app)
    clock.advance(0.25)  # past batch.flush_s
    assert tick(app)["applied"] == 1
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert done.batch is not None and done.batch.state == "submitted"
    assert done.result_text.startswith("Fake answer about: A replacement, please.")
    [params] = fake.batches.params
    assert params["system"] == SYSTEM
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]


def test_a_streamed_conversation_carries_the_turns(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    app = make_app(anthropic_config(url))
    job, _ = app.service.submit("acme", chat(stream=True))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert fake.requests[-1]["messages"][1]["role"] == "assistant"
    assert fake.requests[-1].get("stream") is True


# ---------------------------------------------------------------- the API's boundary


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "starts with a user turn"),
        ({"messages": [CHAT[0], CHAT[1]]}, "messages", "ends with an assistant turn"),
        ({"messages": CHAT, "prompt": "and this"}, "prompt", "not both"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages", "no text"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "role"),
        ({"workflow": "summarize", "inputs": {"document": "x"}, "system": "s"}, "system", "one call"),
    ],
)
def test_a_malformed_conversation_is_refused_naming_the_field(live, body, field, words):
    _, url = live()
    r = httpx.post(f"{url}/v1/jobs", json=body, headers=ACME)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"].startswith(field), error
    assert words in error["message"], error


def test_a_conversation_submitted_over_http_is_answered_and_its_view_keeps_the_turns(live):
    _, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"messages": CHAT, "system": SYSTEM}, headers=ACME)
        assert r.status_code == 202, r.text
        view = wait_terminal(c, r.json()["status_url"], ACME)
    assert view["status"] == "succeeded", view
    assert view["prompt"]["history_turns"] == 2  # the assembly counts the earlier turns apart
