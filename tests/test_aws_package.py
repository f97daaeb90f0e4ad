"""The AWS bundle and template, offline: `npx osls package`, cfn-lint, the template's settings, the zip.

Skipped, with the reason printed, where Node's packages or a python3.12 (the Lambda runtime, needed
for the bundle's bytecode) are missing; `make test` installs the former and finds the latter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from lambda_cold_start import python312  # noqa: E402

PY312 = python312()


@pytest.fixture(scope="module")
def packaged(aws_packaged) -> dict[str, Any]:
    return aws_packaged


def resources(packaged: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in packaged["template"]["Resources"].items() if v["Type"] == kind}


def test_packaging_validates_every_config_section_the_api_does_not(packaged, tmp_path):
    """The api function checks only ApiSettings at its cold start, so a bad routing section would reach
    the workers; the osls-config-check plugin stops `osls package` on it, naming the fix."""
    assert "altostratus: infra/aws/altostratus.yaml is valid" in packaged["log"]
    bad = tmp_path / "altostratus.yaml"
    bad.write_text("routing:\n  default: {model: claude-haiku-4.5}\nqueue: {max_receives: 5}\n")
    from core.config import load_api_settings

    assert load_api_settings(bad, env={}).queue.max_receives == 5  # what the api alone would accept
    with zipfile.ZipFile(packaged["zip"]) as zf:
        zf.extractall(tmp_path / "task")  # the bundle: core and the python3.12 requirements the plugin runs on
    r = plugin_check(tmp_path / "task", bad)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "is not a valid Altostratus configuration" in r.stdout
    assert "routing.default.model: 'claude-haiku-4.5' is not defined under `models`" in r.stdout


def plugin_check(task: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """infra/aws/osls-config-check.js run as osls runs it, on the bundle extracted into `task`; exit 3 when it
    stops the packaging, printing why."""
    script = (
        f"const P = require({json.dumps(str(ROOT / 'infra' / 'aws' / 'osls-config-check.js'))});"
        "const sls = {service: {provider: {environment: {ALTO_CONFIG: process.argv[1]}}, "
        "custom: {bytecode: {python: process.argv[2]}}}, config: {servicePath: process.cwd()}, classes: {Error}};"
        "try { new P(sls).check(); } catch (e) { console.log(e.message); process.exit(3); }"
    )
    return subprocess.run(
        ["node", "-e", script, str(config), PY312], cwd=task, capture_output=True, text=True, timeout=120
    )


def redacting_config(path: Path) -> Path:
    """The packaged configuration with a policy that redacts PII, its vault key in Secrets Manager."""
    cfg = yaml.safe_load((ROOT / "infra" / "aws" / "altostratus.yaml").read_text())
    cfg["safety"] = {
        "default": "private",
        "policies": {"private": {"pii": "redact"}},
        "vault_key": "aws-sm:altostratus/vault-key",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_redacting_policy_stops_the_standard_bundle_naming_the_safety_bundle(packaged, tmp_path):
    """The standard bundle has no cipher for the vault: packaging a configuration that redacts stops, saying how
    to package the one that has it (rather than a deployed api refusing every redacted job)."""
    with zipfile.ZipFile(packaged["zip"]) as zf:
        assert not any(n.startswith("cryptography/") for n in zf.namelist())
        zf.extractall(tmp_path / "task")
    r = plugin_check(tmp_path / "task", redacting_config(tmp_path / "altostratus.yaml"))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "safety.policies.private redacts" in r.stdout
    assert "'cryptography', which is not installed" in r.stdout
    assert '--param="bundle=safety"' in r.stdout


def test_the_safety_bundle_seals_with_the_runtime_python_and_grants_the_api_only_the_vault_key(
    aws_packaged_safety, packaged, tmp_path
):
    z = aws_packaged_safety["zip"]
    with zipfile.ZipFile(z) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
        zf.extractall(tmp_path / "task")
    extra = z.stat().st_size - packaged["zip"].stat().st_size
    print(f"\nsafety bundle: {z.stat().st_size / 1e6:.1f} MB zipped (+{extra / 1e6:.1f} MB), {unzipped / 1e6:.1f} MB")
    assert z.stat().st_size <= 16_000_000
    assert unzipped < 250_000_000  # Lambda's limit for a function's code, unzipped
    config = redacting_config(tmp_path / "altostratus.yaml")
    r = plugin_check(tmp_path / "task", config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is valid" in r.stdout
    code = (  # the redact path on the bundle alone: placeholders at submit, values sealed, restored on read
        "from core.config import load_settings\n"
        "from core.safety.layer import Safety, bound\n"
        "from core.secrets import EnvSecrets\n"
        "class Uncounted:\n"
        "    def finding(self, *args): pass\n"
        "s = load_settings('altostratus.yaml', env={'ALTO_SAFETY__VAULT_KEY': 'env:VAULT'})\n"
        "safety = Safety.of(s, metrics=Uncounted(), secrets=EnvSecrets())\n"
        "screened = safety.screen('acme', None).texts([('prompt', 'mail maria@example.com now')], 'input')\n"
        "text, table = screened.texts[0], screened.table\n"
        "sealed = safety.vault.seal(table, bound('acme', 'j1'))\n"
        "print(text, safety.vault.open(sealed, bound('acme', 'j1')) == table, 'maria' in sealed)"
    )
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path / "task"), "VAULT": vault_key()}
    shutil.copy(config, tmp_path / "task" / "altostratus.yaml")
    r = subprocess.run([PY312, "-S", "-c", code], cwd=tmp_path / "task", env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    placeholder, opened, leaked = r.stdout.split()[1], r.stdout.split()[-2], r.stdout.split()[-1]
    assert placeholder.startswith("[EMAIL_") and (opened, leaked) == ("True", "False"), r.stdout
    safety_res, standard_res = aws_packaged_safety["template"], packaged["template"]
    assert (safety_res["Parameters"]["Bundle"]["Default"], standard_res["Parameters"]["Bundle"]["Default"]) == (
        "safety",
        "standard",
    )
    policy = safety_res["Resources"]["ApiVaultPolicy"]
    assert policy["Condition"] == "SafetyBundle" and policy["Properties"]["Roles"] == [{"Ref": "ApiRole"}]
    [grant] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert grant["Action"] == "secretsmanager:GetSecretValue"
    assert grant["Resource"]["Fn::Sub"].endswith(":secret:altostratus/vault-key-*")


def vault_key() -> str:
    from core.safety.vault import new_key

    return new_key()


def test_cfn_lint_reports_no_errors(packaged):
    assert cfn_lint(packaged["dir"] / "cloudformation-template-update-stack.json") & 2 == 0  # 4: osls's DependsOn


def cfn_lint(template: Path) -> int:
    """cfn-lint's exit status on `template`: bit 2 errors, 4 warnings, 8 informational; anything else (1: it did
    not run) fails here, so a lint that never ran can't pass."""
    r = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(template)], capture_output=True, text=True)
    assert r.returncode & ~(2 | 4 | 8) == 0, r.stdout + r.stderr
    assert r.returncode & 2 == 0, r.stdout
    return r.returncode


