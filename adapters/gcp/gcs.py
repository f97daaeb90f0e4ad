"""BlobStore on Cloud Storage: claim-check payloads, documents to ingest, index snapshots."""

from __future__ import annotations

from typing import Any, Callable


class GcsBlobStore:
    def __init__(self, client: Callable[[], Any], bucket: str) -> None:
        self._client = client
        self.bucket_name = bucket

    def _bucket(self) -> Any:
        return self._client().bucket(self.bucket_name)

    def put(self, key: str, data: bytes) -> None:
        self._bucket().blob(key).upload_from_string(data, content_type="application/octet-stream")

    def get(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self._bucket().blob(key).download_as_bytes()
        except NotFound:
            raise KeyError(key) from None

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._bucket().blob(key).delete()
        except NotFound:
            pass

    def list(self, prefix: str = "") -> list[str]:
        return [b.name for b in self._client().list_blobs(self.bucket_name, prefix=prefix)]
