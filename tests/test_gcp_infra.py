"""infra/gcp checked offline: `terraform fmt -check` (providers can't be downloaded here, so no init/validate),
a strict HCL parse, the functions against adapters/gcp/main.py, and every timing relation, evaluated from the
variables as Terraform would (tests/hcl.py). What each function may call is proven by running it:
tests/test_gcp_deploy.py."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hcl import Terraform

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra" / "gcp"
MAIN = ROOT / "adapters" / "gcp" / "main.py"


def entry_points() -> dict[str, str]:
    """Functions in main.py by their functions-framework decorator: name -> http | cloud_event."""
    out = {}
    for node in ast.parse(MAIN.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if (
                    isinstance(d, ast.Attribute)
                    and isinstance(d.value, ast.Name)
                    and d.value.id == "functions_framework"
                ):
                    out[node.name] = d.attr
    return out


def test_terraform_fmt_check():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH (only `fmt` is needed; it runs offline)")
    r = subprocess.run([terraform, "fmt", "-check", "-diff", "-recursive", str(INFRA)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_function_matches_main_py_and_event_functions_are_pushed_by_a_subscription():
    tf = Terraform(INFRA, {"project": "p"})
    functions = tf.local("functions")
    kinds = entry_points()
    assert {f["entry"] for f in functions.values()} == set(kinds) == {"api", "worker", "dead_letter", "reconcile"}
    assert tf.resources("google_cloudfunctions2_function")["fn"]["for_each"] == "${local.functions}"
    subs = tf.resources("google_pubsub_subscription")
    pushed = {sub["push_config"][0]["push_endpoint"] for sub in subs.values() if "push_config" in sub}
    assert {k for k, sub in subs.items() if "push_config" not in sub} == {"pull"}  # the container workers' own
    for name, f in functions.items():
        endpoint = f'${{google_cloudfunctions2_function.fn["{name}"].service_config[0].uri}}'
        # a CloudEvent function receives Pub/Sub's push body (functions-framework converts it); the others are plain HTTP
        assert (endpoint in pushed) == (kinds[f["entry"]] == "cloud_event"), name
        assert f["ingress"] == ("ALLOW_ALL" if name == "api" else "ALLOW_INTERNAL_ONLY")
    from adapters.gcp.app import REQUIRED

    assert set(REQUIRED) <= set(tf.local("env"))
    assert tf.local("env")["ALTO_TOPIC"] == "alto-jobs"


@pytest.mark.parametrize("variables", [{}, {"worker_timeout_s": 300, "api_timeout_s": 20, "max_delivery_attempts": 7}])
def test_timeouts_deadlines_leases_and_limits_agree(variables):
    """Every relation between Pub/Sub, the functions and the configuration they run with, for the defaults and
    for changed variables (each derived value moves with its variable)."""
    from adapters.gcp.main import DEADLINE_MARGIN_S
    from core.config import load_settings

    tf = Terraform(INFRA, {"project": "p", **variables})
    fn, env = tf.local("functions"), tf.local("env")
    settings = load_settings(INFRA / "altostratus.yaml", env=env)  # what every function loads
    subs = tf.resources("google_pubsub_subscription")
    jobs = subs["jobs"]
    ack = tf.value(jobs["ack_deadline_seconds"])
    worker_timeout = fn["worker"]["timeout"]
    assert worker_timeout == tf.variables["worker_timeout_s"] == float(env["ALTO_FUNCTION_TIMEOUT_S"])
    # a push waits for the whole invocation before counting it failed; Pub/Sub allows at most 600 s
    assert worker_timeout < ack <= 600
    assert tf.value(subs["dead"]["ack_deadline_seconds"]) > fn["dead-letter"]["timeout"]
    assert settings.queue.visibility_timeout_s == ack
    assert settings.queue.max_receives == tf.value(jobs["dead_letter_policy"][0]["max_delivery_attempts"])
    # the lease ends inside the invocation (renewed up to its deadline); in-process waits and reads fit in it
    assert settings.governance.lease_s <= worker_timeout - DEADLINE_MARGIN_S
    assert settings.governance.in_process_wait_s < settings.governance.lease_s
    assert all(p.timeout_s < settings.governance.lease_s for p in settings.providers.values())
    # a job is lost only when no delivery can still be in flight or backing off
    backoff = tf.value(jobs["retry_policy"][0]["maximum_backoff"])
    assert settings.governance.reconcile_after_s > ack + int(backoff.removesuffix("s"))
    # the api's longest wait ends inside its timeout
    assert settings.stream.max_wait_s < fn["api"]["timeout"]
    # the scheduler waits for the whole sweep, and one sweep ends before the next starts (every 5 minutes)
    job = tf.resources("google_cloud_scheduler_job")["reconcile"]
    assert tf.value(job["schedule"]) == "*/5 * * * *"
    assert fn["reconcile"]["timeout"] < int(tf.value(job["attempt_deadline"]).removesuffix("s")) <= 300
    # more than one request per instance needs a whole CPU (Cloud Run's rule)
    assert all(float(f["cpu"]) >= 1 for f in fn.values() if f["concurrency"] > 1)


def test_the_pull_subscription_has_the_push_subscriptions_policies_and_the_gke_overlay_its_names():
    """Containers on GCP (infra/gcp/pull.tf, infra/k8s/overlays/gcp): the same retry and dead-letter policies as the
    functions' push subscription, and the overlay's environment the one Terraform gives the worker function, but
    for the pull subscription's name and lease."""
    import yaml

    tf = Terraform(INFRA, {"project": "my-project"})  # the overlay's placeholder project
    subs = tf.resources("google_pubsub_subscription")
    push, pull = subs["jobs"], subs["pull"]
    assert pull["count"] == "${var.pull_workers ? 1 : 0}" and tf.variables["pull_workers"] is False
    for key in ("topic", "retry_policy", "dead_letter_policy", "message_retention_duration", "expiration_policy"):
        assert pull[key] == push[key], key  # the same expressions, so the same values for any variables
    overlay = ROOT / "infra" / "k8s" / "overlays" / "gcp"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    config = dict(item.split("=", 1) for item in generator["literals"])
    env = tf.local("env")
    functions_only = {  # read by the api, the reconciler or the function runtime, not by a pull worker
        "ALTO_API_KEY_HASHES", "ALTO_FUNCTION_TIMEOUT_S", "ALTO_STREAM__MAX_WAIT_S", "ALTO_GOVERNANCE__LEASE_S",
        "ALTO_GOVERNANCE__RECONCILE_AFTER_S", "ALTO_CONFIG",
    }  # fmt: skip
    for key in set(env) - functions_only - {"ALTO_QUEUE__VISIBILITY_TIMEOUT_S"}:
        assert config.get(key) == str(env[key]), (key, config.get(key), env[key])
    assert config["ALTO_SUBSCRIPTION"] == tf.value(pull["name"])
    assert int(config["ALTO_QUEUE__VISIBILITY_TIMEOUT_S"]) == tf.value(pull["ack_deadline_seconds"])
    identity = yaml.safe_load((overlay / "identity.yaml").read_text())
    email = identity["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert tf.resources("google_service_account")["fn"]["account_id"] == '"${var.name}-${each.key}"'
    assert email == f"{tf.variables['name']}-worker@my-project.iam.gserviceaccount.com", email
    namespace, name = tf.variables["gke_worker_service_account"].split("/")
    assert (kustomization["namespace"], identity["metadata"]["name"]) == (namespace, name)
    keda = [d for d in yaml.safe_load_all((overlay / "keda.yaml").read_text()) if d["kind"] == "ScaledObject"]
    [trigger] = keda[0]["spec"]["triggers"]
    assert trigger["metadata"]["subscriptionName"] == f"projects/my-project/subscriptions/{tf.value(pull['name'])}"


def test_a_fresh_project_gets_every_api_it_uses():
    tf = Terraform(INFRA, {"project": "p"})
    enabled = set(tf.value(tf.resources("google_project_service")["api"]["for_each"]))
    assert {
        "cloudfunctions.googleapis.com",
        "run.googleapis.com",
        "cloudbuild.googleapis.com",
        "pubsub.googleapis.com",
        "firestore.googleapis.com",
        "secretmanager.googleapis.com",
        "cloudscheduler.googleapis.com",
        "storage.googleapis.com",
        "artifactregistry.googleapis.com",
    } <= enabled


def test_the_only_deploy_path_is_terraform_and_it_checks_the_config_then_builds(tmp_path):
    script = (INFRA / "deploy.sh").read_text()
    assert "terraform apply" in script
    assert "gcloud functions deploy" not in script  # one source of truth
    env = {**os.environ, "PYTHON": sys.executable}
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {provider: nowhere, model_id: x}\n")
    r = subprocess.run(
        ["bash", str(INFRA / "deploy.sh"), "--build-only"],
        capture_output=True,
        text=True,
        env={**env, "CONFIG": str(bad)},
    )
    assert r.returncode == 1
    assert "models.m.provider: 'nowhere' is not defined under `providers`" in r.stderr
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
