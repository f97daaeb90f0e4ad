"""The write side of retrieval: ingest into the configured index and publish snapshots.

`alto ingest`, the API-less batch jobs and the tests all go through here, so a folder and a blob
prefix are ingested the same way into SQLite or Postgres, with or without vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.config.worker import RetrievalConfig
from core.errors import ConfigError
from core.ports import BlobStore, DocumentIndex

if TYPE_CHECKING:
    from core.retrieval.embedding import Embedder
    from core.retrieval.ingest import IngestStats
    from core.retrieval.snapshot import Manifest

BLOB_SCHEME = "blob:"


class Library:
    def __init__(
        self,
        settings: RetrievalConfig,
        index: DocumentIndex,
        blobs: BlobStore,
        embedder: Embedder | None = None,
        *,
        after_ingest: Callable[[str, str], object] | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.embedder = embedder
        # brings derived search structures (the bm25s model) up to the new generation where ingest runs,
        # so a worker finds the model stored and only loads it, in the background
        self.after_ingest = after_ingest

    def ingest(
        self, target: str | Path, *, tenant: str, collection: str, prune: bool = False, progress: bool = False
    ) -> IngestStats:
        """Ingest a file, a folder, or every document under `blob:PREFIX` in the blob store."""
        from core.retrieval.ingest import blob_documents, folder_documents, ingest_documents

        target = str(target)
        passed: list[str] = []
        if target.startswith(BLOB_SCHEME):
            documents = blob_documents(self.blobs, target[len(BLOB_SCHEME) :])
            is_set = True
        else:
            documents, is_set, passed = folder_documents(Path(target))
        stats = ingest_documents(
            self.index,
            documents,
            tenant=tenant,
            collection=collection,
            chunk_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.chunk_overlap_tokens,
            prune=prune and is_set,
            progress=progress,
            embedder=self.embedder if self.settings.mode != "keyword" else None,
        )
        stats.skipped[:0] = passed
        if self.after_ingest is not None and (stats.added or stats.updated or stats.removed):
            self.after_ingest(tenant, collection)
        return stats

    def publish(self, tenant: str, collection: str) -> Manifest:
        """Upload the collection as a read-only snapshot for serverless workers (`backend: snapshot`)."""
        from core.retrieval.index import KeywordIndex
        from core.retrieval.snapshot import publish

        if not isinstance(self.index, KeywordIndex):
            raise ConfigError(
                "publishing snapshots needs the embedded index (retrieval.backend: embedded or snapshot); "
                "a pgvector index is already shared and needs no snapshot"
            )
        model = self.embedder.name if self.embedder is not None else None
        return publish(self.index, self.blobs, tenant, collection, embedding_model=model)
