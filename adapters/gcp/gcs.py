"""BlobStore on Cloud Storage: claim-check payloads, documents to ingest, index snapshots, streams, audit logs.

A missing object is `KeyError` (the port's contract); a 403 is `AccessDenied` naming the binding to add, a
permanent and explained failure rather than a crash retried until the message dead-letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import AccessDenied


class GcsBlobStore:
    def __init__(self, client: Callable[[], Any], bucket: str) -> None:
        self._client = client
        self.bucket_name = bucket

    def _bucket(self) -> Any:
        return self._client().bucket(self.bucket_name)

    def _denied(self, permission: str, key: str) -> AccessDenied:
        return AccessDenied(
            f"{permission} on gs://{self.bucket_name}/{key} was denied: give the function's service account a storage "
            f"role on the '{key.split('/', 1)[0]}/' prefix in infra/gcp/functions.tf (local.grants)"
        )

    def put(self, key: str, data: bytes) -> None:
        from google.api_core.exceptions import Forbidden

        try:
            self._bucket().blob(key).upload_from_string(data, content_type="application/octet-stream")
        except Forbidden:
            raise self._denied("storage.objects.create", key) from None

    def get(self, key: str) -> bytes:
        from google.api_core.exceptions import Forbidden, NotFound

        try:
            return self._bucket().blob(key).download_as_bytes()
        except NotFound:
            raise KeyError(key) from None
        except Forbidden:
            raise self._denied("storage.objects.get", key) from None

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._bucket().blob(key).delete()
        except NotFound:
            pass

    def list(self, prefix: str = "") -> list[str]:
        from google.api_core.exceptions import Forbidden

        try:
            return [b.name for b in self._client().list_blobs(self.bucket_name, prefix=prefix)]
        except Forbidden:
            raise self._denied("storage.objects.list", prefix) from None
