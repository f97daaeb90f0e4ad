"""The first steps past the demo, as a new user takes them: a real model configured where its SDK is not
installed (the state `make demo` leaves), mistakes in the environment, and a worker loop that crashes.
Real processes through the `alto` entry point, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from core.providers.sdks import install_command
from tests.conftest import serve_until_healthy, wait_terminal

ALTO = str(Path(sys.executable).with_name("alto"))
NO_ANTHROPIC = "import sys\nsys.modules['anthropic'] = None  # as in a venv with the core alone (make demo)\n"


def env_without_anthropic(tmp_path: Path) -> dict[str, str]:
    """The user's environment, with the anthropic SDK not importable (a sitecustomize hides it)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(NO_ANTHROPIC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    env.update(
        PYTHONPATH=str(shim),
        ALTO_DATA_DIR=str(tmp_path / "data"),
        ALTO_API_KEYS="acme=k1",
        ANTHROPIC_API_KEY="sk-ant-not-used",
        ALTO_CONFIG=str(tmp_path / "altostratus.yaml"),
    )
    (tmp_path / "altostratus.yaml").write_text(
        yaml.safe_dump(
            {
                "routing": {
                    "default": {"model": "claude-haiku-4-5", "max_tokens": 256},
                    "rules": [{"name": "offline", "match": {"tasks": ["offline"]}, "route": {"model": "offline"}}],
                },
                "models": {"claude-haiku-4-5": {"provider": "anthropic", "model_id": "claude-haiku-4-5"}},
            }
        )
    )
    return env


