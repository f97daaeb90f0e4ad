"""The AWS adapter against moto in server mode: real HTTP, real boto3, no account, no network.

Tables and queues are created from the definitions in serverless.yml itself, and a poller does what
Lambda's SQS event source does: receive a batch, build the real event, call the handler, delete the
records not reported in batchItemFailures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.models import JobStatus
from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread, free_port
from tests.contracts import check_job_store, check_state_store

ROOT = Path(__file__).resolve().parent.parent
KEY = "aws-test-key"


class CfnLoader(yaml.SafeLoader):
    """Reads serverless.yml: CloudFormation short tags become {"!Tag": value}."""


CfnLoader.add_multi_constructor(
    "!",
    lambda loader, tag, node: {
        tag: (
            loader.construct_scalar(node)
            if isinstance(node, yaml.ScalarNode)
            else loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
        )
    },
)


def serverless_resources() -> dict[str, Any]:
    return yaml.load((ROOT / "serverless.yml").read_text(), Loader=CfnLoader)["resources"]["Resources"]


class Context:
    """What the handlers read from Lambda's context object."""

    def __init__(self, remaining_s: float = 60.0) -> None:
        self.deadline = time.monotonic() + remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


class Aws:
    def __init__(self, url: str, monkeypatch, tmp_path: Path, max_receive: int) -> None:
        import boto3

        for k, v in {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        self.sqs, self.ddb, self.s3 = (boto3.client(s, endpoint_url=url) for s in ("sqs", "dynamodb", "s3"))
        run = uuid.uuid4().hex[:8]
        res = serverless_resources()
        self.dlq_url = self.sqs.create_queue(QueueName=f"dlq-{run}")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.queue_url = self.sqs.create_queue(
            QueueName=f"jobs-{run}",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
            },
        )["QueueUrl"]
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for logical in ("JobsTable", "StateTable"):
            p = res[logical]["Properties"]
            kwargs = {k: p[k] for k in ("AttributeDefinitions", "KeySchema", "BillingMode")}
            if "GlobalSecondaryIndexes" in p:
                kwargs["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
            self.ddb.create_table(TableName=f"{logical}-{run}", **kwargs)
        self.jobs_table, self.state_table = f"JobsTable-{run}", f"StateTable-{run}"
        self.bucket = f"bucket-{run}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.config = tmp_path / "altostratus.yaml"
        self.env = {
            "ALTO_JOBS_TABLE": self.jobs_table,
            "ALTO_STATE_TABLE": self.state_table,
            "ALTO_QUEUE_URL": self.queue_url,
            "ALTO_BUCKET": self.bucket,
            "ALTO_CONFIG": str(self.config),
            "ALTO_DATA_DIR": str(tmp_path / "lambda-tmp"),
            "ALTO_API_KEYS": f"acme={KEY}",
        }
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        self.configure({})

    def configure(self, config: dict[str, Any]) -> None:
        from adapters.aws import app as aws_app
        from adapters.aws.clients import client

        self.config.write_text(yaml.safe_dump(config))
        client.cache_clear()
        aws_app.get_app.reset()
        aws_app.get_api_app.reset()
        import adapters.aws.handlers as handlers

        self.handlers = handlers

    @property
    def app(self):
        from adapters.aws.app import get_app

        return get_app()

    def http(
        self, method: str, path: str, body: Any = None, key: str | None = KEY, query: str = "", raw: bool = False
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {"http": {"method": method, "path": path}, "domainName": "api.example.com"},
            "body": json.dumps(body) if body is not None else None,
            "isBase64Encoded": False,
        }
        r = self.handlers.api(event, Context())
        return r["statusCode"], (r if raw else json.loads(r["body"]))

    def submit(self, prompt: str, **extra: Any) -> str:
        status, body = self.http("POST", "/v1/jobs", {"prompt": prompt, **extra})
        assert status == 202, body
        return body["job_id"]

    def receive(self, url: str | None = None, visibility: int = 30) -> list[dict[str, Any]]:
        r = self.sqs.receive_message(
            QueueUrl=url or self.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        return r.get("Messages", [])

    def event(self, messages: list[dict[str, Any]], arn: str | None = None) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn or self.queue_arn,
                    "awsRegion": "us-east-1",
                }
                for m in messages
            ]
        }

    def lambda_batch(self, messages: list[dict[str, Any]], url: str | None = None, fn: str = "worker") -> set[str]:
        """One Lambda invocation: call the handler, then delete what it did not report as failed."""
        result = getattr(self.handlers, fn)(self.event(messages), Context())
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=url or self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return failed

    def drain(self, timeout_s: float = 20.0) -> None:
        """Poll like the event source mapping until the queue is empty (delayed messages included)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = self.receive()
            if messages:
                self.lambda_batch(messages)
                continue
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
            if all(
                attrs[a] == "0"
                for a in (
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                )
            ):
                return
            time.sleep(0.2)
        raise AssertionError("queue did not drain")


@pytest.fixture
def aws(moto_url, monkeypatch, tmp_path) -> Aws:
    return Aws(moto_url, monkeypatch, tmp_path, max_receive=2)


def anthropic_cfg(url: str, **governance: Any) -> dict[str, Any]:
    return {
        "providers": {"fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": url, "timeout_s": 10}},
        "models": {
            "m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}
        },
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        "governance": {"backoff_base_s": 0.5, "backoff_max_s": 1, "in_process_wait_s": 0, **governance},
    }


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "test-key")
    f = FakeAnthropic(FaultPlan())
    with ServerThread(f) as srv:
        yield f, srv.url


# ---------------------------------------------------------------- end to end


def test_api_to_sqs_to_worker_to_dynamodb_to_api_get(aws):
    assert aws.http("POST", "/v1/jobs", {"prompt": "hi"}, key=None)[0] == 401
    status, spec = aws.http("GET", "/openapi.json")
    assert status == 200
    assert "/v1/jobs" in spec["paths"]
    job_id = aws.submit("What is a visibility timeout?")
    status, view = aws.http("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert view["status"] == "queued"
    item = aws.ddb.get_item(TableName=aws.jobs_table, Key={"id": {"S": job_id}})["Item"]
    assert item["status"]["S"] == "queued"
    assert item["tenant"]["S"] == "acme"
    aws.drain()
    status, view = aws.http("GET", f"/v1/jobs/{job_id}")
    assert view["status"] == "succeeded"
    assert view["result"]
    assert view["trace_id"]
    item = aws.ddb.get_item(TableName=aws.jobs_table, Key={"id": {"S": job_id}})["Item"]
    assert int(item["expires_at"]["N"]) > time.time() + 29 * 86400  # terminal jobs get the TTL attribute


def http_api_event(method: str, raw_path: str, stage: str, body: Any = None) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event as API Gateway sends it: on a named stage, rawPath carries the
    stage while requestContext.http.path and routeKey do not (cf. the AWS Lambda developer guide's
    nodejs-apig sample and Powertools' apiGatewayProxyV2Event)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "authorization": f"Bearer {KEY}", "host": "evil.example"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "r3pmxmplak",
            "stage": stage,
            "domainName": "r3pmxmplak.execute-api.us-east-2.amazonaws.com",
            "domainPrefix": "r3pmxmplak",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "1.2.3.4",
                "userAgent": "curl",
            },
            "requestId": "id",
            "routeKey": "$default",
            "timeEpoch": 0,
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def test_an_http_api_on_a_named_stage_routes_without_the_stage_and_names_its_own_domain(aws):
    r = aws.handlers.api(http_api_event("POST", "/prod/v1/jobs", "prod", {"prompt": "hi"}), Context())
    assert r["statusCode"] == 202, r
    body = json.loads(r["body"])
    assert body["status_url"] == f"https://r3pmxmplak.execute-api.us-east-2.amazonaws.com/v1/jobs/{body['job_id']}"
    got = aws.handlers.api(http_api_event("GET", f"/prod/v1/jobs/{body['job_id']}", "prod"), Context())
    assert got["statusCode"] == 200
    assert aws.handlers.api(http_api_event("GET", "/healthz", "$default"), Context())["statusCode"] == 200


def test_a_rest_api_payload_1_event_is_refused_naming_the_payload_format(aws):
    event = {  # payload format 1.0 (REST API, ALB): path and httpMethod, no rawPath
        "version": "1.0",
        "resource": "/v1/jobs",
        "path": "/v1/jobs",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        "requestContext": {"stage": "prod", "httpMethod": "POST", "path": "/prod/v1/jobs"},
        "body": json.dumps({"prompt": "hi"}),
        "isBase64Encoded": False,
    }
    for e in (event, {k: v for k, v in event.items() if k != "version"}):
        r = aws.handlers.api(e, Context())
        err = json.loads(r["body"])["error"]
        assert r["statusCode"] == 400
        assert err["code"] == "unsupported_event"
        assert "payload format 1.0" in err["message"]
    assert aws.app.store.list(limit=5) == []


def test_a_collection_with_no_documents_is_failed_by_the_worker_saying_why(aws):
    """The api function (ApiSettings, no retriever) accepts the job; the worker, which can look, fails it."""
    job_id = aws.submit("What does the manual say?", collection="manuals")
    aws.drain()
    _status, view = aws.http("GET", f"/v1/jobs/{job_id}")
    assert view["status"] == "failed"
    assert not view["attempts"]
    assert "collection 'manuals' has no documents" in view["error"]["message"]
    assert "alto ingest PATH --collection manuals" in view["error"]["message"]


def test_poison_record_fails_alone_then_reaches_the_dlq_and_is_marked(aws):
    dead_port = free_port()  # nothing listens: every call is a transient connection error
    cfg = anthropic_cfg("http://127.0.0.1:1", max_attempts=10)
    cfg["providers"]["dead"] = {
        "type": "anthropic",
        "api_key": "env:FAKE_KEY",
        "base_url": f"http://127.0.0.1:{dead_port}",
    }
    cfg["models"]["broken"] = {"provider": "dead", "model_id": "claude-haiku-4-5"}
    cfg["routing"] = {
        "default": {"model": "offline", "max_tokens": 64},
        "rules": [{"name": "poison", "match": {"tags": {"poison": "yes"}}, "route": {"model": "broken"}}],
    }
    aws.configure(cfg)
    import os

    os.environ["FAKE_KEY"] = "k"
    good = [aws.submit(f"question {i}") for i in range(2)]
    bad = aws.submit("this one always fails", metadata={"poison": "yes"})
    messages = aws.receive()
    assert len(messages) == 3
    failed = aws.lambda_batch(messages)
    bad_message = next(m["MessageId"] for m in messages if json.loads(m["Body"])["job_id"] == bad)
    assert failed == {bad_message}  # exactly the poison record; its siblings were deleted
    for j in good:
        assert aws.app.store.get(j).status is JobStatus.succeeded
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # redelivered after the retry delay, fails again, then redriven
        messages = aws.receive()
        if messages:
            assert aws.lambda_batch(messages) == {m["MessageId"] for m in messages}
        dead = aws.receive(aws.dlq_url)
        if dead:
            break
        time.sleep(0.3)
    assert dead
    assert json.loads(dead[0]["Body"])["job_id"] == bad
    result = aws.handlers.dead_letter(aws.event(dead), Context())
    assert result == {"batchItemFailures": []}
    job = aws.app.store.get(bad)
    assert job.status is JobStatus.dead_lettered
    assert job.provider_calls == 2
    assert "dead-lettered by the queue" in job.error.message
    assert job.attempts[-1].error_class.value == "transient"


def test_duplicate_delivery_bills_once(aws, fake):
    f, url = fake
    aws.configure(anthropic_cfg(url))
    job_id = aws.submit("bill me once")
    body = aws.receive(visibility=0)[0]["Body"]
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)  # at-least-once: the same message twice
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        messages += aws.receive()
    assert aws.lambda_batch(messages) == set()  # both copies in one batch: one call, both deleted
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)  # a late duplicate, after the result
    aws.drain()
    job = aws.app.store.get(job_id)
    assert job.status is JobStatus.succeeded
    assert job.provider_calls == 1
    assert f.stats["calls"] == 1


def test_batch_of_ten_runs_its_records_concurrently(aws, fake):
    f, url = fake
    aws.configure(anthropic_cfg(url))
    aws.submit("warm the container up")  # the first invocation imports the SDK and loads the tokenizer
    aws.drain()
    f.plan.latency_s = 1.0
    ids = [aws.submit(f"q{i}") for i in range(10)]
    messages: list[dict[str, Any]] = []
    while len(messages) < 10:
        messages += aws.receive()
    t = time.perf_counter()
    failed = aws.lambda_batch(messages)
    elapsed = time.perf_counter() - t
    print(f"\nbatch of 10, provider latency 1 s: {elapsed:.2f} s")
    assert failed == set()
    assert f.max_inflight == 10  # all ten calls were in flight at once
    assert all(aws.app.store.get(i).status is JobStatus.succeeded for i in ids)


def test_message_over_256_kb_travels_via_s3(aws):
    queue = aws.app.queue
    big = json.dumps({"job_id": "x", "tenant": "acme", "trace_id": "t", "pad": "z" * 300_000})
    queue.send(big)
    raw = aws.receive()[0]
    assert len(raw["Body"]) < 1000
    assert json.loads(raw["Body"])["claim_check"].startswith("claim-check/")
    assert aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="claim-check/")["KeyCount"] == 1
    d = queue.delivery(raw["MessageId"], raw["Body"], raw["ReceiptHandle"], raw["Attributes"])
    assert d.body == big
    assert d.receive_count == 1
    queue.send("small")
    assert aws.receive()[0]["Body"] == "small"


def test_a_claim_check_that_cannot_be_read_fails_its_own_record_not_the_batch(aws, monkeypatch):
    good = aws.submit("a sibling in the same batch")
    sqs_send = aws.sqs.send_message
    sqs_send(QueueUrl=aws.queue_url, MessageBody=json.dumps({"claim_check": "claim-check/expired", "bytes": 99}))
    sqs_send(QueueUrl=aws.queue_url, MessageBody=json.dumps({"claim_check": "claim-check/unreadable", "bytes": 99}))
    blobs = aws.app.blobs
    real_get = blobs.get

    def get(key: str) -> bytes:
        if key == "claim-check/unreadable":
            raise ConnectionError("S3 is unreachable")
        return real_get(key)

    monkeypatch.setattr(blobs, "get", get)
    messages: list[dict[str, Any]] = []
    while len(messages) < 3:
        messages += aws.receive()
    failed = aws.lambda_batch(messages)
    by_body = {json.loads(m["Body"]).get("claim_check"): m["MessageId"] for m in messages}
    # each retried alone (the expired one's pointer, unparseable, heads for the DLQ for review)
    assert failed == {by_body["claim-check/unreadable"], by_body["claim-check/expired"]}
    assert aws.app.store.get(good).status is JobStatus.succeeded


def test_reconcile_handler_requeues_a_job_whose_message_was_lost(aws):
    job_id = aws.submit("lost message")
    for m in aws.receive():
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert aws.handlers.reconcile({}, Context())["requeued"] == 0  # too recent for the scheduled sweep
    time.sleep(0.05)
    assert aws.handlers.reconcile({"older_than_s": 0.01}, Context())["requeued"] == 1
    aws.drain()
    assert aws.app.store.get(job_id).status is JobStatus.succeeded


# ---------------------------------------------------------------- ports


def test_dynamodb_stores_keep_the_port_contracts(aws):
    from adapters.aws.clients import client
    from adapters.aws.dynamodb import DynamoJobStore, DynamoStateStore

    def corrupt(job_id: str) -> None:
        client("dynamodb").update_item(
            TableName=aws.jobs_table,
            Key={"id": {"S": job_id}},
            UpdateExpression="SET #d = :d",
            ExpressionAttributeNames={"#d": "data"},
            ExpressionAttributeValues={":d": {"S": '{"id": "not a job"}'}},
        )

    check_job_store(DynamoJobStore(lambda: client("dynamodb"), aws.jobs_table), corrupt=corrupt)
    check_state_store(lambda clock: DynamoStateStore(lambda: client("dynamodb"), aws.state_table, clock=clock))


def test_s3_blobs_and_secrets_manager(aws):
    import boto3

    blobs = aws.app.blobs
    blobs.put("docs/a.md", b"# A")
    assert blobs.get("docs/a.md") == b"# A"
    assert blobs.list("docs/") == ["docs/a.md"]
    with pytest.raises(KeyError):
        blobs.get("docs/missing.md")
    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="altostratus/anthropic", SecretString="sk-plain")
    sm.create_secret(Name="altostratus/json", SecretString=json.dumps({"key": "sk-json"}))
    secrets = aws.app.secrets
    assert secrets.resolve("aws-sm:altostratus/anthropic") == "sk-plain"
    assert secrets.resolve("aws-sm:altostratus/json#key") == "sk-json"
    sm.put_secret_value(SecretId="altostratus/anthropic", SecretString="rotated")
    assert secrets.resolve("aws-sm:altostratus/anthropic") == "sk-plain"  # cached for the container's life
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="no such secret"):
        secrets.resolve("aws-sm:altostratus/nope")


def test_the_submit_path_loads_neither_the_llm_sdk_nor_the_worker_side(aws):
    """A real submit through the api handler, in a fresh process: no LLM SDK, tokenizer or NumPy, no
    boto3 layer (botocore is enough), no asyncio (a synchronous handler; ~9 ms of import), and none of
    the job-processing config, routing or retrieval."""
    code = (  # noqa: UP031  a code template full of braces
        "import sys, json; import adapters.aws.handlers as h\n"
        "class C:\n    def get_remaining_time_in_millis(self): return 10000\n"
        "e = {'rawPath': '/v1/jobs', 'headers': {'authorization': 'Bearer %s'}, 'requestContext': "
        "{'http': {'method': 'POST'}}, 'body': json.dumps({'prompt': 'hi'})}\n"
        "r = h.api(e, C()); assert r['statusCode'] == 202, r\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('anthropic', 'httpx2', 'tiktoken', 'numpy', "
        "'boto3', 'asyncio') or m in ('core.config.worker', 'core.routing', 'core.retrieval', 'core.providers'))))"
    ) % KEY
    import os

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=os.environ, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_map_over_three_then_reduce_workflow_runs_end_to_end_on_sqs_and_dynamodb(aws, fake):
    from tests.test_workflows import document

    f, url = fake
    aws.configure(anthropic_cfg(url))
    status, body = aws.http("POST", "/v1/jobs", {"workflow": "summarize", "inputs": {"document": document(3, 2500)}})
    assert status == 202, body
    aws.drain(timeout_s=60)
    status, view = aws.http("GET", f"/v1/jobs/{body['job_id']}")
    assert view["status"] == "succeeded", view
    assert view["result"], view
    assert [s["children"]["total"] for s in view["steps"]] == [3, 1]
    assert view["usage"]["calls"] == 4 == f.stats["calls"]
    stored = aws.app.store.get(body["job_id"]).request.inputs["document"]
    assert stored.startswith("blob:")  # the 30 KB document went to S3, the item stays small
    aws.s3.head_object(Bucket=aws.bucket, Key=stored[5:])
    kids = aws.app.service.children("acme", body["job_id"])
    assert len(kids) == 4
    assert all(k.provider_calls == 1 and k.status is JobStatus.succeeded for k in kids)
    status, cancelled = aws.http("DELETE", f"/v1/jobs/{body['job_id']}")
    assert status == 409
    assert "already succeeded" in cancelled["error"]["message"]


def test_a_streaming_job_long_polls_and_serves_buffered_sse_through_the_lambda_api(aws, fake):
    f, url = fake
    f.plan.stream_tokens = 30
    aws.configure(anthropic_cfg(url))
    job_id = aws.submit("stream through lambda", stream=True)
    status, view = aws.http("GET", f"/v1/jobs/{job_id}", query="after=0&wait_s=0.2")
    assert status == 200
    assert view["status"] == "queued"
    assert view["partial"] is None  # waited, then answered
    aws.drain()
    status, view = aws.http("GET", f"/v1/jobs/{job_id}", query="after=0&wait_s=5")
    assert view["status"] == "succeeded"
    assert "tok29" in view["result"]
    status, r = aws.http("GET", f"/v1/jobs/{job_id}/events", raw=True)  # API Gateway buffers: one batch, then EOF
    assert status == 200
    assert r["headers"]["content-type"] == "text/event-stream"
    body = r["body"]
    assert body.startswith("retry: 1000")
    assert "id: 1:1\nevent: delta" in body
    assert "event: done" in body


def test_the_batch_lane_is_sent_and_applied_by_the_scheduled_reconcile(aws, fake):
    f, url = fake
    aws.configure({**anthropic_cfg(url), "batch": {"flush_s": 0.01}})
    job_id = aws.submit("a report nobody waits for", lane="batch")
    aws.drain()  # the worker claims it for the batch lane and acknowledges its message
    assert aws.app.store.get(job_id).batch.state == "pending"
    assert f.stats["calls"] == 0
    time.sleep(0.05)
    counts = aws.handlers.reconcile({}, Context())  # EventBridge's schedule: send the batch, it ends, apply it
    assert counts["batch_submitted"] == 1
    assert counts["batch_applied"] == 1
    _status, view = aws.http("GET", f"/v1/jobs/{job_id}")
    assert view["status"] == "succeeded"
    assert view["lane"] == "batch"
    assert view["batch_id"].startswith("msgbatch_")
    assert f.stats["calls"] == 0
    assert f.batches.items == 1


def test_the_worker_writes_emf_lines_that_cloudwatch_reads(aws, capsys):
    from tests.test_observability import emf_records

    shipped = yaml.safe_load((ROOT / "infra" / "aws" / "altostratus.yaml").read_text())["observability"]
    assert shipped["emf"]["enabled"] is True
    assert shipped["prometheus"] is False  # as deployed
    aws.configure({"observability": shipped})
    capsys.readouterr()
    job_id = aws.submit("What is a visibility timeout?")
    aws.drain()
    records = emf_records(capsys.readouterr().out)
    [job] = [r for r in records if r["Event"] == "job"]
    [attempt] = [r for r in records if r["Event"] == "attempt"]
    assert job["Status"] == "succeeded"
    assert job["Jobs"] == 1
    assert job["Tenant"] == "acme"
    assert attempt["Outcome"] == "succeeded"
    assert attempt["InputTokens"] == aws.app.store.get(job_id).usage.input_tokens
    namespaces = {d["Namespace"] for r in records for d in r["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {shipped["emf"]["namespace"]}


def test_acknowledgements_a_failed_batch_delete_could_not_delete_wait_for_the_next_flush(aws):
    """The pull worker's acks are deleted ten to a call; a DeleteMessageBatch that fails (SQS unreachable) keeps
    them, and the next flush deletes them: no ack is dropped on the floor to come back as a redelivery."""
    import boto3
    from botocore.config import Config

    from adapters.aws.sqs import SqsQueue

    unreachable = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    clients = [aws.sqs]
    queue = SqsQueue(lambda: clients[-1], aws.queue_url, aws.app.blobs, visibility_timeout_s=30)
    for i in range(3):
        queue.send(f"message {i}")
    got = queue.receive(max_messages=10)
    assert len(got) == 3
    for d in got:
        queue.ack(d)  # fewer than ten: waiting for the next receive or close
    clients.append(unreachable)
    with pytest.raises(Exception, match="Could not connect"):
        queue.flush()
    clients.pop()
    queue.close()
    attrs = aws.sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