def test_template_queue_batching_concurrency_and_runtime(packaged):
    res = packaged["template"]["Resources"]
    functions = resources(packaged, "AWS::Lambda::Function")
    assert {p["Properties"]["Runtime"] for p in functions.values()} == {"python3.12"}
    worker = res["WorkerLambdaFunction"]["Properties"]
    assert worker["Handler"] == "adapters/aws/handlers.worker"
    assert worker["ReservedConcurrentExecutions"] == 10
    queue = res["JobsQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    mappings = {
        json.dumps(m["Properties"]["EventSourceArn"]): m["Properties"]
        for m in resources(packaged, "AWS::Lambda::EventSourceMapping").values()
    }
    jobs = mappings[json.dumps({"Fn::GetAtt": ["JobsQueue", "Arn"]})]
    assert jobs["BatchSize"] == 10
    assert jobs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    dlq = mappings[json.dumps({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})]
    assert dlq["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    for table in ("JobsTable", "StateTable"):
        assert res[table]["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    alarms = resources(packaged, "AWS::CloudWatch::Alarm")
    assert {a["Properties"].get("MetricName") for a in alarms.values()} == {
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        None,
    }
    assert len(alarms) == 4  # age, depth, DLQ depth, and the provider error rate (metric math over EMF)
    rate = alarms["ProviderErrorRateAlarm"]["Properties"]["Metrics"]
    assert {q["MetricStat"]["Metric"]["MetricName"] for q in rate if "MetricStat" in q} == {"Attempts"}
    lines = [ln.split("#", 1)[0] for ln in (ROOT / "serverless.yml").read_text().splitlines()]
    assert not any("${aws:" in ln for ln in lines)  # a package-time network call; ARNs use Fn::Sub


def test_the_dashboard_is_valid_json_and_charts_metrics_the_workers_emit(packaged):
    import io
    import re

    from core.models import Attempt, Job, JobRequest
    from core.observability.emf import EmfSink
    from core.observability.metrics import attempt_record, job_record

    [dash] = resources(packaged, "AWS::CloudWatch::Dashboard").values()
    template, names = dash["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", template))  # every ${...} is a plain string value
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == [
        "Jobs by status",
        "Job latency, submit to result (ms)",
        "Tokens by model",
        "Cost by model (USD)",
        "Provider errors by class",
        "Queue age (s) and dead letters",
    ]
    assert set(names) == {"Namespace", "JobsQueueName", "DeadLetterQueueName"}
    out = io.StringIO()
    sink = EmfSink("Altostratus", out)
    job = Job(
        id="j",
        tenant="t",
        request=JobRequest(prompt="q"),
        request_hash="h",
        trace_id="0" * 32,
        created_at=1.0,
        updated_at=2.0,
    )
    attempt = Attempt(number=1, started_at=1.0, outcome="succeeded", model="m", provider="p")
    sink.attempt(attempt_record(job, attempt, model_id="m"), attempt, job)
    sink.job(job_record(job), job)
    emitted = {
        m["Name"]
        for line in out.getvalue().splitlines()
        for d in json.loads(line)["_aws"]["CloudWatchMetrics"]
        for m in d["Metrics"]
    }
    charted = set(re.findall(r'MetricName=\\?"(\w+)\\?"', template)) | set(
        re.findall(r'"\$\{Namespace\}", "(\w+)"', template)
    )
    assert charted, charted - emitted
    assert charted <= emitted, charted - emitted


def _actions(role: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for policy in role["Properties"].get("Policies", []):
        for st in policy["PolicyDocument"]["Statement"]:
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert st["Resource"] != "*", st  # every statement names its resources
            out.update(acts)
    return out


def test_each_function_has_its_own_role_and_no_wildcard_grant(packaged):
    """Which grants each role needs is proven by running the functions under them (test_aws_deploy.py); here,
    the shape: one role per function, no `*` action, every statement naming its resources."""
    res = packaged["template"]["Resources"]
    for fn, role in (
        ("Api", "ApiRole"),
        ("Worker", "WorkerRole"),
        ("DeadLetter", "DeadLetterRole"),
        ("Reconcile", "ReconcileRole"),
    ):
        assert res[f"{fn}LambdaFunction"]["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
        assert all("*" not in a for a in _actions(res[role]))


def test_timeouts_leases_and_limits_agree_as_packaged(packaged):
    """Every timing relation between the resources and the configuration the functions run with, on the
    template as osls resolved it from serverless.yml's params (infra/aws/limits.js)."""
    from adapters.aws.handlers import DEADLINE_MARGIN_S
    from core.config import load_settings

    res = packaged["template"]["Resources"]
    fn = {
        name.removesuffix("LambdaFunction"): r["Properties"]
        for name, r in res.items()
        if r["Type"] == "AWS::Lambda::Function"
    }
    env = {k: v for k, v in fn["Worker"]["Environment"]["Variables"].items() if isinstance(v, str)}
    assert all(f["Environment"]["Variables"] == fn["Worker"]["Environment"]["Variables"] for f in fn.values())
    settings = load_settings(ROOT / "infra" / "aws" / "altostratus.yaml", env=env)  # what every function loads
    worker, api, dead = fn["Worker"]["Timeout"], fn["Api"]["Timeout"], fn["DeadLetter"]["Timeout"]
    jobs, dlq = res["JobsQueue"]["Properties"], res["DeadLetterQueue"]["Properties"]
    mappings = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in res.values()
        if m["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    esm = mappings["JobsQueue"]
    # AWS: a queue's visibility timeout at least 6x its function's timeout plus the batching window
    assert jobs["VisibilityTimeout"] >= 6 * worker + esm["MaximumBatchingWindowInSeconds"]
    assert dlq["VisibilityTimeout"] >= 6 * dead
    assert settings.queue.visibility_timeout_s == jobs["VisibilityTimeout"]
    assert settings.queue.max_receives == jobs["RedrivePolicy"]["maxReceiveCount"]
    # a lease ends inside the invocation (renewed up to its deadline), and before the message reappears
    assert settings.governance.lease_s <= worker - DEADLINE_MARGIN_S
    assert settings.governance.lease_s < jobs["VisibilityTimeout"]
    assert settings.governance.in_process_wait_s < settings.governance.lease_s
    for p in settings.providers.values():
        assert p.timeout_s < settings.governance.lease_s  # one read can't outlive the lease it runs under
    # a job is lost only when its message can no longer be invisible behind a crashed delivery
    assert settings.governance.reconcile_after_s > jobs["VisibilityTimeout"]
    # the api's longest wait (long-poll, buffered SSE) ends inside its timeout, which an HTTP API caps at 30 s
    assert settings.stream.max_wait_s < api < 30
    # the event source never invokes more workers than are reserved: a throttled batch counts a receive
    assert esm["ScalingConfig"]["MaximumConcurrency"] <= fn["Worker"]["ReservedConcurrentExecutions"]
    assert (
        mappings["DeadLetterQueue"]["ScalingConfig"]["MaximumConcurrency"]
        <= fn["DeadLetter"]["ReservedConcurrentExecutions"]
    )
    rule = next(r["Properties"] for r in res.values() if r["Type"] == "AWS::Events::Rule")
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    assert fn["Reconcile"]["Timeout"] < 300
    assert fn["Reconcile"]["ReservedConcurrentExecutions"] == 1  # one sweep at a time


def _printed(*params: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "fake", "AWS_SECRET_ACCESS_KEY": "fake"}
    return subprocess.run(
        [
            "npx",
            "--no-install",
            "osls",
            "print",
            "--stage",
            "ci",
            "--format",
            "json",
            *(f"--param={p}" for p in params),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_parameter_moves_every_timing_that_depends_on_it_and_a_bad_one_stops_the_deploy():
    r = _printed("workerTimeout=300")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    cfg = json.loads(r.stdout)
    env = cfg["provider"]["environment"]
    assert cfg["functions"]["worker"]["timeout"] == 300
    assert cfg["resources"]["Resources"]["JobsQueue"]["Properties"]["VisibilityTimeout"] == 6 * 300 + 1
    assert env["ALTO_QUEUE__VISIBILITY_TIMEOUT_S"] == "1801"
    assert env["ALTO_GOVERNANCE__LEASE_S"] == "290"
    r = _printed("apiTimeout=30")
    assert r.returncode != 0
    assert "apiTimeout must be 5..29 s (an HTTP API gives up at 30 s)" in r.stdout + r.stderr


def test_zip_is_small_has_no_boto3_ships_bytecode_and_imports_cleanly(packaged, tmp_path):
    z = packaged["zip"]
    assert z.stat().st_size <= 10_000_000
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "task")
    assert not any(n.startswith(("boto3/", "botocore/", "tiktoken/")) for n in names)  # tiktoken: Python BPE here
    assert any(n.startswith("anthropic-") and n.endswith(".dist-info/METADATA") for n in names)  # kept: read at import
    assert "anthropic/_client.pyc" in names
    assert "anthropic/_client.py" not in names  # sourceless bytecode
    assert "core/jobs/__pycache__/pipeline.cpython-312.pyc" in names
    assert "core/jobs/pipeline.py" in names
    assert "core/tokenizers/cl100k_base.tokens.zlib" in names
    assert not any(n.startswith("core/testing/") for n in names)
    code = (
        "import adapters.aws.handlers, anthropic, core.providers.anthropic\n"
        "from core.tokenizers import counter\n"
        "from core.config import load_settings\n"
        "assert counter().count('hello world') == 2\n"
        "s = load_settings('infra/aws/altostratus.yaml', env={})\n"
        "print(s.routing.default.model, s.retrieval.backend)"
    )
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path / "task"), "PATH": os.environ.get("PATH", "")}
    r = subprocess.run([PY312, "-S", "-c", code], cwd=tmp_path / "task", env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["claude-haiku-4-5", "snapshot"]
    assert not list((tmp_path / "task").rglob("__pycache__/*.cpython-312.opt-*.pyc"))
    for pyc in (tmp_path / "task").glob("core/**/__pycache__/*.cpython-312.pyc"):
        # unchecked-hash: used as shipped (a timestamp .pyc would not match the zip's mtimes and be recompiled)
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 1, pyc
    shutil.rmtree(tmp_path / "task")


def test_packaging_leaves_no_unchecked_bytecode_in_the_source_tree(packaged):
    """The bundle ships unchecked bytecode of our code; the source tree must not keep it, or a later python3.12
    run there would import it instead of the sources edited since (the config check before the next package
    did, and failed on a module that no longer existed)."""
    stale = [
        pyc
        for name in ("core", "adapters")
        for pyc in (ROOT / name).rglob("__pycache__/*.cpython-312.pyc")
        if int.from_bytes(pyc.read_bytes()[4:8], "little") == 1
    ]
    assert stale == []


def test_cold_start_benchmark_prints_its_figures(packaged):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lambda_cold_start.py"),
            "--zip",
            str(packaged["zip"]),
            "--runs",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    print("\n" + json.dumps(line))
    assert line["zip_bytes"] == packaged["zip"].stat().st_size
    assert line["boto3_inside"] is False
    assert line["submit_ratio"] > 0
    assert line["worker_ratio"] > 0
    assert line["worker_to_first_reply_s"] > line["worker_import_s"] * 0.5  # a real job ran, not just imports
