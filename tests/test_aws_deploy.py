"""The AWS deployment proven, not assumed: the template `osls package` produced, deployed as a stack into moto
with IAM judged on every call, each function in its own process holding only its own role's credentials.

Each function's end-to-end scenarios run through the deployed wiring (the template's environment, its
event source mappings' settings, its roles): submit, a big workflow input, SSE replay of a spilled
stream, RAG with and without a snapshot, a retry handed back to the queue, the reconcile tick with a
batch due, and a dead-lettered job whose callback is delivered. The last test checks both directions of
least privilege over every call moto judged: no function was denied anything, and every grant each role
has was used by its function, so a grant removed from serverless.yml fails a scenario and a grant added
without a use fails here. What moto can't judge is said in tests/moto_iam.py and tests/aws_stack.py.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from typing import Any

import pytest

from core.config.api import hash_api_key
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.aws_stack import ROOT, Deployment, EventSource
from tests.conftest import DEPLOY_KEY, SAMPLES, erase_a_thread

TENANT = "acme"
SECRET_NAME = "altostratus/anthropic-api-key"  # what infra/aws/altostratus.yaml references


class Receiver:
    """A callback endpoint on loopback that keeps every POST."""

    def __init__(self) -> None:
        from tests.test_callbacks import Receiver as Plain

        self._plain = Plain(204)
        self.url = self._plain.url
        self.got = self._plain.got

    def close(self) -> None:
        self._plain.close()


@pytest.fixture(scope="module")
def fake():
    f = FakeAnthropic(FaultPlan(), api_key="deployed-anthropic-key")
    with ServerThread(f) as srv:
        yield f, srv.url


@pytest.fixture(scope="module")
def stack(aws_packaged, fake, tmp_path_factory):
    _f, url = fake
    d = Deployment(
        aws_packaged["dir"],
        tmp_path_factory.mktemp("aws-deploy"),
        extra_env={
            # the operator's own choices for this run, as an `alto` user would set them: the model's address
            # (the fake), quick retries handed back to the queue, a small inline stream, a quick batch window,
            # the audit log on, and callbacks allowed to loopback (where the test's receiver listens)
            "ALTO_PROVIDERS__ANTHROPIC__BASE_URL": url,
            "ALTO_GOVERNANCE__IN_PROCESS_WAIT_S": "0",
            "ALTO_GOVERNANCE__BACKOFF_BASE_S": "0.5",
            "ALTO_GOVERNANCE__BACKOFF_MAX_S": "1",
            "ALTO_STREAM__INLINE_CHARS": "1000",
            "ALTO_BATCH__FLUSH_S": "0.01",
            "ALTO_OBSERVABILITY__AUDIT__ENABLED": "true",
            "ALTO_CALLBACKS__ALLOW": '["127.0.0.1"]',
        },
    )
    d.client("secretsmanager", d.admin).create_secret(Name=SECRET_NAME, SecretString="deployed-anthropic-key")
    d.jobs = d.event_source("JobsQueue")
    d.dead = d.event_source("DeadLetterQueue")
    yield d
    d.stop()


def api(
    stack: Deployment, method: str, path: str, body: Any = None, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request through the HTTP API, as API Gateway hands it to the api function (payload 2.0)."""
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json", "authorization": f"Bearer {DEPLOY_KEY}", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "stage": "$default",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }
    r = stack.functions["Api"].invoke(event)
    ctype = r["headers"].get("content-type", "")
    return r["statusCode"], json.loads(r["body"]) if ctype.startswith("application/json") else r["body"]


def submit(stack: Deployment, **body: Any) -> str:
    status, out = api(stack, "POST", "/v1/jobs", body)
    assert status == 202, out
    return out["job_id"]


def view(stack: Deployment, job_id: str) -> dict[str, Any]:
    status, out = api(stack, "GET", f"/v1/jobs/{job_id}")
    assert status == 200, out
    return out


