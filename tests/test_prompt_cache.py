"""Prompt caching: the stable prefix marked for Anthropic's cache, cache writes and reads priced apart
and never double-counted as plain input."""

from __future__ import annotations

import asyncio

import pytest

from core.config.worker import ModelConfig
from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus
from tests.conftest import SAMPLES, anthropic_config


def test_cache_writes_and_reads_are_priced_exactly_to_the_micro_dollar():
    m = ModelConfig(
        provider="p",
        model_id="m",
        input_per_mtok=3,
        output_per_mtok=15,
        cache_read_per_mtok=0.3,
        cache_write_per_mtok=3.75,
    )
    # 1,200 plain input, 400 output, 5,000 read from the cache, 2,000 written to it
    assert m.cost(1200, 400, cache_read_tokens=5000, cache_write_tokens=2000) == pytest.approx(
        (1200 * 3 + 400 * 15 + 5000 * 0.3 + 2000 * 3.75) / 1e6, abs=1e-12
    )
    assert m.cost(1200, 400, 5000, 2000) == 0.0186  # $0.0036 + $0.006 + $0.0015 + $0.0075
    plain = ModelConfig(provider="p", model_id="m", input_per_mtok=2)
    assert plain.cost(0, 0, cache_write_tokens=1000) == 0.002  # no write price: the input price


def test_the_stable_prefix_is_cached_and_the_second_job_reads_it_cheaper(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"].update(
        {"cache_min_tokens": 200, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75}
    )
    cfg["retrieval"] = {"top_k": 4}
    app = make_app(cfg)
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")

    def ask(prompt: str):
        job, _ = app.service.submit("acme", JobRequest(prompt=prompt, collection="docs", context_query="retry budget"))
        asyncio.run(run_until_done(app, [job.id], timeout_s=30))
        return app.store.get(job.id)

    first, second = ask("How are retries budgeted?"), ask("Which errors are never retried?")
    assert first.status is JobStatus.succeeded
    assert second.status is JobStatus.succeeded
    assert first.context_chunks == second.context_chunks  # the same context: the same stable prefix
    blocks = fake.requests[0]["messages"][0]["content"]
    assert blocks[0]["cache_control"] == {"type": "ephemeral"}
    assert "<context>" in blocks[0]["text"]
    assert blocks[1]["text"].startswith("Question: How are retries budgeted?")  # the question comes last
    assert first.usage.cache_write_tokens > 0
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    m = app.settings.models["fake-sonnet"]
    for job in (first, second):  # each kind at its own price, none counted again as plain input
        u = job.usage
        assert u.cost_usd == m.cost(u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens)
    assert second.usage.cost_usd < first.usage.cost_usd


def test_a_prefix_under_the_models_minimum_is_not_marked(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"]["cache_min_tokens"] = 100_000
    app = make_app(cfg)
    job, _ = app.service.submit("acme", JobRequest(prompt="short question"))
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    assert isinstance(fake.requests[0]["messages"][0]["content"], str)
    assert app.store.get(job.id).usage.cache_write_tokens == 0
