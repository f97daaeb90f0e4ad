"""BlobStore on Blob Storage: claim-check payloads, documents to ingest, index snapshots."""

from __future__ import annotations

from typing import Any, Callable


class AzureBlobStore:
    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client  # a ContainerClient

    def put(self, key: str, data: bytes) -> None:
        self._client().upload_blob(key, data, overwrite=True)

    def get(self, key: str) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._client().download_blob(key).readall()
        except ResourceNotFoundError:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._client().delete_blob(key)
        except ResourceNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        return [b.name for b in self._client().list_blobs(name_starts_with=prefix or None)]
