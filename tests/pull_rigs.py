"""One rig per cloud for the pull worker's proofs and benchmark: the cloud's queue and stores on their local
stand-ins (moto's SQS, DynamoDB and S3 server; the Pub/Sub and Firestore emulators with a fake Cloud Storage;
the Service Bus fake with Azurite), the environment a worker process gets, and an in-process app to submit jobs
and read them back through the same adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from core.bootstrap import App
from core.models import JobRequest
from core.testing.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("ALTO_", "AWS_", "PUBSUB_", "FIRESTORE_"))}


@contextmanager
def gcp_emulators(logs: Path, sdk: Path) -> Iterator[dict[str, str]]:
    """The Pub/Sub and Firestore emulators of the Google Cloud CLI at `sdk`, started directly (the `gcloud ... start`
    wrapper leaves its java child running) and stopped by pid: their *_EMULATOR_HOST values."""
    from tests.contracts import stop, wait_port

    pubsub = sdk / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    firestore = sdk / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
    ps_port, fs_port = free_port(), free_port()
    ps = subprocess.Popen(
        [str(pubsub), "--host=127.0.0.1", f"--port={ps_port}"],
        stdout=open(logs / "pubsub.log", "w"),
        stderr=subprocess.STDOUT,
    )
    fs = subprocess.Popen(
        ["java", "-Duser.language=en", "-cp", str(firestore),
         "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "--host=127.0.0.1", f"--port={fs_port}"],
        stdout=open(logs / "firestore.log", "w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_port(ps_port, ps)
        wait_port(fs_port, fs)
        yield {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps_port}", "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{fs_port}"}
    finally:
        stop(ps)
        stop(fs)


def pull_config(provider_url: str, *, visibility_s: float, concurrency: int, **pull: Any) -> dict[str, Any]:
    """The deployed config a test worker runs: the fake provider, short leases, short waits."""
    return {
        "providers": {
            "fake": {"type": "anthropic", "api_key": "env:FAKE_KEY", "base_url": provider_url, "timeout_s": 60}
        },
        "models": {
            "m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1.0, "output_per_mtok": 5.0}
        },
        "routing": {"default": {"model": "m", "max_tokens": 64}},
        # a job's lease renewed every lease/3 s: 4 s leaves the Firestore emulator's contended transactions room
        # (at 2 s a renewal lost to contention let a redelivery take the job, recording its call `lost`)
        "governance": {
            "max_attempts": 4,
            "lease_s": 4,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "in_process_wait_s": 0.2,
        },
        "queue": {"visibility_timeout_s": visibility_s, "max_receives": 10},
        "pull": {"concurrency": concurrency, "job_deadline_s": 30, "drain_margin_s": 5, "wait_s": 1, **pull},
        "logging": {"level": "WARNING"},
    }


class Rig:
    """The clients of the in-process app read their endpoints from the process environment: the fixture that makes
    a rig sets `env` there too (and the Pub/Sub emulator's before a GCP rig is made)."""

    cloud = ""
    visibility_s = 2.0  # the queue's lease on a received message, which the worker must renew

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env: dict[str, str] = {
            **BASE_ENV,
            "ALTO_CONFIG": str(tmp_path / "altostratus.yaml"),
            "ALTO_DATA_DIR": str(tmp_path / "data"),
            "FAKE_KEY": "test-key",
        }
        self._app: App | None = None
        self.procs: list[subprocess.Popen[bytes]] = []  # every worker started, killed at close if still running

    def configure(self, config: dict[str, Any]) -> None:
        Path(self.env["ALTO_CONFIG"]).write_text(yaml.safe_dump(config))
        self._app = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "core.entrypoints.cli", "worker", "--cloud", self.cloud]

    def start_worker(self, probe_port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
        port = probe_port or free_port()
        log = open(self.tmp / f"worker-{port}.log", "wb")
        proc = subprocess.Popen([*self.argv(), "--port", str(port)], env=self.env, cwd=ROOT, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc, port

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = self.build()
        return self._app

    def build(self) -> App:
        raise NotImplementedError

    def submit(self, prompts: list[str]) -> list[str]:
        return [self.app.service.submit("acme", JobRequest(prompt=p))[0].id for p in prompts]

    def close(self) -> None:
        """Kill any worker a failed test left running (a passing one has stopped them all)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


class AwsRig(Rig):
    cloud = "aws"

    def __init__(self, tmp_path: Path, moto_url: str) -> None:
        import boto3

        from tests.test_aws import serverless_resources

        super().__init__(tmp_path)
        self.env.update(
            AWS_ENDPOINT_URL=moto_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        run = uuid.uuid4().hex[:8]
        sqs, ddb, s3 = (
            boto3.client(
                name,
                endpoint_url=moto_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            for name in ("sqs", "dynamodb", "s3")
        )
        dlq = sqs.create_queue(QueueName=f"dlq-{run}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"})
        self.queue_url = sqs.create_queue(
            QueueName=f"jobs-{run}", Attributes={"VisibilityTimeout": "2", "RedrivePolicy": redrive}
        )["QueueUrl"]
        self.sqs = sqs
        for logical in ("JobsTable", "StateTable"):
            p = serverless_resources()[logical]["Properties"]
            kwargs = {k: p[k] for k in ("AttributeDefinitions", "KeySchema", "BillingMode") if k in p}
            if "GlobalSecondaryIndexes" in p:
                kwargs["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
            ddb.create_table(TableName=f"{logical}-{run}", **kwargs)
        s3.create_bucket(Bucket=f"bucket-{run}")
        self.env.update(
            ALTO_JOBS_TABLE=f"JobsTable-{run}",
            ALTO_STATE_TABLE=f"StateTable-{run}",
            ALTO_QUEUE_URL=self.queue_url,
            ALTO_BUCKET=f"bucket-{run}",
        )

    def build(self) -> App:
        from adapters.aws.app import build
        from adapters.aws.clients import client
        from core.bootstrap import as_worker

        client.cache_clear()
        return as_worker(build(self.env))

    def backlog(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


class GcpRig(Rig):
    cloud = "gcp"
    visibility_s = 10.0  # Pub/Sub's shortest ack deadline

    def __init__(self, tmp_path: Path, emulators: dict[str, str], gcs_url: str) -> None:
        from google.cloud import pubsub_v1

        super().__init__(tmp_path)
        run = uuid.uuid4().hex[:8]
        project = f"alto-{run}"
        self.env.update(emulators)
        self.env.update(
            STORAGE_EMULATOR_HOST=gcs_url,
            ALTO_GCP_PROJECT=project,
            ALTO_TOPIC="alto-jobs",
            ALTO_SUBSCRIPTION="alto-jobs-pull",
            ALTO_BUCKET="alto-bucket",
        )
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name=f"projects/{project}/topics/alto-jobs").name
        # no dead-letter policy here: the emulator never redelivers a message nacked on a subscription that has
        # one (measured: a nacked message was still held after 60 s), and the drain hands messages back by nack
        subscriber.create_subscription(
            request={
                "name": f"projects/{project}/subscriptions/alto-jobs-pull",
                "topic": topic,
                "ack_deadline_seconds": int(self.visibility_s),
                "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
            }
        )

    def build(self) -> App:
        from adapters.gcp import clients
        from adapters.gcp.app import build
        from core.bootstrap import as_worker

        for c in (clients.publisher, clients.firestore, clients.storage, clients.subscriber):
            c.cache_clear()
        return as_worker(build(self.env))


class AzureRig(Rig):
    cloud = "azure"
    visibility_s = 5.0  # Service Bus's shortest lock duration

    def __init__(self, tmp_path: Path, azurite: str) -> None:
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient

        from tests.fakes.servicebus import Broker, BrokerServer

        super().__init__(tmp_path)
        run = uuid.uuid4().hex[:8]
        self.broker = BrokerServer(Broker(lock_duration_s=self.visibility_s, max_delivery_count=10))
        self.env.update(
            ALTO_STORAGE_CONNECTION=azurite,
            ALTO_QUEUE_NAME="alto-jobs",
            ALTO_JOBS_TABLE=f"jobs{run}",
            ALTO_STATE_TABLE=f"state{run}",
            ALTO_CONTAINER=f"alto{run}",
            ServiceBusConnection__fullyQualifiedNamespace=self.broker.url,
        )
        tables = TableServiceClient.from_connection_string(azurite)
        tables.create_table(self.env["ALTO_JOBS_TABLE"])
        tables.create_table(self.env["ALTO_STATE_TABLE"])
        BlobServiceClient.from_connection_string(azurite).create_container(self.env["ALTO_CONTAINER"])

    def argv(self) -> list[str]:  # the CLI with the SDK's client swapped for the fake's
        return [sys.executable, "-m", "tests.fakes.servicebus", "worker", "--cloud", "azure"]

    def build(self) -> App:
        from adapters.azure import app as azure_app
        from core.bootstrap import as_worker
        from tests.fakes.servicebus import Sender

        azure_app.reset()
        return as_worker(azure_app.build(self.env, sender_factory=lambda: Sender(self.broker.url)))

    def backlog(self) -> int:
        from tests.fakes.servicebus import stats

        return int(stats(self.broker.url)["active"])

    def close(self) -> None:
        super().close()
        self.broker.close()
