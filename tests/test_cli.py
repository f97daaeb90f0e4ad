"""The `alto` CLI through its entry point, in subprocesses, on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import SAMPLES

ALTO = str(Path(sys.executable).with_name("alto"))


def run(
    args: list[str], data: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    e.update({"ALTO_DATA_DIR": str(data), **(env or {})})
    p = subprocess.run([ALTO, *args], env=e, capture_output=True, text=True, timeout=60, cwd=data.parent)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_ingest_then_ask_prints_answer_and_sources(tmp_path):
    data = tmp_path / "data"
    out = run(["ingest", str(SAMPLES), "--collection", "docs"], data).stdout
    assert "4 added" in out
    again = run(["ingest", str(SAMPLES), "--collection", "docs"], data).stdout
    assert "0 added, 0 updated, 4 unchanged" in again
    out = run(["ask", "Which errors are never retried?", "--collection", "docs"], data).stdout
    assert "never retried. [retries-md#1]" in out
    assert "Sources:" in out
    assert "[retries-md#1] retries.md" in out


def test_ask_json_is_exactly_the_api_job_view(tmp_path):
    data = tmp_path / "data"
    run(["ingest", str(SAMPLES), "--collection", "docs"], data)
    view = json.loads(run(["ask", "How big can an SQS message be?", "--collection", "docs", "--json"], data).stdout)
    from core.views import JobView

    assert set(view) == set(JobView.model_fields)
    assert view["status"] == "succeeded"
    assert "256 KB" in view["result"]
    listed = run(["jobs", "list", "--json"], data).stdout
    assert json.loads(listed)[0] == view


def test_ask_without_any_config_or_context_says_so(tmp_path):
    p = run(["ask", "What is the airspeed of a swallow?"], tmp_path / "data")
    assert "No relevant passages were retrieved" in p.stdout


def test_config_check_reports_key_and_fix(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  prot: 80\nproviders:\n  c: {type: anthropic, api_key: sk-ant-secret}\n")
    p = run(["--config", str(cfg), "config", "check"], tmp_path / "data", check=False)
    assert p.returncode == 2
    assert "server.prot: unknown key; did you mean 'port'?" in p.stderr
    assert "providers.c.api_key" in p.stderr
    assert "env:" in p.stderr
    assert "sk-ant-secret" not in p.stderr
    missing = run(["config", "check"], tmp_path / "data", env={"ALTO_CONFIG": str(tmp_path / "nope.yaml")}, check=False)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    ok = run(["config", "check"], tmp_path / "data", env={"ALTO_API_KEYS": "a=b"})
    assert "config OK" in ok.stdout
    assert "1 tenants" in ok.stdout
    bad_keys = run(["config", "check"], tmp_path / "data", env={"ALTO_API_KEYS": "justakey"}, check=False)
    assert bad_keys.returncode == 2
    assert "tenant=key" in bad_keys.stderr


def test_hash_key_matches_what_the_api_accepts(tmp_path):
    from core.config import hash_api_key

    assert run(["config", "hash-key", "s3cret"], tmp_path / "d").stdout.strip() == hash_api_key("s3cret")


def test_a_deployment_is_given_its_first_key_as_a_hash(tmp_path):
    """The clouds' first-key path: `alto config hash-key` prints what ALTO_API_KEY_HASHES takes (set by the
    deploy parameter), so no raw key ever sits in a function's environment."""
    from core.config import load_api_settings
    from core.entrypoints.auth import ApiKeys

    digest = run(["config", "hash-key", "first-key"], tmp_path / "d").stdout.strip()
    settings = load_api_settings(None, env={"ALTO_API_KEY_HASHES": f"acme={digest}"})
    assert settings.tenants["acme"].api_keys == [digest]
    assert ApiKeys(settings, None).tenant_for("Bearer first-key") == "acme"  # type: ignore[arg-type]
    bad = run(["config", "check"], tmp_path / "d", env={"ALTO_API_KEY_HASHES": "acme=first-key"}, check=False)
    assert bad.returncode == 2
    assert "tenant=sha256:<64 hex>" in bad.stderr
    assert "first-key" not in bad.stderr