def until_terminal(
    stack: Deployment, job_id: str, sources: list[EventSource] | None = None, timeout_s: float = 60
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(view(stack, job_id))
        return seen["status"] in ("succeeded", "failed", "dead_lettered", "cancelled")

    stack.wait(done, sources if sources is not None else [stack.jobs], timeout_s=timeout_s)
    return seen


# ---------------------------------------------------------------- the functions' scenarios


def test_the_first_key_is_a_hash_parameter_and_nothing_answers_without_it(stack):
    template_env = stack.functions["Api"].env
    assert template_env["ALTO_API_KEY_HASHES"] == f"{TENANT}={hash_api_key(DEPLOY_KEY)}"
    assert DEPLOY_KEY not in json.dumps(stack.template)  # the key itself is nowhere in the stack
    event = {
        "version": "2.0",
        "rawPath": "/v1/jobs",
        "rawQueryString": "",
        "headers": {},
        "requestContext": {"http": {"method": "GET"}},
        "body": None,
    }
    assert stack.functions["Api"].invoke(event)["statusCode"] == 401


def test_submit_then_the_worker_answers(stack, fake):
    job_id = submit(stack, prompt="What is a visibility timeout?")
    done = until_terminal(stack, job_id)
    assert done["status"] == "succeeded", done
    assert done["result"], done
    assert done["usage"]["input_tokens"] > 0


def test_an_idempotency_key_returns_the_first_job_and_listings_find_it(stack):
    body = {"prompt": "exactly once, please"}
    first = api(stack, "POST", "/v1/jobs", body, headers={"idempotency-key": "order-17"})
    again = api(stack, "POST", "/v1/jobs", body, headers={"idempotency-key": "order-17"})
    assert first[0] == 202, (first, again)
    assert again[1]["job_id"] == first[1]["job_id"], (first, again)
    until_terminal(stack, first[1]["job_id"])
    status, listed = api(stack, "GET", "/v1/jobs")
    assert status == 200
    assert first[1]["job_id"] in [j["job_id"] for j in listed["jobs"]]
    status, listed = api(stack, "GET", "/v1/jobs", query="status=succeeded")
    assert status == 200
    assert first[1]["job_id"] in [j["job_id"] for j in listed["jobs"]]
    assert all(j["status"] == "succeeded" for j in listed["jobs"])


def test_a_retry_is_handed_back_to_the_queue_and_answered(stack, fake):
    f, _ = fake
    f.plan.script = ["529"]  # overloaded once: with no in-process wait, the worker hands the message back
    job_id = submit(stack, prompt="retry me through the queue")
    done = until_terminal(stack, job_id)
    assert done["status"] == "succeeded", done
    assert len(done["attempts"]) == 2, done
    assert done["attempts"][0]["error_class"] == "transient"


def test_a_big_workflow_input_is_stashed_by_the_api_and_read_by_the_worker(stack):
    from tests.test_workflows import document

    status, out = api(stack, "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 12000)}})
    assert status == 202, out
    done = until_terminal(stack, out["job_id"], timeout_s=120)
    assert done["status"] == "succeeded", done
    assert done["steps"]
    assert all(s["children"]["succeeded"] == s["children"]["total"] > 0 for s in done["steps"])
    keys = stack.client("s3", stack.admin).list_objects_v2(Bucket=stack.resources["Bucket"], Prefix="workflow-inputs/")
    assert keys["KeyCount"] == 1


def test_a_document_uploaded_by_the_operator_is_a_workflow_input_and_a_missing_one_is_refused(stack):
    s3 = stack.client("s3", stack.admin)
    s3.put_object(
        Bucket=stack.resources["Bucket"], Key="workflow-inputs/handbook.md", Body=(SAMPLES / "retries.md").read_bytes()
    )
    status, out = api(
        stack, "POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/handbook.md"}}
    )
    assert status == 202, out
    assert until_terminal(stack, out["job_id"])["status"] == "succeeded"
    status, out = api(
        stack,
        "POST",
        "/v1/jobs",
        {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/nothing-here.md"}},
    )
    assert status == 422, out
    assert "no blob" in out["error"]["message"], out  # S3's 404 (a 403 without s3:ListBucket)


def test_a_spilled_stream_is_replayed_over_sse_by_the_api(stack, fake):
    f, _ = fake
    f.plan.stream_tokens = 600  # ~4,000 characters: over the inline 1,000, so the worker spills to S3
    try:
        job_id = submit(stack, prompt="stream a long answer", stream=True)
        done = until_terminal(stack, job_id)
    finally:
        f.plan.stream_tokens = 0
    assert done["status"] == "succeeded"
    assert "tok599" in done["result"]
    spilled = stack.client("s3", stack.admin).list_objects_v2(Bucket=stack.resources["Bucket"], Prefix="streams/")
    assert spilled["KeyCount"] >= 1
    status, body = api(stack, "GET", f"/v1/jobs/{job_id}/events")
    assert status == 200
    assert "event: done" in body
    replayed = "".join(json.loads(m)["text"] for m in re.findall(r"event: delta\ndata: (.*)", body))
    assert "tok599" in replayed


def test_a_thread_is_erased_with_its_image_and_its_spilled_stream(stack, fake):
    s3, bucket = stack.client("s3", stack.admin), stack.resources["Bucket"]

    def keys(prefix: str) -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]

    erase_a_thread(
        lambda method, path: api(stack, method, path),
        lambda **body: submit(stack, **body),
        lambda job_id: until_terminal(stack, job_id),
        keys,
        fake[0],
        TENANT,
    )