def test_config_check_names_the_missing_extra_and_the_pip_command(tmp_path):
    env = env_without_anthropic(tmp_path)
    r = subprocess.run([ALTO, "config", "check"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "providers.anthropic (type anthropic) needs the Python package 'anthropic'" in r.stderr
    assert install_command("anthropic") in r.stderr
    assert "Traceback" not in r.stderr


def test_a_provider_that_cannot_be_built_fails_its_jobs_and_the_worker_goes_on(tmp_path):
    """Before: the worker tasks died on ModuleNotFoundError with nothing logged, /healthz said ok, and every
    job (offline ones too) stayed queued for ever."""
    env = env_without_anthropic(tmp_path)
    proc, url, health = serve_until_healthy(ALTO, env, tmp_path, workers=1)
    try:
        assert health.json() == {"status": "ok", "workers": 1}
        h = {"Authorization": "Bearer k1"}
        with httpx.Client(base_url=url, headers=h) as c:
            real = c.post("/v1/jobs", json={"prompt": "What is a visibility timeout?"}).json()
            offline = c.post("/v1/jobs", json={"prompt": "What is a visibility timeout?", "task": "offline"}).json()
            failed = wait_terminal(c, real["status_url"], h)
            done = wait_terminal(c, offline["status_url"], h)
        assert failed["status"] == "failed"
        assert install_command("anthropic") in failed["error"]["message"]
        assert failed["attempts"] == []  # nothing was paid for
        assert done["status"] == "succeeded"  # the worker kept going
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert '"event": "provider.unavailable"' in err  # said once, at start, not only per job


def test_a_worker_loop_that_crashes_is_logged_restarted_and_a_persistent_one_stops_the_service(make_app, capfd):
    from core.entrypoints.local import CRASHES_TOLERATED, LocalService, WorkerPool

    app = make_app()
    runs: list[float] = []
    original = WorkerPool.run

    async def crashing(self, stop):
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("the queue file was corrupted")
        return await original(self, stop) if len(runs) == 2 else _raise()

    def _raise():
        raise RuntimeError("still corrupted")

    async def scenario() -> tuple[list, list]:
        service = LocalService(app, workers=1)
        service.backoff_s = lambda crashes: 0.05
        stopped: list[bool] = []
        service.on_failed = lambda: stopped.append(True)
        WorkerPool.run = crashing  # type: ignore[method-assign]
        try:
            await service.start()
            await asyncio.sleep(0.3)
            health = [service.health()]  # restarted after the first crash: running again
            service.pools[0].notify()
            service.stop.set()  # the second run returns normally: the service stops cleanly
            await asyncio.gather(*service.tasks)
            again = LocalService(app, workers=1)
            again.backoff_s = lambda crashes: 0.01
            again.on_failed = lambda: stopped.append(True)
            runs.append(0.0)  # every run from here crashes
            await again.start()
            await asyncio.wait_for(asyncio.gather(*again.tasks), timeout=10)
            health.append(again.health())
            return health, stopped
        finally:
            WorkerPool.run = original  # type: ignore[method-assign]

    health, stopped = asyncio.run(scenario())
    assert health[0] == (200, {"status": "ok", "workers": 1})
    status, body = health[1]
    assert status == 503
    assert f"crashed {CRASHES_TOLERATED} times in a minute" in body["error"]
    assert stopped == [True]
    assert len(runs) == 3 + CRASHES_TOLERATED  # restarted after each crash, until it gave up
    logged = capfd.readouterr()
    assert (logged.out + logged.err).count('"event": "worker.crashed"') == 1 + CRASHES_TOLERATED
    assert '"event": "worker.gave_up"' in logged.out + logged.err


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [("ALTO_DATA_DIR", "FILE", "is a file, not a folder"), ("ALTO_URL", "not-a-url", "ALTO_URL")],
)
def test_environment_mistakes_are_named_without_a_traceback(tmp_path, variable, value, words):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    if value == "FILE":
        (tmp_path / "a-file").write_text("x")
        value = str(tmp_path / "a-file")
    env[variable] = value
    r = subprocess.run([ALTO, "jobs", "list"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert words in r.stderr


def test_a_mistyped_key_inside_a_list_gets_a_did_you_mean(tmp_path):
    """Before: `routing.rules.0.mtach: unknown key; valid keys here:` and an empty list."""
    (tmp_path / "altostratus.yaml").write_text(
        yaml.safe_dump(
            {
                "routing": {
                    "default": {"model": "offline"},
                    "rules": [{"name": "x", "mtach": {"tasks": ["a"]}, "route": {"model": "offline"}}],
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    r = subprocess.run([ALTO, "config", "check"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "routing.rules.0.mtach: unknown key; did you mean 'match'?" in r.stderr, r.stderr


def test_ask_returns_as_soon_as_the_worker_that_won_its_claim_finishes(make_app, fake_anthropic):
    """`alto ask` next to `alto serve` on one data folder: the server's worker claimed the job first. Before,
    ask slept out the whole lease ("lost the claim race ... trying again in 89 s") after a 6 s answer."""
    from core.entrypoints.local import WorkerPool, run_inline
    from core.models import JobRequest
    from tests.conftest import anthropic_config

    fake, url = fake_anthropic
    fake.plan.latency_s = 2.0
    server, asker = make_app(anthropic_config(url)), make_app(anthropic_config(url))
    job, _ = asker.service.submit("acme", JobRequest(prompt="What is a visibility timeout?"))

    async def scenario() -> tuple[object, float, list[str]]:
        stop = asyncio.Event()
        pool = WorkerPool(server, concurrency=1)
        running = asyncio.create_task(pool.run(stop))
        while not server.store.get(job.id).attempts:  # the server's worker holds the claim
            await asyncio.sleep(0.02)
        started, said = time.monotonic(), []
        done = await run_inline(asker, job.id, timeout_s=60, say=said.append)
        took = time.monotonic() - started
        stop.set()
        pool.notify()
        await running
        await server.providers.aclose()
        return done, took, said

    done, took, said = asyncio.run(scenario())
    assert done.status.value == "succeeded", done
    assert len(done.attempts) == 1, done
    assert took < 2.0 + 1.5, f"ask took {took:.1f} s to see a 2 s answer (lease {asker.settings.governance.lease_s} s)"
    assert fake.stats["ok"] == 1, said
    assert any("leased by another worker; watching it" in s for s in said), said


def _alto(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    r = subprocess.run(
        [ALTO, *args],
        env={**base, "ALTO_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.parametrize(
    ("args", "env", "status", "words"),
    [
        (
            ["jobs", "list", "--limt", "3"],
            {},
            2,
            "alto jobs list: error: unrecognized arguments: --limt 3; did you mean --limit?",
        ),
        (["config", "chek"], {}, 2, "did you mean check?"),
        (["jobs", "list", "--limit", "-5"], {}, 2, "'-5' is not a count"),
        (["ask", "hi", "--timeout", "-1"], {}, 2, "'-1' is not a number of seconds"),
        (["jobs", "wait", "job_x", "--timeout", "nan"], {}, 2, "'nan' is not a number of seconds"),
        (
            ["ingest", "x"],
            {"ALTO_URL": "http://127.0.0.1:9"},
            2,
            "alto: ingest works on the local data folder and configuration, not over ALTO_URL; unset ALTO_URL",
        ),
        (
            ["jobs", "list"],
            {"ALTO_API_KEYS": "change-me"},
            2,
            "ALTO_API_KEYS: entry 1 (value not shown: it may be a key)",
        ),
        (["dlq", "replay"], {}, 2, "give the job ids to replay, or --all"),
    ],
)
def test_cli_mistakes_are_named_with_the_fix(tmp_path, args, env, status, words):
    r = _alto(tmp_path, *args, **env)
    assert r.returncode == status, r.stderr
    assert words in r.stderr, r.stderr
    assert "alto: alto" not in r.stderr
    assert "change-me" not in r.stderr


def test_global_options_work_after_the_command(tmp_path):
    (tmp_path / "elsewhere.yaml").write_text(yaml.safe_dump({"routing": {"default": {"model": "offline"}}}))
    r = _alto(tmp_path, "config", "check", "--config", str(tmp_path / "elsewhere.yaml"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("config OK"), r.stderr


def test_ingest_of_a_broken_pdf_says_why_and_fails(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body")
    r = _alto(tmp_path, "ingest", str(tmp_path / "broken.pdf"))
    assert r.returncode == 1
    assert "broken.pdf: not a readable PDF" in r.stderr
    assert "1 document(s) not ingested" in r.stderr
    assert "EOF marker" not in r.stderr  # pypdf's own logging no longer leaks


def test_ask_json_stream_prints_only_json_on_stdout(tmp_path):
    r = _alto(tmp_path, "ask", "What is a visibility timeout?", "--json", "--stream")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)  # the streamed text went to stderr
    assert view["status"] == "succeeded"
    assert view["result"].strip()
    assert view["result"][:40] in r.stderr


def test_ctrl_c_in_ask_says_the_job_stays_and_how_to_follow_or_stop_it(tmp_path, fake_anthropic):
    fake, url = fake_anthropic
    fake.plan.latency_s = 30.0
    (tmp_path / "altostratus.yaml").write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 60}
                },
                "models": {"slow": {"provider": "fake", "model_id": "claude-haiku-4-5"}},
                "routing": {"default": {"model": "slow", "max_tokens": 64}},
            }
        )
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    proc = subprocess.Popen(
        [ALTO, "ask", "What is a visibility timeout?"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **base,
            "ALTO_DATA_DIR": str(tmp_path / "data"),
            "FAKE_KEY": "test-key",
            "ALTO_CONFIG": str(tmp_path / "altostratus.yaml"),
        },
    )
    deadline = time.monotonic() + 30
    while fake.stats["calls"] == 0:  # the call is in flight
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    m = re.search(
        r"alto: job (job_\w+): interrupted; the job stays (\w+) for `alto serve` workers: follow it with "
        r"`alto jobs wait \1`, or stop it with `alto jobs cancel \1`",
        err,
    )
    assert m is not None, err


def test_the_package_declares_its_licence_the_current_way():
    """A TOML-table `license` made setuptools warn on every install that it is deprecated (PEP 639)."""
    from importlib.metadata import metadata

    meta = metadata("altostratus")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert (Path(__file__).parents[1] / "LICENSE").read_text().lstrip().startswith("Apache License")
