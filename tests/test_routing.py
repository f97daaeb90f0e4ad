"""Routing by configuration: rules, typed fallbacks, policy, catalog cost, templates, guardrails, providers.

Every provider is a fake server speaking its real API over HTTP (Anthropic Messages, OpenAI Chat
Completions, Azure OpenAI deployments, Bedrock Converse through boto3 with SigV4).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.config.worker import ModelConfig
from core.entrypoints.local import run_until_done
from core.models import ErrorClass, JobRequest, JobStatus
from core.routing import Router
from core.testing.fake_anthropic import FakeAnthropic, ServerThread
from core.testing.fake_bedrock import FakeBedrock
from core.testing.fake_providers import FakeOpenAI

BEDROCK_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def servers():
    fakes = {"anthropic": FakeAnthropic(), "openai": FakeOpenAI(), "bedrock": FakeBedrock()}
    threads = {k: ServerThread(v).__enter__() for k, v in fakes.items()}
    yield fakes, {k: t.url for k, t in threads.items()}
    for t in threads.values():
        t.__exit__(None, None, None)


def config(urls: dict[str, str], default: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {
            "claude": {"type": "anthropic", "api_key": "env:FAKE_ANTHROPIC_KEY", "base_url": urls["anthropic"]},
            "oai": {
                "type": "openai_compatible",
                "api_key": "env:FAKE_ANTHROPIC_KEY",
                "base_url": urls["openai"] + "/v1",
            },
            "aws": {"type": "bedrock", "region": "us-east-1", "endpoint_url": urls["bedrock"]},
        },
        "models": {
            "haiku": {"provider": "claude", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5},
            "gpt": {"provider": "oai", "model_id": "gpt-4o-mini", "input_per_mtok": 0.15, "output_per_mtok": 0.6},
            "nova": {
                "provider": "aws",
                "model_id": BEDROCK_ID,
                "input_per_mtok": 0.8,
                "output_per_mtok": 4,
                "region": "us-east-1",
            },
            "tiny": {"provider": "oai", "model_id": "tiny-model", "context_window": 300},
        },
        "routing": {"default": {"model": default, "max_tokens": 128}},
        "governance": {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "retry_after_cap_s": 0.05},
    }
    for k, v in extra.items():
        cfg[k] = v
    return cfg


def run(app, *requests: JobRequest, tenant: str = "acme"):
    ids = [app.service.submit(tenant, r)[0].id for r in requests]
    asyncio.run(run_until_done(app, ids, timeout_s=30))
    return [app.store.get(i) for i in ids]


@pytest.mark.parametrize(
    "model,provider,fake,model_id",
    [
        ("haiku", "claude", "anthropic", "claude-haiku-4-5"),
        ("gpt", "oai", "openai", "gpt-4o-mini"),
        ("nova", "aws", "bedrock", BEDROCK_ID),
    ],
)
def test_same_job_on_three_providers_by_config_alone(make_app, servers, model, provider, fake, model_id):
    fakes, urls = servers
    app = make_app(config(urls, default=model))
    (job,) = run(app, JobRequest(prompt="What is a lease?"))
    assert job.status is JobStatus.succeeded, job.error
    assert job.result_text.startswith("Fake answer about: What is a lease?")
    assert (job.route.provider, job.route.model, job.route.model_id) == (provider, model, model_id)
    m = app.settings.models[model]
    assert job.usage.input_tokens > 0
    assert job.usage.output_tokens > 0
    assert job.usage.cost_usd == m.cost(job.usage.input_tokens, job.usage.output_tokens)
    if fake != "anthropic":
        assert fakes[fake].models == [model_id]
    if fake == "bedrock":
        assert fakes["bedrock"].headers[0]["authorization"].startswith("AWS4-HMAC-SHA256")


@pytest.mark.parametrize("model,fake", [("haiku", "anthropic"), ("gpt", "openai"), ("nova", "bedrock")])
@pytest.mark.parametrize("fault", ["ok", "cut", "stream_error"])
def test_each_provider_streams_and_a_cut_or_failed_stream_is_retried_never_served(
    make_app, servers, model, fake, fault
):
    """Anthropic's SSE, Chat Completions' `stream: true` chunks and Bedrock's ConverseStream event stream:
    the same streamed job; a stream cut short or carrying an error is a transient error, then retried."""
    fakes, urls = servers
    if fake == "anthropic":
        fakes[fake].plan.script = [fault]
    else:
        fakes[fake].script = [fault]
    app = make_app(config(urls, default=model))
    (job,) = run(app, JobRequest(prompt="What is a lease?", stream=True))
    assert job.status is JobStatus.succeeded, job.error
    assert job.result_text.strip().startswith("Fake answer about: What is a lease?")
    snap = app.service.streams.read(job.id)
    assert snap is not None
    assert snap.text == job.result_text
    assert snap.attempt == len(job.attempts)
    assert job.usage.output_tokens > 0
    if fault == "ok":
        assert [a.outcome for a in job.attempts] == ["succeeded"]
    else:
        first = job.attempts[0]
        assert first.outcome == "error"
        assert first.error_class.value in ("transient", "rate_limited")
        assert first.usage is not None
        assert first.usage.output_tokens > 0  # what streamed before the cut is billed
        assert ("mid-stream" in first.error) == (fault == "stream_error")


def test_azure_openai_style_uses_deployment_urls_and_api_key_header(make_app):
    fake = FakeOpenAI()
    with ServerThread(fake) as srv:
        cfg = config({"anthropic": "", "openai": "", "bedrock": ""}, default="dep")
        cfg["providers"] = {
            "az": {
                "type": "openai_compatible",
                "api_style": "azure",
                "api_version": "2024-10-21",
                "base_url": srv.url,
                "api_key": "env:FAKE_ANTHROPIC_KEY",
            }
        }
        cfg["models"] = {"dep": {"provider": "az", "model_id": "my-gpt-deployment"}}
        app = make_app(cfg)
        (job,) = run(app, JobRequest(prompt="hello azure"))
    assert job.status is JobStatus.succeeded
    assert fake.models == ["my-gpt-deployment"]
    assert fake.headers[0]["api-key"] == "test-key"
    assert "authorization" not in fake.headers[0]


def test_cost_is_exact_for_known_token_counts():
    m = ModelConfig(provider="p", model_id="m", input_per_mtok=3, output_per_mtok=15, cache_read_per_mtok=0.3)
    assert m.cost(1_000_000, 0) == 3.0
    assert m.cost(1234, 567) == 0.012207  # 1234 × $3 + 567 × $15 per million
    assert m.cost(1000, 100, cache_read_tokens=10_000) == (1000 * 3 + 100 * 15 + 10_000 * 0.3) / 1e6
    assert ModelConfig(provider="p", model_id="m", input_per_mtok=2).cost(0, 0, 500) == 0.001  # no cache price


# ---------------------------------------------------------------- rules and policy


def test_rules_match_on_task_tags_tenant_and_size(make_app, servers):
    _fakes, urls = servers
    rules = [
        {"name": "big-inputs", "match": {"min_input_tokens": 200}, "route": {"model": "haiku"}},
        {"name": "summaries", "match": {"tasks": ["summarize"]}, "route": {"model": "gpt"}},
        {"name": "gold", "match": {"tags": {"tier": "gold"}, "tenants": ["acme"]}, "route": {"model": "nova"}},
    ]
    app = make_app(config(urls, default="offline", routing={"rules": rules, "default": {"model": "offline"}}))
    jobs = run(
        app,
        JobRequest(prompt="short", task="summarize"),
        JobRequest(prompt="short", metadata={"tier": "gold"}),
        JobRequest(prompt="word " * 400, task="summarize"),
        JobRequest(prompt="short"),
    )
    assert [j.route.rule for j in jobs] == ["summaries", "gold", "big-inputs", "default"]
    assert [j.route.model for j in jobs] == ["gpt", "nova", "haiku", "offline"]
    (beta,) = run(app, JobRequest(prompt="short", metadata={"tier": "gold"}), tenant="beta")
    assert beta.route.rule == "default"


def test_policy_denying_a_provider_for_a_tenant(make_app, servers):
    fakes, urls = servers
    rules = [{"name": "all", "route": {"model": "gpt", "fallbacks": {"rate_limited": ["nova", "haiku"]}}}]
    cfg = config(
        urls,
        default="haiku",
        routing={"rules": rules, "default": {"model": "haiku"}},
        tenants={
            "acme": {"policy": {"allowed_providers": ["claude"]}},
            "beta": {"policy": {"allowed_regions": ["eu-west-1"]}},
        },
    )
    app = make_app(cfg)
    (job,) = run(app, JobRequest(prompt="q"))
    assert job.route.model == "haiku"
    assert job.route.rule == "default"
    assert fakes["openai"].models == []
    plan = app.service.router.plan("acme", JobRequest(prompt="q"), input_tokens=1)
    assert any("does not allow provider 'oai'" in n for n in plan.notes)
    (denied,) = run(app, JobRequest(prompt="q"), tenant="beta")  # no model is in eu-west-1
    assert denied.status is JobStatus.failed
    assert denied.provider_calls == 0
    assert denied.error.error_class is ErrorClass.permanent
    assert "region" in denied.error.message


def test_weighted_targets_split_by_weight_and_stay_put_per_job():
    from core.config.worker import Settings

    s = Settings.model_validate(
        {
            "models": {"a": {"provider": "offline", "model_id": "a"}, "b": {"provider": "offline", "model_id": "b"}},
            "routing": {"default": {"targets": [{"model": "a", "weight": 3}, {"model": "b", "weight": 1}]}},
        }
    )
    r = Router(s)
    picks = [r.decide("t", JobRequest(prompt="q"), job_id=f"job_{i}").model for i in range(2000)]
    assert 0.70 < picks.count("a") / 2000 < 0.80
    assert r.decide("t", JobRequest(prompt="q"), job_id="job_7").model == picks[7]


# ---------------------------------------------------------------- typed fallbacks


def fallback_app(make_app, urls, **fallbacks: list[str]):
    return make_app(
        config(
            urls, default="haiku", routing={"default": {"model": "haiku", "max_tokens": 128, "fallbacks": fallbacks}}
        )
    )


def test_rate_limit_fallback_takes_the_next_model_at_once(make_app, servers):
    fakes, urls = servers
    fakes["anthropic"].plan.script = ["429"]
    fakes["anthropic"].plan.retry_after_s = 30
    app = fallback_app(make_app, urls, rate_limited=["gpt"])
    (job,) = run(app, JobRequest(prompt="q"))
    assert job.status is JobStatus.succeeded
    assert job.route.model == "gpt"
    assert [a.model for a in job.attempts] == ["haiku", "gpt"]
    assert "fallback rate_limited" in job.route.reason


@pytest.mark.parametrize(
    "fault,kind,fallback",
    [
        ("529", "rate_limited", "nova"),  # overload
        ("refusal", "content_policy", "gpt"),
        ("400_context", "context_overflow", "nova"),  # the provider says the input is too long
    ],
)
def test_fault_takes_its_typed_fallback(make_app, servers, fault, kind, fallback):
    fakes, urls = servers
    fakes["anthropic"].plan.script = [fault]
    app = fallback_app(make_app, urls, **{kind: [fallback]})
    (job,) = run(app, JobRequest(prompt="q"))
    assert job.status is JobStatus.succeeded
    assert [a.model for a in job.attempts] == ["haiku", fallback]


def test_refusal_without_a_content_policy_fallback_fails_permanently(make_app, servers):
    fakes, urls = servers
    fakes["anthropic"].plan.script = ["refusal"]
    app2 = fallback_app(make_app, urls)
    (refused,) = run(app2, JobRequest(prompt="q"))
    assert refused.status is JobStatus.failed
    assert refused.provider_calls == 1
    assert refused.error.error_class is ErrorClass.permanent
    assert "content policy" in refused.error.message


def test_context_window_too_small_falls_back_before_any_call(make_app, servers):
    fakes, urls = servers
    app = make_app(
        config(
            urls,
            default="tiny",
            routing={"default": {"model": "tiny", "max_tokens": 128, "fallbacks": {"context_overflow": ["gpt"]}}},
        )
    )
    (job,) = run(app, JobRequest(prompt="word " * 400))
    assert job.status is JobStatus.succeeded
    assert fakes["openai"].models == ["gpt-4o-mini"]  # tiny never called
    assert job.provider_calls == 1
    assert "exceed tiny's window of 300" in job.route.reason


def test_context_window_too_small_without_fallback_fails_clearly_and_calls_nothing(make_app, servers):
    fakes, urls = servers
    app = make_app(config(urls, default="tiny"))
    (job,) = run(app, JobRequest(prompt="word " * 400))
    assert job.status is JobStatus.failed
    assert job.provider_calls == 0
    assert fakes["openai"].models == []
    assert "context window of 300" in job.error.message
    assert "context_overflow fallback" in job.error.message


# ---------------------------------------------------------------- templates and guardrails


def test_template_slots_and_version_are_recorded_and_sent(make_app, servers):
    fakes, urls = servers
    fakes["anthropic"].keep_requests = True
    cfg = config(
        urls,
        default="haiku",
        templates={
            "support@2": {
                "system": "You are the support bot.",
                "instructions": "Be brief.",
                "output_instruction": "Answer in at most {max_tokens} tokens.",
            }
        },
    )
    cfg["routing"]["default"]["template"] = "support@2"
    app = make_app(cfg)
    (job,) = run(app, JobRequest(prompt="Where is my order?"))
    sent = fakes["anthropic"].requests[0]
    assert job.prompt_template == "support@2"
    assert sent["system"] == "You are the support bot."
    assert (
        sent["messages"][0]["content"] == "Be brief.\n\nQuestion: Where is my order?\n\nAnswer in at most 128 tokens."
    )


def test_unknown_template_is_a_config_error(make_app):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"routing.default.template: 'nope@1' is not defined"):
        make_app({"routing": {"default": {"model": "offline", "template": "nope@1"}}})


def test_guardrails_before_and_after_the_model(make_app, servers, caplog):
    from core.errors import InputError

    _fakes, urls = servers
    app = make_app(
        config(
            urls,
            default="haiku",
            guardrails={
                "blocked_patterns": [r"\bDROP\s+TABLE\b"],
                "max_input_chars": 500,
                "max_output_chars": 20,
                "redact_pii_in_logs": True,
            },
        )
    )
    with pytest.raises(InputError, match=r"blocked_patterns\[0\]"):
        app.service.submit("acme", JobRequest(prompt="please drop table users"))
    with pytest.raises(InputError, match="max_input_chars"):
        app.service.submit("acme", JobRequest(prompt="x" * 501))
    (job,) = run(app, JobRequest(prompt="A question whose answer will be too long"))
    assert job.status is JobStatus.failed
    assert job.provider_calls == 1
    assert job.result_text is None
    assert "max_output_chars" in job.error.message
    assert job.usage.cost_usd > 0  # paid for, not served
    from core.redaction import redact

    assert redact("mail bob@example.com or call +1 415 555 0100") == "mail [email] or call [phone]"


def test_route_explain_prints_rule_model_fallbacks_and_cost(tmp_path, servers):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    fakes, urls = servers
    cfg = config(
        urls,
        default="offline",
        routing={
            "rules": [
                {
                    "name": "summaries",
                    "match": {"tasks": ["summarize"]},
                    "route": {"model": "gpt", "max_tokens": 100, "fallbacks": {"rate_limited": ["haiku"]}},
                }
            ],
            "default": {"model": "offline"},
        },
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "p.txt").write_text("Summarize the incident report.")
    alto = str(Path(sys.executable).with_name("alto"))
    env = {"PATH": "/usr/bin:/bin", "ALTO_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run(
        [
            alto,
            "--config",
            str(tmp_path / "c.yaml"),
            "route",
            "explain",
            "--task",
            "summarize",
            "--prompt-file",
            str(tmp_path / "p.txt"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    got = json.loads(out)
    assert (got["rule"], got["model"], got["provider"], got["max_tokens"]) == ("summaries", "gpt", "oai", 100)
    assert got["fallbacks"] == {"rate_limited": ["haiku"]}
    est = got["estimated_input_tokens"]
    assert got["estimated_cost_usd"]["max_total"] == round((est * 0.15 + 100 * 0.6) / 1e6, 10)
    assert fakes["openai"].models == []  # nothing was called
