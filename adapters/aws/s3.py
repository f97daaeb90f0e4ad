"""BlobStore on S3: claim-check payloads, documents to ingest, index snapshots, spilled streams, audit logs.

A missing key is `KeyError` (the port's contract). S3 answers a read of a missing key with 403 instead of
404 when the caller may not list the bucket, so a 403 is reported as `AccessDenied` naming both grants
(`s3:GetObject` on the prefix, `s3:ListBucket` on the bucket): a permanent, explained failure, never a
crash that is retried until the message dead-letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import AccessDenied

MISSING = ("NoSuchKey", "404", "NotFound")


def _error(e: Exception) -> tuple[str, int] | None:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code", "")), int(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    )


class S3BlobStore:
    def __init__(self, client: Callable[[], Any], bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def _denied(self, action: str, key: str) -> AccessDenied:
        return AccessDenied(
            f"s3:{action} on s3://{self.bucket}/{key} was denied: grant the function's role s3:{action} on "
            f"'{key.split('/', 1)[0]}/*' (and s3:ListBucket on the bucket, without which S3 answers 403 for a missing "
            "key) in serverless.yml"
        )

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception as e:
            if (err := _error(e)) is not None and err[1] == 403:
                raise self._denied("PutObject", key) from None
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as e:
            err = _error(e)
            if err is not None and (err[0] in MISSING or err[1] == 404):
                raise KeyError(key) from None
            if err is not None and err[1] == 403:
                raise self._denied("GetObject", key) from None
            raise

    def delete(self, key: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        try:
            for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except Exception as e:
            if (err := _error(e)) is not None and err[1] == 403:
                raise AccessDenied(
                    f"s3:ListBucket on s3://{self.bucket} (prefix '{prefix}') was denied: grant the "
                    "function's role s3:ListBucket on the bucket in serverless.yml"
                ) from None
            raise
        return keys
