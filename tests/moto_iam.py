"""moto's server with IAM judged on every call, and every call recorded: the AWS deploy proof's cloud.

    python -m tests.moto_iam --port PORT --record CALLS.jsonl

moto evaluates identity policies once `INITIAL_NO_AUTH_ACTION_COUNT` calls have run (the proof turns it on
through `/moto-api/reset-auth` after deploying the stack), but its evaluator is basic. It judges SQS and S3
against the resource each call names; for every other service it judges the action against `*`, so a
statement scoped to a table or a secret (what least privilege writes) never matches. This module
teaches it three documented rules, and nothing else:

- the resource of a DynamoDB call is its table's ARN (a batch call's one table), or `.../index/NAME` for a
  query on an index;
- the resource of a Secrets Manager call is the secret's ARN;
- S3 answers a GetObject (or HEAD) of a missing key with 403, not 404, when the caller lacks
  `s3:ListBucket` on the bucket ("If you don't have the s3:ListBucket permission, Amazon S3 returns an
  HTTP status code 403");
- an API operation is authorized as the IAM action AWS documents for it, where moto asks for the
  operation's own name: SQS's batch operations as their single action (DeleteMessageBatch needs
  sqs:DeleteMessage; there is no sqs:DeleteMessageBatch permission), S3's ListObjectsV2 as s3:ListBucket and
  HeadObject as s3:GetObject.

Each judged call is appended to the record file as one JSON line (access key, action, resource, allowed),
so the proof can check in both directions: every call a function made was granted, and every grant a
function has was used.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from typing import Any

RECORD_LOCK = threading.Lock()
# operations whose IAM action has another name (the services' "actions defined by" reference pages)
IAM_ACTION = {
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "DeleteObjects"): "DeleteObject",
}


def _access_key(headers: Any) -> str:
    auth = headers.get("Authorization") or ""
    return auth.partition("Credential=")[2].partition("/")[0]


def _params(response: Any) -> dict[str, Any]:
    params = getattr(response, "params", None)
    if isinstance(params, dict) and params:
        return params
    body = getattr(response, "body", None)
    if isinstance(body, dict):
        return body
    try:
        return json.loads(body or "{}")
    except (TypeError, ValueError):
        return {}


def _leading_keys(response: Any, action: str) -> list[str] | None:
    """The partition key values a single-item DynamoDB call names, which `dynamodb:LeadingKeys` conditions test
    and moto's evaluator does not: recorded so the proof checks them itself."""
    if action not in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        return None
    params = _params(response)
    key = params.get("Key") or params.get("Item") or {}
    return [next(iter(v.values())) for v in key.values() if isinstance(v, dict) and v][:1]


def _resource(response: Any, resource: str) -> str:
    """The ARN a DynamoDB or Secrets Manager call acts on (moto passes `*` for both)."""
    service = getattr(response, "service_name", "")
    region, account = response.region, response.current_account
    params = _params(response)
    if service == "dynamodb" and len(params.get("RequestItems") or {}) == 1:  # BatchGetItem, BatchWriteItem
        params = {"TableName": next(iter(params["RequestItems"]))}
    if service == "dynamodb" and params.get("TableName"):
        arn = f"arn:aws:dynamodb:{region}:{account}:table/{params['TableName']}"
        return f"{arn}/index/{params['IndexName']}" if params.get("IndexName") else arn
    if service == "secretsmanager" and params.get("SecretId"):
        from moto.secretsmanager.models import secretsmanager_backends

        secret = secretsmanager_backends[account][region].secrets.get(params["SecretId"])
        return (
            secret.arn
            if secret is not None
            else f"arn:aws:secretsmanager:{region}:{account}:secret:{params['SecretId']}"
        )
    return resource


def _missing_s3_key(response: Any, resource: str) -> tuple[str, str] | None:
    """(bucket, key) when this is a read of an S3 key that does not exist."""
    if getattr(response, "service_name", "") != "s3" or response._get_action() not in ("GetObject", "HeadObject"):
        return None
    bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
    if not key:
        return None
    from moto.s3.models import s3_backends

    backend = s3_backends[response.current_account]["aws"]
    try:
        return None if backend.get_object(bucket, key) is not None else (bucket, key)
    except Exception:  # no such bucket: S3's own answer stands
        return None


def install(record_path: str) -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def record(response: Any, action: str, resource: str, allowed: bool) -> None:
        line = json.dumps(
            {
                "key": _access_key(response.headers),
                "action": action,
                "resource": resource,
                "allowed": allowed,
                "leading_keys": _leading_keys(response, action),
            }
        )
        with RECORD_LOCK, open(record_path, "a") as f:
            f.write(line + "\n")

    def judged(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
            return original(self, iam_request_cls, resource)  # deploying: nothing judged yet
        resource = _resource(self, resource)
        service = getattr(self, "service_name", "") or "s3"
        operation = self._get_action()
        single = IAM_ACTION.get((service, operation))
        action = f"{service}:{single or operation}"
        try:
            if single:  # judged as its IAM action; the operation still runs (dispatch reads the class's method)
                self._get_action = lambda: single
            try:
                original(self, iam_request_cls, resource)
            finally:
                self.__dict__.pop("_get_action", None)
            missing = _missing_s3_key(self, resource)
            if missing is not None:  # S3 says 403 here unless the caller may list the bucket
                listing = iam_request_cls(
                    account_id=self.current_account,
                    method=self.method,
                    path=self.raw_path,
                    data=self.data,
                    body=self.raw_body,
                    headers=self.headers,
                    action="ListBucket",
                )
                bucket = f"arn:aws:s3:::{missing[0]}"
                try:
                    listing.check_action_permitted(bucket)
                except Exception:
                    record(self, "s3:ListBucket", bucket, False)
                    raise
                record(self, "s3:ListBucket", bucket, True)  # the grant that turned a 403 into the 404
        except Exception:
            record(self, action, resource, False)
            raise
        record(self, action, resource, True)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = judged  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    install(args.record)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