def test_help_lists_commands(tmp_path):
    out = run(["--help"], tmp_path / "d").stdout
    for cmd in ("serve", "ask", "jobs", "dlq", "ingest", "config"):
        assert cmd in out


def test_governance_shows_an_open_circuit_and_reconcile_requeues_a_stranded_job(tmp_path):
    from core.bootstrap import bootstrap
    from core.config import load_settings
    from core.models import ErrorClass, JobRequest

    data = tmp_path / "data"
    app = bootstrap(load_settings(env={"ALTO_DATA_DIR": str(data)}))
    model = app.settings.models["claude-haiku-4-5"]
    for _ in range(app.settings.governance.breaker.failure_threshold):
        app.service.breaker.record(app.service.breaker.check(model, probe_timeout_s=5), ErrorClass.transient)
    out = run(["governance"], data).stdout
    assert "anthropic:claude-haiku-4-5" in out
    assert "circuit open" in out
    assert "reopens in" in out
    rows = {r["deployment"]: r for r in json.loads(run(["governance", "--json"], data).stdout)}
    assert rows["anthropic:claude-haiku-4-5"]["circuit"]["state"] == "open"
    assert rows["offline:offline-extractive"]["circuit"]["state"] == "closed"

    job, _ = app.service.submit("local", JobRequest(prompt="stranded"))
    for d in app.queue.receive():
        app.queue.ack(d)  # the message is gone but the job never ran: as if the platform had lost it
    assert app.queue.depth()["queued"] == 0
    assert app.store.get(job.id).status.value == "queued"
    assert json.loads(run(["reconcile", "--older-than", "0"], data).stdout) == {"requeued": 1, "checked": 1}
    assert app.queue.depth()["queued"] == 1


