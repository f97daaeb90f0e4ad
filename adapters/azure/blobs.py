"""BlobStore on Blob Storage: claim-check payloads, documents to ingest, index snapshots, streams, audit logs.

A missing blob is `KeyError` (the port's contract); a 403 is `AccessDenied` naming the role to add, a
permanent and explained failure rather than a crash retried until the message dead-letters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import AccessDenied


class AzureBlobStore:
    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client  # a ContainerClient

    def _denied(self, action: str, key: str) -> AccessDenied:
        return AccessDenied(
            f"{action} of '{key}' in the blob container was denied: give the app's identity Storage Blob "
            "Data Contributor on the data container (infra/azure/main.bicep, `grants.blobs`)"
        )

    def _call(self, action: str, key: str, fn: Callable[[], Any]) -> Any:
        from azure.core.exceptions import HttpResponseError

        try:
            return fn()
        except HttpResponseError as e:
            if e.status_code == 403:
                raise self._denied(action, key) from None
            raise

    def put(self, key: str, data: bytes) -> None:
        self._call("writing", key, lambda: self._client().upload_blob(key, data, overwrite=True))

    def get(self, key: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._call("reading", key, lambda: self._client().download_blob(key).readall())
        except ResourceNotFoundError:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._call("deleting", key, lambda: self._client().delete_blob(key))
        except ResourceNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        return self._call(
            "listing", prefix, lambda: [b.name for b in self._client().list_blobs(name_starts_with=prefix or None)]
        )
