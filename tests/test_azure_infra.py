"""infra/azure checked offline: main.bicep parsed strictly (pycep; no Bicep CLI here), the bindings against the
app's functions, the settings every app gets, and every timing relation, evaluated from the parameters as a
deployment would (tests/bicep.py). What each app may call is proven by running it: tests/test_azure_deploy.py."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bicep import Bicep

ROOT = Path(__file__).resolve().parent.parent
BICEP = ROOT / "infra" / "azure" / "main.bicep"


def functions() -> dict:
    from tests.test_azure import app_functions

    return app_functions()


def seconds(timespan: str) -> float:
    h, m, s = (float(x) for x in timespan.split(":"))
    return h * 3600 + m * 60 + s


def test_bindings_match_the_settings_and_the_function_signatures():
    bicep = Bicep(BICEP)
    fns = functions()
    assert set(fns) == {"api", "worker", "dead_letter", "reconcile"}
    for f in fns.values():
        params = set(inspect.signature(f.get_user_function()).parameters)
        for b in f.get_bindings():
            if b.name != "$return":
                assert b.name in params, f"{f.get_function_name()}: binding {b.name} has no parameter"
    bus = [
        b.get_dict_repr()
        for f in fns.values()
        for b in f.get_bindings()
        if b.type in ("serviceBus", "serviceBusTrigger")
    ]
    assert {b["queueName"] for b in bus} == {"%ALTO_QUEUE_NAME%", "%ALTO_QUEUE_NAME%/$DeadLetterQueue"}
    settings = bicep.settings()
    assert settings["ALTO_QUEUE_NAME"] == bicep.var("queueName")
    for c in {b["connection"] for b in bus}:  # identity-based: a namespace and a credential, never a connection string
        assert f"{c}__fullyQualifiedNamespace" in settings
        assert settings[f"{c}__credential"] == "managedidentity"
        assert c not in settings
    assert "AzureWebJobsStorage" not in settings
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    # each app runs its functions and disables every other one
    disabled = bicep.var("disabledSettings")
    for app in bicep.var("appNames"):
        off = {s["name"].split(".")[1] for s in disabled[app]}
        assert off
        assert off < set(fns)
        assert all(s["value"] == "true" for s in disabled[app])
    assert (
        set.intersection(
            *(
                {f for f in fns if f not in {s["name"].split(".")[1] for s in disabled[a]}}
                for a in bicep.var("appNames")
            )
        )
        == set()
    )  # no function runs on two apps
    host = json.loads((ROOT / "adapters" / "azure" / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["extensions"]["serviceBus"]["autoCompleteMessages"]
    app = bicep.resource("functionApps")["config"]["config"]["properties"]["functionAppConfig"]
    assert app["runtime"]["name"] == "python"
    assert float(app["runtime"]["version"]) >= 3.11
    assert "local.settings.json" in (ROOT / ".gitignore").read_text()


@pytest.mark.parametrize("params", [{}, {"workerTimeoutMinutes": 3, "maxDeliveryCount": 8, "apiWaitSeconds": 60}])
def test_timeouts_locks_leases_and_limits_agree(params):
    from adapters.azure.function_app import DEADLINE_MARGIN_S
    from core.config import load_settings

    bicep = Bicep(BICEP, params)
    settings = bicep.settings()
    env = {k: str(v) for k, v in settings.items() if k.startswith("ALTO_") and "<" not in str(v)}
    config = load_settings(ROOT / "infra" / "azure" / "altostratus.yaml", env={**env, "ANTHROPIC_API_KEY": "k"})
    timeout = seconds(settings["AzureFunctionsJobHost__functionTimeout"])
    renewal = seconds(settings["AzureFunctionsJobHost__extensions__serviceBus__maxAutoLockRenewalDuration"])
    assert timeout == float(settings["ALTO_FUNCTION_TIMEOUT_S"]) == bicep.params["workerTimeoutMinutes"] * 60
    assert renewal > timeout  # the message's lock is held for as long as any run can take
    queue = bicep.resource("jobsQueue")["config"]["properties"]
    assert queue["lockDuration"] == "PT5M"
    assert bicep.value(queue["maxDeliveryCount"]) == config.queue.max_receives
    deadline = timeout - DEADLINE_MARGIN_S  # what the worker works to (adapters/azure/function_app.py)
    assert config.governance.lease_s <= deadline
    assert config.governance.in_process_wait_s < config.governance.lease_s
    assert all(p.timeout_s < config.governance.lease_s for p in config.providers.values())
    assert config.governance.reconcile_after_s > renewal  # no job is re-sent while a delivery may still hold it
    assert config.stream.max_wait_s < 230  # Azure's load balancer ends an HTTP request idle for 230 s
    assert bicep.params["maximumInstanceCount"] >= 40  # Flex Consumption's minimum outside a preview
    # host.json agrees with the defaults the settings override it with
    if not params:
        host = json.loads((ROOT / "adapters" / "azure" / "host.json").read_text())
        assert seconds(host["functionTimeout"]) == timeout
        assert seconds(host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"]) == renewal


def test_first_deploy_order_the_vault_the_apps_and_their_roles():
    bicep = Bicep(BICEP)
    tree = bicep.tree
    deployer = tree["resources"]["deployerSecrets"]["config"]
    assert "keyVaultSecretsOfficer" in json.dumps(deployer)  # whoever deploys can store the model key
    vault = bicep.resource("vault")["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    insights = bicep.resource("insights")["config"]["properties"]
    assert "WorkspaceResourceId" in insights  # workspace-based: classic Application Insights is retired
    depends = bicep.resource("functionApps")["config"]["config"]["dependsOn"]
    for roles in (
        "senders",
        "receivers",
        "jobsTableAccess",
        "stateTableAccess",
        "blobAccess",
        "hostAccess",
        "secretReaders",
    ):
        assert roles in depends, f"the apps must wait for {roles}"
    script = (ROOT / "infra" / "azure" / "deploy.sh").read_text()
    assert script.index("az keyvault secret set") < script.index("func azure functionapp publish")


def test_deploy_script_checks_the_config_then_builds_the_app_folder(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    script = str(ROOT / "infra" / "azure" / "deploy.sh")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routing:\n  default: {model: nope}\n")
    r = subprocess.run(
        ["bash", script, "--build-only"], capture_output=True, text=True, env={**env, "CONFIG": str(bad)}
    )
    assert r.returncode == 1
    assert "routing.default.model: 'nope' is not defined" in r.stderr
    assert f"not deploying: fix {bad}" in r.stderr
    assert not (ROOT / "infra" / "azure" / "build").exists()
    r = subprocess.run(["bash", script, "--build-only"], capture_output=True, text=True, env=env)
    build = ROOT / "infra" / "azure" / "build" / "app"
    try:
        assert r.returncode == 0, r.stderr
        assert {"function_app.py", "host.json", "requirements.txt", "altostratus.yaml"} <= {
            p.name for p in build.iterdir()
        }
        assert not (build / "core" / "testing").exists()
    finally:
        import shutil

        shutil.rmtree(ROOT / "infra" / "azure" / "build", ignore_errors=True)