def test_dlq_replay_of_a_job_that_changed_meanwhile_says_so_without_a_traceback(tmp_path, monkeypatch, capsys):
    from core.bootstrap import bootstrap
    from core.config import load_settings
    from core.embedded.stores import SqliteJobStore
    from core.entrypoints import cli
    from core.entrypoints.cli import common
    from core.models import JobRequest, JobStatus

    data = tmp_path / "data"
    monkeypatch.setenv("ALTO_DATA_DIR", str(data))
    app = bootstrap(load_settings(env={"ALTO_DATA_DIR": str(data)}))
    job, _ = app.service.submit("local", JobRequest(prompt="replay me"))
    assert app.service.ledger.dead_letter(job, "attempt budget exhausted")

    class AnotherWriterFirst:
        """The job store, with another writer (a worker, a second operator) landing first every time."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def update(self, j, *, expected_version):
            other = self.inner.get(j.id)
            assert self.inner.update(other, expected_version=other.version)
            return self.inner.update(j, expected_version=expected_version)

    monkeypatch.setattr(
        common,
        "bootstrap",
        lambda settings: bootstrap(settings, store=AnotherWriterFirst(SqliteJobStore(data / "jobs.db"))),
    )
    assert cli.main(["dlq", "replay", job.id]) == 1
    err = capsys.readouterr().err
    assert f"job {job.id} changed while it was being replayed" in err
    assert "run the replay again" in err
    assert "Traceback" not in err
    assert app.store.get(job.id).status is JobStatus.dead_lettered
    assert app.queue.depth()["queued"] == 1


# ---------------------------------------------------------------- what a new user runs into


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "Traceback" not in p.stdout, p.stderr[-2000:]


def test_an_unset_vault_key_fails_config_check_naming_it(tmp_path):
    cfg = tmp_path / "alto.yaml"
    cfg.write_text("safety: {default: private, policies: {private: {pii: redact}}, vault_key: env:NO_VAULT_KEY_HERE}\n")
    p = run(["--config", str(cfg), "config", "check"], tmp_path / "data", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "safety.vault_key" in p.stderr and "NO_VAULT_KEY_HERE is not set" in p.stderr
    assert (
        run(["--config", str(cfg), "config", "check", "--bundle", "--skip-secrets"], tmp_path / "data").returncode == 0
    )


def test_an_unset_provider_secret_fails_config_check_and_explains_the_failed_job(tmp_path):
    cfg = tmp_path / "alto.yaml"
    cfg.write_text(
        "providers: {c: {type: anthropic, api_key: env:NOT_SET_ANYWHERE}}\n"
        "models: {m: {provider: c, model_id: claude-haiku-4-5}}\nrouting: {default: {model: m}}\n"
    )
    data = tmp_path / "data"
    p = run(["--config", str(cfg), "config", "check"], data, check=False)
    assert p.returncode == 2
    assert "providers.c.api_key" in p.stderr
    assert "NOT_SET_ANYWHERE is not set" in p.stderr
    assert run(["--config", str(cfg), "config", "check", "--skip-secrets"], data).returncode == 0
    out = run(["--config", str(cfg), "ask", "hello", "--json"], data, check=False)
    view = json.loads(out.stdout)
    assert out.returncode == 1
    assert view["status"] == "failed"
    assert view["error"]["error_class"] == "permanent"
    assert "NOT_SET_ANYWHERE is not set" in view["error"]["message"]
    assert view["attempts"] == []


def test_mistakes_on_the_command_line_get_a_message_not_a_traceback(tmp_path):
    data = tmp_path / "data"
    for args, words in (
        (["ask", "  "], "prompt"),
        (["route", "explain", "--prompt-file", "nope.txt"], "cannot read"),
        (["serve", "--port", "99999"], "not a TCP port"),
        (["ingest", str(SAMPLES), "--collection", "../../x", "--publish"], "not a valid name"),
        (["ask", "hi", "--tenant", "a/b"], "not a valid name"),
    ):
        p = run(args, data, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert words in p.stderr, (args, p.stderr)
        no_traceback(p)


def test_piping_a_listing_into_head_is_quiet(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        run(["ask", f"question {i}"], data)
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    p = subprocess.run(
        f"'{ALTO}' jobs list | head -c 10",
        shell=True,
        env={**e, "ALTO_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0
    assert len(p.stdout) == 10
    no_traceback(p)


def test_ask_runs_only_its_own_job_and_says_when_it_stops_waiting(tmp_path):
    import socket

    data = tmp_path / "data"
    from core.bootstrap import bootstrap
    from core.config import load_settings

    other = bootstrap(load_settings(env={"ALTO_DATA_DIR": str(data)})).service.submit(
        "other-tenant", __import__("core.models", fromlist=["JobRequest"]).JobRequest(prompt="not yours")
    )[0]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    cfg = tmp_path / "alto.yaml"
    cfg.write_text(
        f"providers: {{s: {{type: anthropic, api_key: env:K, base_url: 'http://127.0.0.1:{silent.getsockname()[1]}',"
        " timeout_s: 30}}\nmodels: {m: {provider: s, model_id: claude-haiku-4-5}}\nrouting: {default: {model: m}}\n"
    )
    try:
        p = run(["--config", str(cfg), "ask", "hello", "--timeout", "2"], data, env={"K": "x"}, check=False)
    finally:
        silent.close()
    assert p.returncode == 3
    assert "still running after 2 s" in p.stderr or "still queued after 2 s" in p.stderr
    assert "alto jobs show" in p.stderr
    no_traceback(p)
    from core.embedded.stores import SqliteJobStore

    assert SqliteJobStore(data / "jobs.db").get(other.id).status.value == "queued"  # never run by `ask`


def test_config_show_prints_json_alone_and_env_errors_name_the_variable(tmp_path):
    data = tmp_path / "data"
    shown = run(["config", "check", "--show"], data)
    assert json.loads(shown.stdout)["server"]["port"] == 8080
    assert "config OK" in shown.stderr
    bad = run(["config", "check"], data, env={"ALTO_SERVER__PORT": "eighty"}, check=False)
    assert bad.returncode == 2
    assert "ALTO_SERVER__PORT" in bad.stderr
    assert "built-in defaults" not in bad.stderr
    bad_tenant = run(["config", "check"], data, env={"ALTO_API_KEYS": "../x=k"}, check=False)
    assert bad_tenant.returncode == 2
    assert "tenant name '../x' is not valid" in bad_tenant.stderr


def test_serve_reports_a_port_in_use_and_the_port_it_really_bound(tmp_path):
    import socket

    data = tmp_path / "data"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        p = run(["serve", "--port", str(taken.getsockname()[1]), "--workers", "0"], data, check=False)
    finally:
        taken.close()
    assert p.returncode == 2
    assert "cannot listen on" in p.stderr
    assert "serving on" not in p.stderr
    no_traceback(p)
    e = {**{k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}, "ALTO_DATA_DIR": str(data)}
    proc = subprocess.Popen([ALTO, "serve", "--port", "0", "--workers", "0"], env=e, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the port it printed is the port it serves
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answers on the port it printed: {line}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_ingest_says_what_it_passed_over(tmp_path):
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run(["ingest", str(empty)], data, check=False)
    assert p.returncode == 2
    assert "no documents under" in p.stderr
    (docs / "notes.md").write_bytes("# Notes\n\nCaf\xe9 latin-1 here.".encode("latin-1"))
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / "blob.txt").write_bytes(bytes(range(256)) * 4)
    p = run(["ingest", str(docs)], data, check=False)
    assert "1 added" in p.stdout
    assert p.returncode == 1  # a document given could not be read: a script sees it
    assert "skipped image.png: .png is not a document type" in p.stderr
    assert "not ingested: blob.txt: not UTF-8 text" in p.stderr
    assert "1 document(s) not ingested" in p.stderr
    assert "notes.md: 1 bytes are not UTF-8" in p.stderr


def test_ask_runs_a_workflow_over_a_pdf_then_lists_and_cancels(tmp_path):
    from tests.test_rag import make_pdf

    data = tmp_path / "data"
    pdf = tmp_path / "report.pdf"
    make_pdf(pdf, pages=20)
    p = run(["ask", "--workflow", "summarize", "--file", str(pdf), "--json"], data)
    view = json.loads(p.stdout)
    assert view["status"] == "succeeded"
    assert view["workflow"] == "summarize@1"
    assert view["result"].startswith("- Page")
    parts, summary = view["steps"]
    assert parts["children"]["total"] >= 2
    assert summary["children"]["total"] == 1
    assert view["usage"]["calls"] == parts["children"]["total"] + 1
    listed = run(["jobs", "list", "--parent", view["job_id"]], data).stdout.splitlines()[1:]  # under the header row
    assert len(listed) == view["usage"]["calls"]
    assert all(line.startswith(view["job_id"] + "-s") for line in listed)
    top = run(["jobs", "list"], data).stdout.splitlines()[1:]  # the workflow's steps stay under it
    assert len(top) == 1
    assert top[0].startswith(view["job_id"] + " ")
    assert len(run(["jobs", "list", "--with-steps"], data).stdout.splitlines()[1:]) == 1 + len(listed)
    p = run(["jobs", "cancel", view["job_id"]], data, check=False)
    assert p.returncode == 1
    assert "already succeeded" in p.stderr
    assert "Traceback" not in p.stderr
    for bad, says in (
        (["ask", "--workflow", "nope", "x"], "not configured"),
        (["ask", "--workflow", "summarize"], "--file PATH or as the text"),
        (["ask", "--file", str(pdf)], "--workflow NAME"),
    ):
        p = run(bad, data, check=False)
        assert p.returncode == 2
        assert says in p.stderr
        assert "Traceback" not in p.stderr
