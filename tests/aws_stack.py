"""The AWS deployment as `osls deploy` makes it, in moto with IAM judged: the proof's cloud and functions.

`Deployment` runs `tests.moto_iam` (moto's server, IAM judged and every call recorded) in its own process,
deploys the template `osls package` produced exactly as osls deploys it (the create-stack template with
the deployment bucket, the bundle uploaded, then the update-stack template), then turns authorization on.
From then on every call needs credentials, and each deployed function holds only its own role's: its
process (`tests.lambda_host`) gets the template's environment for it and credentials from STS AssumeRole
on its role. `EventSource` does what a Lambda SQS event source mapping does, with the mapping's deployed
settings and the function's role, as AWS's does.

Two of moto's gaps are filled here and said so: its CloudFormation stores a role's inline policies as a
Python repr (they are written back as the JSON the template resolved to), and its SQS would invoke the
functions through Docker when an event source mapping is enabled (the mappings are read, then disabled,
and `EventSource` polls in their place).
"""

from __future__ import annotations

import ast
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
STACK = "altostratus-ci"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]


class FunctionError(AssertionError):
    """An invocation ended in an unhandled exception (Lambda's function error)."""


class Function:
    """One deployed function: a long-lived process (a warm container) with the function's environment."""

    def __init__(self, name: str, props: dict[str, Any], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.handler = props["Handler"]
        self.timeout_s = float(props.get("Timeout", 6))
        self.env = env
        self.log_path = log
        self._log = open(log, "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.lambda_host", self.handler, str(self.timeout_s)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )

    def invoke(self, event: dict[str, Any]) -> Any:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write((json.dumps(event) + "\n").encode())
        self._proc.stdin.flush()
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s + 30)
        if not ready:
            raise FunctionError(f"{self.name} did not answer within its timeout; log:\n{self.log()[-3000:]}")
        line = self._proc.stdout.readline()
        if not line:
            raise FunctionError(f"{self.name} exited; log:\n{self.log()[-3000:]}")
        out = json.loads(line)
        if "error" in out:
            raise FunctionError(f"{self.name} raised {out['type']}: {out['error']}\n{self.log()[-3000:]}")
        return out["result"]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()


class EventSource:
    """A Lambda SQS event source mapping: receive a batch with the function's role, invoke, delete the records
    not reported in batchItemFailures (all of them when the invocation fails)."""

    def __init__(self, mapping: dict[str, Any], queue_url: str, function: Function, sqs: Any) -> None:
        self.mapping = mapping
        self.queue_url = queue_url
        self.function = function
        self.sqs = sqs  # a client holding the function's role's credentials
        self.arn = mapping["EventSourceArn"]
        # AWS checks the role may read the queue when the mapping is created, and again as it polls
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])

    def receive(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.mapping["BatchSize"]),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }

    def poll_once(self) -> int:
        """One batch through the function; the number of records it got."""
        messages = self.receive()
        if not messages:
            return 0
        try:
            result = self.function.invoke(self.event(messages))
        except FunctionError:
            return len(messages)  # nothing deleted: each record comes back after the visibility timeout
        reports = "ReportBatchItemFailures" in self.mapping.get("FunctionResponseTypes", [])
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])} if reports else set()
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)


