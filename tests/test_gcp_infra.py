"""infra/gcp checked offline: `terraform fmt -check` (providers can't be downloaded here, so no
init/validate), a strict HCL parse, and consistency with the code: every function's entry point and
event type matches adapters/gcp/main.py, the topics match what the functions are configured with."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra" / "gcp"
MAIN = ROOT / "adapters" / "gcp" / "main.py"


def _plain(v):
    """python-hcl2 keeps HCL's quotes on keys and literal strings; drop them and its markers."""
    if isinstance(v, dict):
        return {k.strip('"'): _plain(x) for k, x in v.items() if not k.startswith("__")}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def parsed() -> dict:
    import hcl2

    out: dict = {}
    for tf in sorted(INFRA.glob("*.tf")):
        with open(tf) as f:
            for block, items in _plain(hcl2.load(f)).items():  # raises on anything that isn't valid HCL2
                out.setdefault(block, []).extend(items)
    return out


def resources(kind: str) -> dict[str, dict]:
    return {name: body for r in parsed().get("resource", []) for k, named in r.items() if k == kind
            for name, body in named.items()}


def entry_points() -> dict[str, str]:
    """Functions in main.py by their functions-framework decorator: name -> http | cloud_event."""
    out = {}
    for node in ast.parse(MAIN.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if isinstance(d, ast.Attribute) and isinstance(d.value, ast.Name) and d.value.id == "functions_framework":
                    out[node.name] = d.attr
    return out


def test_terraform_fmt_check():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH (only `fmt` is needed; it runs offline)")
    r = subprocess.run([terraform, "fmt", "-check", "-diff", "-recursive", str(INFRA)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hcl_parses_and_every_function_matches_main_py():
    functions = resources("google_cloudfunctions2_function")
    kinds = entry_points()
    assert set(kinds) == {"api", "worker", "dead_letter", "reconcile"}
    assert {f["build_config"][0]["entry_point"] for f in functions.values()} == set(kinds)
    for fn in functions.values():
        entry = fn["build_config"][0]["entry_point"]
        assert fn["build_config"][0]["runtime"] == "python312"
        triggers = fn.get("event_trigger", [])
        if kinds[entry] == "cloud_event":
            (t,) = triggers
            assert t["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
            assert t["retry_policy"] == "RETRY_POLICY_RETRY"
        else:
            assert not triggers, f"{entry} is an HTTP function in main.py"
        assert "google_service_account.fn" in fn["service_config"][0]["service_account_email"]


def test_topics_and_environment_match_the_adapter_configuration():
    functions = resources("google_cloudfunctions2_function")
    topics = resources("google_pubsub_topic")
    assert set(topics) == {"jobs", "dead"}
    worker = functions["worker"]["event_trigger"][0]
    dead = functions["dead_letter"]["event_trigger"][0]
    assert "google_pubsub_topic.jobs.id" in worker["pubsub_topic"] and "google_pubsub_topic.dead.id" in dead["pubsub_topic"]
    local_env = next(block["env"] for block in parsed()["locals"] if "env" in block)
    from adapters.gcp.app import REQUIRED

    assert set(REQUIRED) <= set(local_env) and "ALTO_CONFIG" in local_env and "ALTO_GCP_PROJECT" in local_env
    assert "local.topic" in local_env["ALTO_TOPIC"]
    script = (INFRA / "deploy.sh").read_text()
    assert "--gen2" in script and "--runtime=python312" in script and "--retry" in script
    for entry in entry_points():
        assert f"--entry-point={entry}" in script
    assert 'TOPIC="$NAME-jobs"' in script and 'DEAD_TOPIC="$NAME-jobs-dead"' in script


def test_least_privilege_and_the_dead_letter_policy():
    secret_grants = resources("google_secret_manager_secret_iam_member")
    assert [g["member"] for g in secret_grants.values()] == ['serviceAccount:${google_service_account.fn["worker"].email}']
    project_roles = next(block["roles"] for block in parsed()["locals"] if "roles" in block)
    assert set(project_roles) == {"api", "worker", "dead-letter", "reconcile"}
    assert {r for rs in project_roles.values() for r in rs} == {"roles/datastore.user"}  # nothing broader
    assert resources("google_project_iam_member")["fn"]["role"] == "${each.value.role}"
    assert "max_delivery_attempts" in str(resources("terraform_data")["worker_dead_letter_policy"])
    assert "dead-letter-topic" in (INFRA / "deploy.sh").read_text()


def test_deploy_script_checks_the_config_then_builds_the_function_source(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {provider: nowhere, model_id: x}\n")
    r = subprocess.run(["bash", str(INFRA / "deploy.sh"), "--build-only"], capture_output=True, text=True,
                       env={**env, "CONFIG": str(bad)})
    assert r.returncode == 1 and "models.m.provider: 'nowhere' is not defined under `providers`" in r.stderr
    assert not (INFRA / "build").exists()
    r = subprocess.run(["bash", str(INFRA / "deploy.sh"), "--build-only"], capture_output=True, text=True, env=env)
    try:
        assert r.returncode == 0, r.stderr
        import zipfile

        with zipfile.ZipFile(INFRA / "build" / "function-source.zip") as z:
            names = set(z.namelist())
        assert {"main.py", "requirements.txt", "altostratus.yaml", "adapters/gcp/main.py"} <= names
        assert not any(n.startswith("core/testing") for n in names)
    finally:
        shutil.rmtree(INFRA / "build", ignore_errors=True)
