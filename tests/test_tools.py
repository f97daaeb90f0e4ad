"""Tools: `tools` and `tool_choice` through every provider's own tool API over real HTTP to its fake, a reply that
calls tools ending the job with `stop_reason: tool_use` and the calls in the view, and the client's next job
carrying the calls and their results back, in each API's form (the fakes refuse results that answer no call)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus
from core.views import JobView
from tests.test_api import ACME
from tests.test_routing import config, run

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Lisbon?"}


def ask(**extra: Any) -> JobRequest:
    return JobRequest.model_validate({"messages": [QUESTION], "tools": [WEATHER], **extra})


def continued(view: JobView, result: str = "18 C and sunny") -> JobRequest:
    """The next job of the client's loop: the question, the model's calls, then their results."""
    calls = [{"type": "tool_call", **c.model_dump()} for c in view.tool_calls]
    results = [{"type": "tool_result", "tool_call_id": c.id, "content": result} for c in view.tool_calls]
    messages = [QUESTION, {"role": "assistant", "content": calls}, {"role": "user", "content": results}]
    return JobRequest.model_validate({"messages": messages, "tools": [WEATHER]})


def loop(app: Any) -> tuple[JobView, JobView]:
    [first] = run(app, ask())
    assert first.status is JobStatus.succeeded, first.error
    view = JobView.of(first)
    [second] = run(app, continued(view))
    assert second.status is JobStatus.succeeded, second.error
    return view, JobView.of(second)


def test_anthropic_tool_use_and_the_results_turn(make_app, provider_fakes):
    fakes, urls = provider_fakes
    called, answered = loop(make_app(config(urls, "haiku")))
    assert called.stop_reason == "tool_use" and called.result == ""
    [call] = called.tool_calls
    assert call.name == "get_weather" and call.arguments["city"]
    first, second = fakes["anthropic"].requests
    assert first["tools"] == [
        {"name": "get_weather", "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
    ]
    assert first["tool_choice"] == {"type": "auto"}
    assert second["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call.id, "name": "get_weather", "input": call.arguments}],
    }
    assert second["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny", "is_error": False}
    ]
    assert answered.stop_reason == "end_turn" and answered.tool_calls == [] and answered.result


def test_openai_tool_calls_and_tool_messages(make_app, provider_fakes):
    fakes, urls = provider_fakes
    called, answered = loop(make_app(config(urls, "gpt")))
    [call] = called.tool_calls
    first, second = fakes["openai"].bodies
    assert first["tools"] == [{"type": "function", "function": WEATHER}]
    assert first["tool_choice"] == "auto"
    assistant, tool = second["messages"][2], second["messages"][3]
    assert assistant["tool_calls"][0]["id"] == call.id and assistant["content"] is None
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}
    assert len(second["messages"]) == 4  # a results-only turn sends no empty user message
    assert answered.result and not answered.tool_calls


def test_bedrock_tool_use_and_tool_result_blocks(make_app, provider_fakes):
    fakes, urls = provider_fakes
    called, answered = loop(make_app(config(urls, "nova")))
    [call] = called.tool_calls
    first, second = fakes["bedrock"].bodies
    assert first["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": WEATHER["parameters"]}
    assert "toolChoice" not in first["toolConfig"]  # auto is Converse's default
    assert second["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": call.id, "name": "get_weather", "input": call.arguments}}
    ]
    assert second["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": call.id, "content": [{"text": "18 C and sunny"}], "status": "success"}}
    ]
    assert answered.result


@pytest.mark.parametrize("model", ["haiku", "gpt", "nova"])
def test_a_named_choice_is_sent_as_each_api_names_it(make_app, provider_fakes, model):
    fakes, urls = provider_fakes
    [job] = run(make_app(config(urls, model)), ask(tool_choice={"name": "get_weather"}))
    assert JobView.of(job).tool_calls[0].name == "get_weather"
    body = {"haiku": fakes["anthropic"].requests, "gpt": fakes["openai"].bodies, "nova": fakes["bedrock"].bodies}[
        model
    ][-1]
    sent = body.get("tool_choice") or body["toolConfig"]["toolChoice"]
    assert sent in (
        {"type": "tool", "name": "get_weather"},
        {"type": "function", "function": {"name": "get_weather"}},
        {"tool": {"name": "get_weather"}},
    )


def test_the_offline_provider_calls_a_tool_it_is_made_to_and_reads_the_results(make_app):
    app = make_app()

    def one(request: JobRequest) -> JobView:
        job, _ = app.service.submit("acme", request)
        asyncio.run(run_until_done(app, [job.id], timeout_s=30))
        return JobView.of(app.store.get(job.id))

    called = one(ask(tool_choice="any"))
    assert called.status.value == "succeeded" and called.stop_reason == "tool_use"
    assert called.tool_calls[0].name == "get_weather" and isinstance(called.tool_calls[0].arguments["city"], str)
    answered = one(continued(called))
    assert answered.result == "The tools returned: 18 C and sunny"
    assert one(ask()).tool_calls == []  # auto: the offline provider answers in text


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            {
                "messages": [
                    QUESTION,
                    {"role": "user", "content": [{"type": "tool_result", "tool_call_id": "x", "content": "1"}]},
                ]
            },
            "messages",
            "answers no tool_call",
        ),
        (
            {
                "messages": [
                    QUESTION,
                    {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "f"}]},
                    {"role": "user", "content": "and?"},
                ]
            },
            "messages",
            "no tool_result for tool_call 'c1'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_call", "id": "c", "name": "f"}]}]},
            "messages",
            "assistant turn",
        ),
        ({"prompt": "x", "tools": [WEATHER], "tool_choice": {"name": "other"}}, "tool_choice", "not one of the tools"),
        ({"prompt": "x", "tool_choice": "any"}, "tool_choice", "needs `tools`"),
        ({"prompt": "x", "tools": [WEATHER], "response_format": {"type": "json_object"}}, "tools", "not both"),
        ({"prompt": "x", "tools": [{**WEATHER, "parameters": {"type": "array"}}]}, "tools", "an object"),
    ],
)
def test_tool_mistakes_are_refused_naming_the_field(live, body, field, words):
    _, url = live()
    r = httpx.post(f"{url}/v1/jobs", json=body, headers=ACME)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"].startswith(field) and words in error["message"], error


def test_the_cache_keys_on_the_tools(make_app, fake_anthropic):
    from tests.conftest import anthropic_config

    _, url = fake_anthropic
    app = make_app(anthropic_config(url, cache={"enabled": True}))
    [plain] = run(app, JobRequest.model_validate({"messages": [QUESTION]}))
    [tooled] = run(app, ask())
    assert tooled.cached_from is None and JobView.of(tooled).tool_calls
    [again] = run(app, ask())
    assert again.cached_from == tooled.id and JobView.of(again).tool_calls == JobView.of(tooled).tool_calls
    assert plain.reply.tool_calls == []
