"""`alto --url URL --api-key env:NAME ...` against the local service on a loopback port, through the CLI's
entry point: every remote command, the same output shapes as local, and the mistakes a user can make."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread, free_port
from tests.conftest import KEYS, anthropic_config, wait_terminal

ALTO = str(Path(sys.executable).with_name("alto"))


def alto(url: str | None, *args: str, key_env: str = "ACME_KEY", check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    env.update(ACME_KEY=KEYS["acme"], WRONG_KEY="nope", ALTO_DATA_DIR="/nonexistent/never-used")
    cmd = [ALTO] + (["--url", url, "--api-key", f"env:{key_env}"] if url else []) + list(args)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    if check:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def test_every_remote_command_against_the_service(live):
    fake = FakeAnthropic(FaultPlan(script=["ok", "500", "ok"]))
    with ServerThread(fake) as srv:
        _app, url = live(anthropic_config(srv.url, max_attempts=1, in_process_wait_s=0))
        asked = alto(url, "ask", "What is a visibility timeout?", "--task", "support")
        assert asked.stdout.startswith("Fake answer")
        assert "fake/fake-sonnet" in asked.stdout
        listed = alto(url, "jobs", "list").stdout.splitlines()
        assert listed[0].split() == [
            "JOB",
            "STATUS",
            "TENANT",
            "TASK",
            "MODEL",
            "CALLS",
            "COST",
            "$",
            "CREATED",
            "WORKFLOW",
        ]
        first = listed[1].split()
        assert first[1:5] == ["succeeded", "acme", "support", "fake-sonnet"]
        assert "ago" in listed[1]
        [view] = json.loads(alto(url, "jobs", "list", "--json").stdout)
        assert view["job_id"] == first[0]
        assert view["status"] == "succeeded"
        assert json.loads(alto(url, "jobs", "show", first[0]).stdout)["result"].startswith("Fake answer")

        h = {"Authorization": f"Bearer {KEYS['acme']}"}
        with httpx.Client(base_url=url, headers=h) as c:
            dead_id = c.post("/v1/jobs", json={"prompt": "meets a 500"}).json()["job_id"]
            assert wait_terminal(c, f"/v1/jobs/{dead_id}", h)["status"] == "dead_lettered"
        waited = alto(url, "jobs", "wait", dead_id, check=False)
        assert waited.returncode == 1
        assert f"job {dead_id} is dead_lettered" in waited.stdout
        dlq = alto(url, "dlq", "list").stdout
        assert dlq.splitlines()[0].split()[:3] == ["JOB", "TENANT", "CALLS"]
        assert dead_id in dlq
        assert "attempt budget exhausted" in dlq
        assert json.loads(alto(url, "dlq", "show", dead_id).stdout)["error"]["error_class"] == "transient"
        assert f"replayed {dead_id}" in alto(url, "dlq", "replay", dead_id).stdout
        assert alto(url, "jobs", "wait", dead_id, "--json").returncode == 0

        costs = alto(url, "costs", "--by", "model").stdout.splitlines()
        assert costs[0].split()[:2] == ["model", "calls"]
        assert costs[-1].startswith("total")
        rows = json.loads(alto(url, "costs", "--by", "model", "--json").stdout)
        assert [r["model"] for r in rows] == ["fake-sonnet"]
        assert rows[0]["calls"] == 2  # the first ask and the replay
        cancel = alto(url, "jobs", "cancel", first[0], check=False)
        assert cancel.returncode == 1
        assert "already succeeded" in cancel.stderr


def test_remote_ask_streams_the_answer(live):
    fake = FakeAnthropic(FaultPlan(stream_tokens=40, stream_tps=200))
    with ServerThread(fake) as srv:
        _, url = live(anthropic_config(srv.url))
        p = alto(url, "ask", "Tell me about retries", "--stream")
        lines = p.stdout.splitlines()
        assert lines[0].startswith("Fake answer")
        assert "job_" in p.stdout


def test_remote_mistakes_are_explained_without_a_traceback(live):
    _, url = live()
    wrong = alto(url, "jobs", "list", key_env="WRONG_KEY", check=False)
    assert wrong.returncode == 2
    assert "401" in wrong.stderr
    assert "API key" in wrong.stderr
    gone = alto(f"http://127.0.0.1:{free_port()}", "jobs", "list", check=False)
    assert gone.returncode == 2
    assert "cannot reach" in gone.stderr
    plain = subprocess.run(
        [ALTO, "--url", url, "--api-key", "secret-in-the-clear", "jobs", "list"], capture_output=True, text=True
    )
    assert plain.returncode == 2
    assert "env:NAME or file:PATH" in plain.stderr
    local_only = alto(url, "ingest", "samples/docs", check=False)
    assert local_only.returncode == 2
    assert "drop --url" in local_only.stderr
    missing = alto(url, "jobs", "show", "job_nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "alto: job job_nope not found\n"


def test_local_and_remote_agree_on_exit_status_and_words(live, tmp_path):
    """Before: a missing job was exit 1 locally and 2 over --url, cancelling a finished job 1 and 2, and an
    empty DLQ printed nothing locally and "no jobs" remotely."""
    _app, url = live()
    h = {"Authorization": f"Bearer {KEYS['acme']}"}
    with httpx.Client(base_url=url, headers=h) as c:
        done = c.post("/v1/jobs", json={"prompt": "What is a visibility timeout?"}).json()["job_id"]
        assert wait_terminal(c, f"/v1/jobs/{done}", h)["status"] == "succeeded"
    local_env = {"ALTO_DATA_DIR": str(tmp_path / "data"), "ALTO_CONFIG": str(tmp_path / "altostratus.yaml")}
    cases = {
        ("jobs", "show", "job_nope"): (1, "", "alto: job job_nope not found\n"),
        ("jobs", "wait", "job_nope"): (1, "", "alto: job job_nope not found\n"),
        ("jobs", "cancel", done): (
            1,
            "",
            f"alto: job {done} is already succeeded; only queued or running jobs can be cancelled\n",
        ),
        ("jobs", "list", "--status", "failed"): (0, "", "no jobs\n"),
        ("dlq", "list"): (0, "", "no dead-lettered jobs\n"),
        ("dlq", "list", "--json"): (0, "[]\n", ""),
        ("dlq", "replay", "--all"): (0, "", "no dead-lettered jobs: nothing to replay\n"),
    }
    for args, expected in cases.items():
        local = subprocess.run(
            [ALTO, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}, **local_env},
        )
        remote = alto(url, *args, check=False)
        assert (local.returncode, local.stdout, local.stderr) == expected, args
        assert (remote.returncode, remote.stdout, remote.stderr) == expected, args


def test_version_help_and_completion():
    assert alto(None, "--version").stdout.strip().startswith("alto ")
    helped = alto(None, "jobs", "wait", "--help").stdout
    assert "--timeout" in helped
    assert "seconds to wait" in helped
    script = alto(None, "completion", "bash").stdout
    assert "complete -F _alto alto" in script
    done = subprocess.run(
        ["bash", "-c", script + '\nCOMP_WORDS=(alto dlq r); COMP_CWORD=2; _alto; echo "${COMPREPLY[*]}"'],
        capture_output=True,
        text=True,
    )
    assert done.stdout.split() == ["replay"]


def test_replay_and_provider_state_endpoints_are_tenant_scoped_and_explained(live):
    fake = FakeAnthropic(FaultPlan(script=["400"]))
    with ServerThread(fake) as srv:
        cfg = anthropic_config(srv.url)
        cfg["models"]["fake-sonnet"]["limits"] = {"requests_per_minute": 60}
        _, url = live(cfg)
        acme, beta = ({"Authorization": f"Bearer {KEYS[t]}"} for t in ("acme", "beta"))
        with httpx.Client(base_url=url) as c:
            failed = c.post("/v1/jobs", json={"prompt": "refused with a 400"}, headers=acme).json()["job_id"]
            assert wait_terminal(c, f"/v1/jobs/{failed}", acme)["status"] == "failed"
            assert c.post(f"/v1/jobs/{failed}/replay", headers=beta).status_code == 404  # another tenant's
            replayed = c.post(f"/v1/jobs/{failed}/replay", headers=acme)
            assert replayed.status_code == 200
            assert replayed.json()["status"] == "queued"
            assert wait_terminal(c, f"/v1/jobs/{failed}", acme)["status"] == "succeeded"
            again = c.post(f"/v1/jobs/{failed}/replay", headers=acme)
            assert again.status_code == 409
            assert "only dead_lettered, failed or cancelled" in again.json()["error"]["message"]
            models = {m["model"]: m for m in c.get("/v1/providers", headers=acme).json()["models"]}
        fake_model = models["fake-sonnet"]
        assert fake_model["circuit"]["state"] == "closed"
        assert fake_model["provider"] == "fake"
        assert fake_model["rate"]["capacity"]["requests"] > 0
        assert (
            fake_model["rate"]["available"]["requests"] < fake_model["rate"]["capacity"]["requests"]
        )  # two calls taken
        assert models["offline"]["rate"]["limits"] == {}


def test_every_option_and_argument_has_help_text():
    import argparse

    from core.entrypoints.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "alto")
    assert missing == []


def test_listings_page_with_a_cursor_locally_and_over_url(live, tmp_path):
    import re

    _app, url = live()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['acme']}"}) as c:
        ids = [c.post("/v1/jobs", json={"prompt": f"q{n}"}).json()["job_id"] for n in range(5)][::-1]
    local_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")},
        "ALTO_DATA_DIR": str(tmp_path / "data"),
        "ALTO_CONFIG": str(tmp_path / "altostratus.yaml"),
    }

    def local(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ALTO, *args], capture_output=True, text=True, timeout=60, env=local_env)

    for run in (local, lambda *a: alto(url, *a)):
        seen, cursor = [], None
        while True:
            p = run("jobs", "list", "--limit", "2", "--json", *(["--cursor", cursor] if cursor else []))
            seen += [v["job_id"] for v in json.loads(p.stdout)]
            m = re.search(r"with --cursor (\S+)", p.stderr)
            if m is None:
                break
            cursor = m.group(1)
        assert seen == ids
    remote_many = alto(url, "jobs", "list", "--limit", "4").stdout.splitlines()
    assert len(remote_many) == 5  # the header and four rows
