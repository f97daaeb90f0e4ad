"""The usage ledger: every billed call summed per tenant and day, reported by `GET /v1/usage` (the
caller's tenant only) and `alto costs`, with what the prompt and response caches saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import KEYS, anthropic_config, wait_terminal

ACME = {"Authorization": f"Bearer {KEYS['acme']}"}
BETA = {"Authorization": f"Bearer {KEYS['beta']}"}


def test_usage_sums_every_billed_call_and_the_response_cache_saving(live, fake_anthropic):
    fake, url = fake_anthropic
    fake.plan.script = ["500"]  # the first call fails unbilled, its retry is billed
    _app, base = live(anthropic_config(url, cache={"enabled": True}, in_process_wait_s=0.05))
    with httpx.Client(base_url=base, headers=ACME, timeout=30) as c:
        views = []
        for prompt in ("what is a lease?", "what is a lease?", "what is a queue?"):
            job_id = c.post("/v1/jobs", json={"prompt": prompt, "task": "faq"}).json()["job_id"]
            views.append(wait_terminal(c, f"/v1/jobs/{job_id}", ACME))
        assert all(v["status"] == "succeeded" for v in views)
        assert views[1]["usage"]["cached"]
        rows = c.get("/v1/usage", params={"group_by": "task,model"}).json()["rows"]
        assert c.get("/v1/usage", headers=BETA).json()["rows"] == []  # another tenant sees none of it
        assert c.get("/v1/usage", params={"group_by": "tenant"}).status_code == 422
        assert c.get("/v1/usage", params={"since": "yesterday"}).status_code == 422
    (row,) = rows
    assert (row["task"], row["model"]) == ("faq", "fake-sonnet")
    assert row["calls"] == 2 == fake.stats["calls"] - 1  # two billed calls; the 500 and the cache hit billed nothing
    assert row["cost_usd"] == pytest.approx(sum(v["usage"]["cost_usd"] for v in views), abs=1e-9)
    assert row["input_tokens"] == sum(v["usage"]["input_tokens"] for v in views)
    assert row["saved_response_cache_usd"] == pytest.approx(views[0]["usage"]["cost_usd"], abs=1e-9)


def test_alto_costs_reports_the_same_rows(tmp_path: Path, fake_anthropic):
    _fake, url = fake_anthropic
    cfg = tmp_path / "altostratus.yaml"
    cfg.write_text(yaml.safe_dump(anthropic_config(url)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_DATA_DIR": str(tmp_path / "d"),
        "ALTO_CONFIG": str(cfg),
        "FAKE_ANTHROPIC_KEY": "test-key",
        "ALTO_API_KEYS": "acme=k1,beta=k2",
    }
    alto = str(Path(sys.executable).with_name("alto"))
    for tenant in ("acme", "beta", "acme"):
        p = subprocess.run(
            [alto, "ask", f"question for {tenant}", "--tenant", tenant, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
    p = subprocess.run([alto, "costs", "--by", "tenant", "--json"], env=env, capture_output=True, text=True, timeout=60)
    rows = {r["tenant"]: r for r in json.loads(p.stdout)}
    assert rows["acme"]["calls"] == 2
    assert rows["beta"]["calls"] == 1
    assert rows["acme"]["cost_usd"] > rows["beta"]["cost_usd"]
    p = subprocess.run([alto, "costs", "--by", "tenant,day"], env=env, capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["tenant", "day", "calls"]
    assert lines[-1].startswith("total")
    assert " 3 " in lines[-1]


def test_the_embedded_store_sums_in_one_statement_exactly_as_the_generic_path(tmp_path):
    """SQLite adds inside the record with its JSON functions (no read, no retry); the sums, their types,
    the other groups and the expiry behave as the read-and-compare-and-set path on any store."""
    import random

    from core.embedded.stores import SqliteStateStore
    from core.governance.state import add_counts
    from core.ports import CountingState

    now = [1000.0]
    store = SqliteStateStore(tmp_path / "jobs.db", storage_thread=False, clock=lambda: now[0])
    assert isinstance(store, CountingState)
    rng = random.Random(7)
    for _i in range(200):
        group = rng.choice(["-|m|online", "summary|m|batch", 'odd"name|m|online'])  # the last: the generic way
        deltas = {
            "calls": 1,
            "input_tokens": rng.randint(0, 5000),
            "cost_usd": rng.random() / 1000,
            "saved_batch_usd": 0.0,
        }
        store.add_counts("native", group, deltas, ttl_s=60)
        add_counts(store, "generic", group, deltas, ttl_s=60)
    native, generic = store.get("native"), store.get("generic")
    assert native.value == generic.value
    assert len(native.value["groups"]) == 3
    row = native.value["groups"]["-|m|online"]
    assert isinstance(row["calls"], int)
    assert isinstance(row["input_tokens"], int)
    assert isinstance(row["cost_usd"], float)
    assert native.version == generic.version == 200  # one version per add, whichever way it was made
    now[0] += 61  # expired: the next add starts from nothing, as on every store
    store.add_counts("native", "-|m|online", {"calls": 1, "cost_usd": 0.5}, ttl_s=60)
    assert store.get("native").value == {"groups": {"-|m|online": {"calls": 1, "cost_usd": 0.5}}}
    # a zero adds nothing (absent reads as 0) and leaves the other counts alone, on both paths
    for add in (store.add_counts, lambda *a, **k: add_counts(store, *a, **k)):
        add("native", "-|m|online", {"calls": 0, "input_tokens": 7, "cost_usd": 0.0}, ttl_s=60)
    assert store.get("native").value == {"groups": {"-|m|online": {"calls": 1, "cost_usd": 0.5, "input_tokens": 14}}}
    version = store.get("native").version
    store.add_counts("native", "-|m|online", {"calls": 0, "cost_usd": 0.0}, ttl_s=60)
    assert store.get("native").version == version  # nothing to add: no write at all


def test_counts_added_in_one_group_are_summed_and_written_once_yet_read_back_within_it(tmp_path):
    """In a group commit (here `at_once`, as a loop turn's group runs), adds to one record are summed in
    the store and written as one upsert when the group commits; a read of that record inside the group
    writes them first, so it sees them; another connection sees nothing before the commit."""
    import sqlite3

    from core.embedded.sqlite import SqliteDb
    from core.embedded.storage_thread import storage_thread
    from core.embedded.stores import SqliteStateStore

    path = tmp_path / "jobs.db"
    store = SqliteStateStore(path)
    upserts: list[str] = []
    SqliteDb.connect(str(path)).set_trace_callback(
        lambda sql: upserts.append(sql) if sql.startswith("INSERT INTO state") else None
    )
    seen: dict[str, object] = {}

    def turn() -> None:
        for i in range(3):
            store.add_counts("usage:a", "-|m|online", {"calls": 1, "input_tokens": 10 + i, "cost_usd": 0.25}, ttl_s=60)
            store.add_counts("usage:b", "-|m|online", {"calls": 1}, ttl_s=60)
        seen["in_group"] = store.get("usage:a").value  # flushes usage:a's pending sums first
        store.add_counts("usage:a", "-|m|online", {"calls": 1, "input_tokens": 1}, ttl_s=60)
        with sqlite3.connect(path) as other:
            seen["outside"] = other.execute("SELECT COUNT(*) FROM state").fetchone()[0]

    storage_thread().at_once(turn)
    assert seen["in_group"] == {"groups": {"-|m|online": {"calls": 3, "input_tokens": 33, "cost_usd": 0.75}}}
    assert seen["outside"] == 0
    assert store.get("usage:a").value == {"groups": {"-|m|online": {"calls": 4, "input_tokens": 34, "cost_usd": 0.75}}}
    assert store.get("usage:b").value == {"groups": {"-|m|online": {"calls": 3}}}
    assert len(upserts) == 3  # usage:a before the read and at the commit, usage:b at the commit (not 7)


def test_outcome_percentiles_interpolate_inside_their_bucket():
    from core.governance.outcomes import BOUNDS, quantile

    counts = [0.0] * len(BOUNDS)
    counts[BOUNDS.index(2)] = 10  # ten jobs between 1 s and 2 s
    assert quantile(0.5, counts) == 1.5
    assert quantile(0.9, counts) == 1.9
    counts[-1] = 90  # and ninety past the last bound: the open bucket answers with its lower bound
    assert quantile(0.99, counts) == 3600.0
    assert quantile(0.05, counts) == 1.5
    assert quantile(0.5, [0.0] * len(BOUNDS)) is None
