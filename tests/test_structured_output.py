"""Structured output: `response_format` through every provider's native mode over real HTTP to its fake, the reply
checked against the schema, one corrective call on a mismatch (an attempt like any other), and a reply that still
fails ending the job as `malformed`, never as a success. The schema checker agrees with the reference library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from core.entrypoints.local import run_until_done
from core.json_schema import schema_problems, violations
from core.models import ErrorClass, JobRequest, JobStatus
from core.views import JobView
from tests.test_api import ACME
from tests.test_routing import config, run

TICKET = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 200},
        "priority": {"type": "string", "enum": ["low", "normal", "urgent"]},
        "order": {"type": "integer", "minimum": 1},
        "refund": {"type": "boolean"},
    },
    "required": ["summary", "priority", "order"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "schema": TICKET, "name": "ticket"}


def extract(**extra: Any) -> JobRequest:
    return JobRequest.model_validate(
        {"prompt": "Order 1182: the kettle arrived damaged, please replace it.", "response_format": FORMAT, **extra}
    )


# ---------------------------------------------------------------- the schema checker


CASES: list[tuple[dict[str, Any], Any]] = [
    (TICKET, {"summary": "s", "priority": "low", "order": 3}),
    (TICKET, {"summary": "s", "priority": "soon", "order": 3}),
    (TICKET, {"summary": "s", "priority": "low", "order": 0}),
    (TICKET, {"summary": "s", "priority": "low", "order": 2.0}),
    (TICKET, {"summary": "s", "priority": "low", "order": True}),
    (TICKET, {"summary": "s", "priority": "low"}),
    (TICKET, {"summary": "s", "priority": "low", "order": 1, "extra": 1}),
    (TICKET, {"summary": "x" * 201, "priority": "low", "order": 1}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}, {"tags": []}),
    ({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}, {"tags": [1, 1.0]}),
    ({"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}, {"v": None}),
    ({"type": "object", "properties": {"v": {"oneOf": [{"type": "number"}, {"type": "integer"}]}}}, {"v": 3}),
    ({"type": "object", "properties": {"v": {"type": "string", "pattern": "^[A-Z]{3}$"}}}, {"v": "EUR"}),
    ({"type": "object", "properties": {"v": {"type": "string", "pattern": "^[A-Z]{3}$"}}}, {"v": "euro"}),
    ({"type": "object", "properties": {"v": {"$ref": "#/$defs/p"}}, "$defs": {"p": {"type": "number", "exclusiveMaximum": 1}}}, {"v": 1}),
    ({"type": "object", "properties": {"v": {"const": 1}}}, {"v": True}),
    ({"type": "object", "properties": {"v": {"type": ["string", "null"]}}, "minProperties": 1}, {}),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": 1, "b": "2"}),
    ({"type": "object", "properties": {"v": {"type": "number", "multipleOf": 0.5}}}, {"v": 1.5}),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "instance"), CASES)
def test_the_checker_agrees_with_the_reference_library(schema, instance):
    import jsonschema

    assert schema_problems(schema) == []
    reference = jsonschema.Draft202012Validator(schema).is_valid(instance)
    assert (violations(instance, schema) == []) == reference, violations(instance, schema)


def test_a_schema_with_a_keyword_the_checker_cannot_judge_is_refused_naming_it():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "if": {"required": ["a"]}}
    assert any("'if' is not supported" in p for p in schema_problems(schema))
    with pytest.raises(ValueError, match="'if' is not supported"):
        JobRequest.model_validate({"prompt": "x", "response_format": {"type": "json_schema", "schema": schema}})
    with pytest.raises(ValueError, match="an object at the top"):
        JobRequest.model_validate(
            {"prompt": "x", "response_format": {"type": "json_schema", "schema": {"type": "array"}}}
        )


# ---------------------------------------------------------------- each provider's native mode, on the wire


def test_anthropic_forces_a_tool_whose_input_schema_is_the_schema_and_the_view_has_the_object(make_app, provider_fakes):
    fakes, urls = provider_fakes
    [job] = run(make_app(config(urls, "haiku")), extract())
    assert job.status is JobStatus.succeeded, job.error
    body = fakes["anthropic"].requests[-1]
    assert body["tools"] == [
        {"name": "ticket", "description": "Give the reply as this tool's input.", "input_schema": TICKET}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "ticket"}
    assert "matching this JSON Schema" in body["system"]  # every provider is also told in words
    view = JobView.of(job)
    assert violations(view.output, TICKET) == []
    assert view.output["priority"] == "low" and view.stop_reason == "end_turn"


def test_a_reply_off_the_schema_gets_one_corrective_call_quoting_it(make_app, provider_fakes):
    fakes, urls = provider_fakes
    fakes["anthropic"].plan.off_schema = 1
    [job] = run(make_app(config(urls, "haiku")), extract())
    assert job.status is JobStatus.succeeded, job.error
    first, _ = job.attempts
    assert first.error_class is ErrorClass.malformed and first.rejected_reply == '{"unexpected":true}'
    assert "'summary' is required" in first.error
    sent = fakes["anthropic"].requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == '{"unexpected":true}'
    assert sent[2]["content"].startswith("Your reply did not match the required format:")
    assert "'summary' is required" in sent[2]["content"]
    assert job.provider_calls == 2  # the corrective call is an attempt of the budget
    assert job.usage.calls == 2 and job.usage.cost_usd == pytest.approx(
        sum(a.usage.cost_usd for a in job.attempts if a.usage)
    )  # and both calls are billed and spent
    assert violations(json.loads(job.result_text), TICKET) == []


def test_a_reply_still_off_the_schema_after_the_correction_fails_as_malformed(make_app, provider_fakes):
    fakes, urls = provider_fakes
    fakes["anthropic"].plan.off_schema = 5
    [job] = run(make_app(config(urls, "haiku")), extract())
    assert job.status is JobStatus.failed
    assert len(job.attempts) == 2  # one correction, no more
    assert job.error.error_class is ErrorClass.malformed
    assert "after a corrective call" in job.error.message and "'summary' is required" in job.error.message
    assert job.result_text is None and JobView.of(job).output is None


def test_openai_gets_its_response_format_and_invalid_json_first_is_corrected(make_app, provider_fakes):
    fakes, urls = provider_fakes
    fakes["openai"].off_schema = 1  # the first reply is not JSON at all
    [job] = run(make_app(config(urls, "gpt")), extract())
    assert job.status is JobStatus.succeeded, job.error
    assert fakes["openai"].bodies[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "ticket", "schema": TICKET, "strict": False},
    }
    assert "not JSON" in job.attempts[0].error
    assert violations(json.loads(job.result_text), TICKET) == []


def test_openai_json_object_mode(make_app, provider_fakes):
    fakes, urls = provider_fakes
    [job] = run(
        make_app(config(urls, "gpt")),
        JobRequest.model_validate({"prompt": "hi", "response_format": {"type": "json_object"}}),
    )
    assert job.status is JobStatus.succeeded, job.error
    assert fakes["openai"].bodies[-1]["response_format"] == {"type": "json_object"}
    assert isinstance(JobView.of(job).output, dict)


def test_bedrock_converse_forces_its_tool_and_the_reply_is_its_input(make_app, provider_fakes):
    fakes, urls = provider_fakes
    fakes["bedrock"].off_schema = 1
    [job] = run(make_app(config(urls, "nova")), extract())
    assert job.status is JobStatus.succeeded, job.error
    tool = fakes["bedrock"].bodies[-1]["toolConfig"]
    assert tool["toolChoice"] == {"tool": {"name": "ticket"}}
    assert tool["tools"][0]["toolSpec"]["inputSchema"] == {"json": TICKET}
    assert len(job.attempts) == 2
    assert violations(JobView.of(job).output, TICKET) == []


def test_the_offline_provider_answers_in_the_schemas_shape(make_app):
    app = make_app()
    job, _ = app.service.submit("acme", extract())
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert violations(json.loads(done.result_text), TICKET) == []


def test_the_cache_keys_on_the_format(make_app, fake_anthropic):
    from tests.conftest import anthropic_config

    _, url = fake_anthropic
    app = make_app(anthropic_config(url, cache={"enabled": True}))

    def ask(request: JobRequest):
        [job] = run(app, request)
        return job

    prose = ask(JobRequest(prompt="Order 1182: the kettle arrived damaged, please replace it."))
    structured = ask(extract())
    assert structured.cached_from is None and prose.result_text != structured.result_text
    assert ask(extract()).cached_from == structured.id


def test_over_http_a_bad_format_is_refused_naming_the_field_and_a_good_one_answers(live):
    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        bad = c.post("/v1/jobs", json={"prompt": "x", "response_format": {"type": "json_schema"}})
        assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("response_format"), bad.text
        r = c.post("/v1/jobs", json={"prompt": "Order 1182 is damaged.", "response_format": FORMAT})
        assert r.status_code == 202, r.text
        from tests.conftest import wait_terminal

        view = wait_terminal(c, r.json()["status_url"], ACME)
    assert view["status"] == "succeeded"
    assert violations(view["output"], TICKET) == []


def test_a_batch_reply_off_the_schema_is_billed_then_corrected_online(clock, make_app, fake_anthropic):
    from tests.test_batch_lane import deliver_all, lane_config, tick

    fake, url = fake_anthropic
    fake.plan.off_schema = 1
    app = make_app(lane_config(url), clock=clock)
    job, _ = app.service.submit("acme", extract(lane="batch"))
    deliver_all(app)
    clock.advance(0.25)  # past batch.flush_s
    assert tick(app)["returned"] == 1  # off the schema: not applied, back to the online lane
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    done = app.store.get(job.id)
    assert done.status is JobStatus.succeeded, done.error
    batch, online = done.attempts
    assert batch.rejected_reply == '{"unexpected":true}' and batch.usage is not None  # the batch call is billed
    assert online.outcome == "succeeded" and online.rejected_reply is None  # the corrective call, online
    assert violations(JobView.of(done).output, TICKET) == []
    assert done.usage.calls == 2