def test_rag_without_a_snapshot_fails_the_job_saying_why(stack):
    job_id = submit(stack, prompt="What does the manual say?", collection="manuals")
    done = until_terminal(stack, job_id)
    assert done["status"] == "failed", done
    assert not done["attempts"], done
    assert "collection 'manuals' has no documents" in done["error"]["message"]


def test_rag_with_a_published_snapshot_answers_with_citations(stack, make_app, tmp_path):
    from adapters.aws.s3 import S3BlobStore

    s3 = stack.client("s3", stack.admin)
    operator = make_app(blobs=S3BlobStore(lambda: s3, stack.resources["Bucket"]))  # `alto ingest --publish`
    operator.library.ingest(SAMPLES, tenant=TENANT, collection="docs")
    operator.library.publish(TENANT, "docs")
    job_id = submit(stack, prompt="Which errors are never retried?", collection="docs")
    done = until_terminal(stack, job_id)
    assert done["status"] == "succeeded", done
    assert done["citations"], done


def test_the_reconcile_tick_sends_a_due_batch_and_applies_it(stack, fake):
    f, _ = fake
    job_id = submit(stack, prompt="a report nobody waits for", lane="batch")
    stack.wait(
        lambda: view(stack, job_id).get("batch_id") is not None or view(stack, job_id)["status"] != "queued",
        [stack.jobs],
    )
    before = f.batches.items
    time.sleep(0.05)  # past batch.flush_s
    counts = stack.functions["Reconcile"].invoke(
        {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    )
    assert counts["batch_submitted"] == 1, counts
    assert counts["batch_applied"] == 1, counts
    done = view(stack, job_id)
    assert done["status"] == "succeeded"
    assert done["lane"] == "batch"
    assert f.batches.items == before + 1


def test_the_reconcile_sweep_resends_a_job_whose_message_was_lost(stack):
    job_id = submit(stack, prompt="my message will be lost")
    sqs = stack.client("sqs", stack.admin)
    for m in sqs.receive_message(QueueUrl=stack.resources["JobsQueue"], WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=stack.resources["JobsQueue"], ReceiptHandle=m["ReceiptHandle"])
    time.sleep(0.05)
    counts = stack.functions["Reconcile"].invoke({"older_than_s": 0.01})  # by hand, as the handler's doc says
    assert counts["requeued"] >= 1, counts
    assert until_terminal(stack, job_id)["status"] == "succeeded"


def test_a_dead_lettered_job_is_marked_and_its_callback_delivered(stack):
    receiver = Receiver()
    try:
        job_id = submit(stack, prompt="this one's deliveries all crash", callback_url=receiver.url)
        sqs = stack.client("sqs", stack.admin)
        queue = stack.resources["JobsQueue"]
        receives = int(stack.functions["Worker"].env["ALTO_QUEUE__MAX_RECEIVES"])
        for _ in range(receives):  # as many deliveries as the redrive policy allows, each one lost to a crash
            got = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0, WaitTimeSeconds=1)
            assert got.get("Messages"), "the job's message should still be on the queue"
        assert not sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0).get("Messages")  # SQS redrove it
        stack.wait(lambda: view(stack, job_id)["status"] == "dead_lettered", [stack.dead])
        stack.wait(lambda: bool(receiver.got), [stack.jobs])  # the callback travels as its own message
        posted = json.loads(receiver.got[0][1])
        assert posted["job_id"] == job_id
        assert posted["status"] == "dead_lettered"
    finally:
        receiver.close()