class Deployment:
    def __init__(self, packaged: Path, workdir: Path, extra_env: dict[str, str]) -> None:
        from core.testing.servers import free_port

        self.workdir = workdir
        self.record = workdir / "calls.jsonl"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.moto_iam", "--port", str(self.port), "--record", str(self.record)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(workdir / "moto.log", "ab"),
        )
        assert self._server.stdout is not None
        assert self._server.stdout.readline().strip() == b"ready"
        self.template = json.loads((packaged / "cloudformation-template-update-stack.json").read_text())
        self.functions: dict[str, Function] = {}
        try:
            self._deploy(packaged)
            self.resources = self._physical_ids()
            self.mappings = self._mappings()
            self.admin = self._admin()
            self.credentials = self._assume_roles()
            self._authorize()
            self._start_functions(extra_env)
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------------ deploying

    def client(self, service: str, creds: dict[str, str] | None = None) -> Any:
        import boto3

        creds = creds or {"aws_access_key_id": "deployer", "aws_secret_access_key": "deployer"}
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **creds)

    def _deploy(self, packaged: Path) -> None:
        """As `osls deploy`: the create-stack template (the deployment bucket), the bundle, the full template."""
        cfn = self.client("cloudformation")
        cfn.create_stack(
            StackName=STACK,
            TemplateBody=(packaged / "cloudformation-template-create-stack.json").read_text(),
            Capabilities=CAPABILITIES,
        )
        bucket = self._stack_resource(cfn, "ServerlessDeploymentBucket")
        keys = {
            fn["Properties"]["Code"]["S3Key"]
            for fn in self.template["Resources"].values()
            if fn["Type"] == "AWS::Lambda::Function"
        }
        for key in keys:
            self.client("s3").put_object(Bucket=bucket, Key=key, Body=(packaged / "altostratus.zip").read_bytes())
        cfn.update_stack(StackName=STACK, TemplateBody=json.dumps(self.template), Capabilities=CAPABILITIES)
        status = cfn.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"]
        assert status == "UPDATE_COMPLETE", status
        iam = self.client("iam")
        for role in iam.list_roles()["Roles"]:  # moto's CloudFormation keeps inline policies as Python reprs
            for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
                if isinstance(doc, str):
                    iam.put_role_policy(
                        RoleName=role["RoleName"], PolicyName=name, PolicyDocument=json.dumps(ast.literal_eval(doc))
                    )

    @staticmethod
    def _stack_resource(cfn: Any, logical: str) -> str:
        for r in cfn.describe_stack_resources(StackName=STACK)["StackResources"]:
            if r.get("LogicalResourceId") == logical:
                return str(r["PhysicalResourceId"])
        raise KeyError(logical)

    def _physical_ids(self) -> dict[str, str]:
        cfn = self.client("cloudformation")
        return {
            r["LogicalResourceId"]: str(r["PhysicalResourceId"])
            for r in cfn.describe_stack_resources(StackName=STACK)["StackResources"]
            if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
        }

    def _mappings(self) -> dict[str, dict[str, Any]]:
        """The deployed event source mappings by queue logical id, read and then disabled (see the module doc)."""
        lam = self.client("lambda")
        out = {}
        for m in lam.list_event_source_mappings()["EventSourceMappings"]:
            queue = next(
                k
                for k, v in self.template["Resources"].items()
                if v["Type"] == "AWS::SQS::Queue"
                and m["EventSourceArn"].endswith(":" + self.resources[k].rsplit("/", 1)[-1])
            )
            out[queue] = m
            lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
        return out

    def _admin(self) -> dict[str, str]:
        """An operator's own credentials (the test's hands: publishing a snapshot, reading the queues)."""
        iam = self.client("iam")
        iam.create_user(UserName="operator")
        iam.put_user_policy(
            UserName="operator",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="operator")["AccessKey"]
        return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

    def roles(self) -> dict[str, str]:
        """Function logical name (Api, Worker, ...) -> its role's logical id, as the template wires them."""
        return {
            name.removesuffix("LambdaFunction"): fn["Properties"]["Role"]["Fn::GetAtt"][0]
            for name, fn in self.template["Resources"].items()
            if fn["Type"] == "AWS::Lambda::Function"
        }

    def _assume_roles(self) -> dict[str, dict[str, str]]:
        sts = self.client("sts")
        out = {}
        for fn, role in self.roles().items():
            arn = self.client("iam").get_role(RoleName=self.resources[role])["Role"]["Arn"]
            c = sts.assume_role(RoleArn=arn, RoleSessionName=fn)["Credentials"]
            out[fn] = {
                "aws_access_key_id": c["AccessKeyId"],
                "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"],
            }
        return out

    def _authorize(self) -> None:
        """Authorization on for every call from here: moto's reset-auth with no free calls left."""
        req = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )  # a form body would be parsed away
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200

    # ------------------------------------------------------------------ running

    def _resolve(self, value: Any) -> str:
        if isinstance(value, dict) and "Ref" in value:
            return self.resources[value["Ref"]]
        assert isinstance(value, str), f"an environment value this harness can't resolve: {value}"
        return value

    def environment(self, fn: str) -> dict[str, str]:
        props = self.template["Resources"][f"{fn}LambdaFunction"]["Properties"]
        creds = self.credentials[fn]
        env = {k: self._resolve(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        tmp = self.workdir / fn / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            **env,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
            "AWS_SESSION_TOKEN": creds["aws_session_token"],
            "AWS_LAMBDA_FUNCTION_NAME": props["FunctionName"],
            "TMPDIR": str(tmp),
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _start_functions(self, extra_env: dict[str, str]) -> None:
        for fn in self.roles():
            props = self.template["Resources"][f"{fn}LambdaFunction"]["Properties"]
            self.functions[fn] = Function(fn, props, {**self.environment(fn), **extra_env}, self.workdir / f"{fn}.log")

    def event_source(self, queue: str) -> EventSource:
        mapping = self.mappings[queue]
        fn = next(
            f
            for f, function in self.functions.items()
            if mapping["FunctionArn"].endswith(":" + function.env["AWS_LAMBDA_FUNCTION_NAME"])
        )
        return EventSource(mapping, self.resources[queue], self.functions[fn], self.client("sqs", self.credentials[fn]))

    def calls(self) -> list[dict[str, Any]]:
        """Every judged call so far, with the function whose role made it (None: the operator)."""
        by_key = {c["aws_access_key_id"]: fn for fn, c in self.credentials.items()}
        out = []
        for line in self.record.read_text().splitlines() if self.record.exists() else []:
            call = json.loads(line)
            call["function"] = by_key.get(call["key"])
            out.append(call)
        return out

    def wait(self, done: Callable[[], bool], sources: list[EventSource], timeout_s: float = 30.0) -> None:
        """Poll the event sources until `done()`, as the mappings would while messages arrive."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    "timed out waiting; logs:\n"
                    + "\n".join(f"--- {f.name}\n{f.log()[-2000:]}" for f in self.functions.values())
                )
            if not sum(s.poll_once() for s in sources):
                time.sleep(0.1)

    def stop(self) -> None:
        for f in self.functions.values():
            f.stop()
        self._server.terminate()
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