def test_a_container_worker_under_the_worker_role_pulls_renews_and_drains(stack, fake):
    """`alto worker --cloud aws` as a container runs it, with the worker's role (an ECS task role or an IRSA role
    holding the same policy): its long polls, batch deletes and visibility renewals are judged and recorded with
    the functions' calls, so the least-privilege test below proves it needs no grant the Worker role lacks."""
    import signal
    import subprocess
    import sys

    f, _ = fake
    env = {k: v for k, v in stack.functions["Worker"].env.items() if k != "AWS_LAMBDA_FUNCTION_NAME"}
    env.update(
        ALTO_QUEUE__VISIBILITY_TIMEOUT_S="3",  # renewed every second: a 4 s call needs renewals
        ALTO_PULL__WAIT_S="1",
        ALTO_PULL__JOB_DEADLINE_S="30",
    )
    f.plan.latency_s = 4.0
    log = open(stack.workdir / "pull-worker.log", "ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "core.entrypoints.cli", "worker", "--cloud", "aws", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        ids = [submit(stack, prompt=f"pulled by a container {i}") for i in range(3)]
        for job_id in ids:
            done = until_terminal(stack, job_id, sources=[], timeout_s=90)  # no event source: the worker alone
            assert done["status"] == "succeeded", done
            assert len(done["attempts"]) == 1, done  # the message stayed hidden past its 3 s visibility
    finally:
        f.plan.latency_s = 0.0
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    actions = {c["action"] for c in stack.calls() if c["function"] == "Worker"}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= actions, actions


# ---------------------------------------------------------------- least privilege, both directions


# ---------------------------------------------------------------- the safety bundle (--param bundle=safety)


@pytest.fixture(scope="module")
def safety_stack(aws_packaged_safety, fake, tmp_path_factory):
    """The safety bundle deployed on its own, every job under a policy that redacts PII, the vault's key in
    Secrets Manager as serverless.yml names it."""
    from core.safety.vault import new_key

    _f, url = fake
    d = Deployment(
        aws_packaged_safety["dir"],
        tmp_path_factory.mktemp("aws-deploy-safety"),
        extra_env={
            "ALTO_PROVIDERS__ANTHROPIC__BASE_URL": url,
            "ALTO_SAFETY__POLICIES": json.dumps({"private": {"pii": "redact"}}),
            "ALTO_SAFETY__DEFAULT": "private",
            "ALTO_SAFETY__VAULT_KEY": f"aws-sm:{VAULT_SECRET}",
        },
    )
    sm = d.client("secretsmanager", d.admin)
    sm.create_secret(Name=SECRET_NAME, SecretString="deployed-anthropic-key")
    sm.create_secret(Name=VAULT_SECRET, SecretString=new_key())
    d.jobs = d.event_source("JobsQueue")
    yield d
    d.stop()


VAULT_SECRET = "altostratus/vault-key"  # what serverless.yml grants the api with the safety bundle


def test_the_safety_bundle_redacts_before_the_provider_and_restores_for_the_client(safety_stack, fake):
    f, _url = fake
    f.keep_requests = True
    email = "maria.garcia@example.com"
    job_id = submit(safety_stack, prompt=f"Write to {email} about the invoice.")
    done = until_terminal(safety_stack, job_id)
    assert done["status"] == "succeeded", done
    assert email in done["result"]  # the fake echoes the question: restored by the api, which opened the vault
    assert [x["rule"] for x in done["safety"]["findings"]] == ["pii.email"]
    sent = json.dumps(f.requests)
    assert "[EMAIL_" in sent and email not in sent
    dynamodb = safety_stack.client("dynamodb", safety_stack.admin)
    items = dynamodb.scan(TableName=safety_stack.resources["JobsTable"])["Items"]
    assert items and email not in json.dumps(items)  # sealed in the job's record, never in the clear


def test_with_the_safety_bundle_the_api_reads_the_vault_key_and_nothing_is_denied(safety_stack):
    calls = [c for c in safety_stack.calls() if c["function"] is not None]
    denied = sorted({(c["function"], c["action"], c["resource"]) for c in calls if not c["allowed"]})
    assert not denied, "calls the deployed roles do not grant:\n" + "\n".join(map(str, denied))
    reads = {(c["function"], c["resource"].rsplit(":", 1)[-1].rsplit("-", 1)[0]) for c in calls
             if c["action"] == "secretsmanager:GetSecretValue"}  # fmt: skip
    assert ("Api", VAULT_SECRET) in reads, reads  # the worker asks for it only to mask a value the model wrote
    vault = [st for st in _statements(safety_stack, "Api") if st["actions"] == ["secretsmanager:GetSecretValue"]]
    assert [st["resources"][0].rsplit(":", 1)[-1] for st in vault] == [f"{VAULT_SECRET}-*"]


def _statements(stack: Deployment, fn: str) -> list[dict[str, Any]]:
    """The role's inline statements with their resources resolved to ARNs, as IAM evaluates them."""
    iam = stack.client("iam", stack.admin)
    role = stack.resources[stack.roles()[fn]]
    out = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        for st in iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            leading = (st.get("Condition") or {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
            out.append({"actions": actions, "resources": resources, "leading_keys": leading})
    return out


def _outside_leading_keys(statements: list[dict[str, Any]], call: dict[str, Any]) -> list[str]:
    """The call's partition keys that no statement allowing it admits: a statement without a LeadingKeys
    condition admits any, one with it only keys matching its patterns."""
    allowing = [
        st
        for st in statements
        if any(_matches(a, call["action"]) for a in st["actions"])
        and any(_matches(r, call["resource"]) for r in st["resources"])
    ]
    if not allowing or any(st["leading_keys"] is None for st in allowing):
        return []
    return [
        k
        for k in call.get("leading_keys") or []
        if not any(_matches(p, k) for st in allowing for p in st["leading_keys"])
    ]


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def test_every_call_was_granted_and_every_grant_was_used(stack):
    """Both directions, over every call moto judged: no function was denied anything, and each grant of each
    role is the only grant that allowed at least one of its function's calls, so removing it from
    serverless.yml would deny that call and fail its scenario."""
    calls = [c for c in stack.calls() if c["function"] is not None]
    assert calls, "no function made a judged call: is the proof's recording on?"
    denied = sorted({(c["function"], c["action"], c["resource"]) for c in calls if not c["allowed"]})
    assert not denied, "calls the deployed roles do not grant:\n" + "\n".join(map(str, denied))
    used: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for c in calls:
        used[c["function"]].add((c["action"], c["resource"]))
    unneeded = []
    for fn in stack.roles():
        grants = [(a, r) for st in _statements(stack, fn) for a in st["actions"] for r in st["resources"]]
        needed = set()
        for action, resource in used[fn]:
            allowing = [g for g in grants if _matches(g[0], action) and _matches(g[1], resource)]
            if len(allowing) == 1:
                needed.add(allowing[0])
        unneeded += [(fn, *g) for g in grants if g not in needed]
    assert not unneeded, "grants no call needed (remove them, or add the scenario that uses them):\n" + "\n".join(
        map(str, unneeded)
    )
    outside = [
        (fn, c["action"], key)
        for fn in stack.roles()
        for c in calls
        if c["function"] == fn
        for key in _outside_leading_keys(_statements(stack, fn), c)
    ]
    assert not outside, (
        "calls outside their grant's dynamodb:LeadingKeys (moto does not judge conditions):\n"
        + "\n".join(map(str, outside))
    )
    summary = {fn: len(used[fn]) for fn in stack.roles()}
    print(f"\ncalls judged: {len(calls)}; distinct (action, resource) per function: {summary}")
