"""Read-only index snapshots in the blob store, for runtimes with no shared disk.

A Lambda, a Cloud Function or an Azure Function can't open the SQLite file `alto ingest` wrote on
someone's laptop. `alto ingest --publish` exports the collection into one self-contained index file
(text, FTS5 index, vectors) and uploads it under a new version, then moves the collection's
`LATEST.json` pointer to it. A worker downloads the version named there once per cold start to local
scratch (`/tmp`), opens it immutable, and re-reads the pointer at most every `refresh_s`; when a new
version appears it downloads it beside the old one and swaps atomically, so searches in flight finish
on the old file.

Layout: `indexes/{tenant}/{collection}/LATEST.json` and `indexes/{tenant}/{collection}/{version}.db`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.chunks import ContextChunk
from core.errors import ConfigError
from core.ports import BlobStore
from core.retrieval.embedding import Embedder
from core.retrieval.hybrid import IndexRetriever, KeywordEngine, Mode
from core.retrieval.index import KeywordIndex

log = logging.getLogger("alto.snapshot")
PREFIX = "indexes"
KEEP_VERSIONS = 3


def _base(tenant: str, collection: str) -> str:
    return f"{PREFIX}/{tenant}/{collection}"


@dataclass
class Manifest:
    version: str
    key: str
    sha256: str
    bytes: int
    chunks: int
    vectors: int
    embedding_model: str | None
    created_at: float

    @classmethod
    def parse(cls, raw: builtins.bytes) -> Manifest:  # builtins: a field of this class is named `bytes`
        return cls(**json.loads(raw))


def publish(
    index: KeywordIndex,
    blobs: BlobStore,
    tenant: str,
    collection: str,
    *,
    embedding_model: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Manifest:
    """Export one collection, upload it as a new version, then point LATEST at it; prune old versions.

    The pointer is written last, so a reader sees either the old complete version or the new one.
    """
    stats = index.stats(tenant, collection)
    if stats["documents"] == 0:
        raise ConfigError(
            f"collection '{collection}' of tenant '{tenant}' has no documents to publish; "
            f"run `alto ingest PATH --collection {collection} --tenant {tenant}` first"
        )
    with tempfile.TemporaryDirectory(prefix="alto-snapshot-") as tmp:
        path = Path(tmp) / "index.db"
        index.export(tenant, collection, path)
        data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    version = f"{int(clock() * 1000):013d}-{digest[:12]}"
    key = f"{_base(tenant, collection)}/{version}.db"
    blobs.put(key, data)
    manifest = Manifest(
        version=version,
        key=key,
        sha256=digest,
        bytes=len(data),
        chunks=stats["chunks"],
        vectors=stats["vectors"],
        embedding_model=embedding_model if stats["vectors"] else None,
        created_at=clock(),
    )
    blobs.put(f"{_base(tenant, collection)}/LATEST.json", json.dumps(manifest.__dict__).encode())
    versions = sorted(k for k in blobs.list(_base(tenant, collection) + "/") if k.endswith(".db"))
    for old in versions[:-KEEP_VERSIONS]:
        if old != key:
            blobs.delete(old)
    return manifest


class _Loaded:
    def __init__(self, manifest: Manifest, path: Path, retriever: IndexRetriever, checked_at: float) -> None:
        self.manifest = manifest
        self.path = path
        self.retriever = retriever
        self.checked_at = checked_at


class SnapshotRetriever:
    """The `Retriever` over published snapshots: download once per process, swap on a new version."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        scratch_dir: Path | None = None,
        refresh_s: float = 60.0,
        mode: Mode = "keyword",
        embedder: Embedder | None = None,
        rrf_k: int = 60,
        keyword_engine: KeywordEngine = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keyword_engine: KeywordEngine = keyword_engine
        self.blobs = blobs
        self.scratch = Path(scratch_dir or Path(tempfile.gettempdir()) / "alto-index")
        self.refresh_s = refresh_s
        self.mode: Mode = mode
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.clock = clock
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.downloads = 0  # observable in tests and logs: one per cold start and per new version

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def current(self, tenant: str, collection: str) -> _Loaded | None:
        key = (tenant, collection)
        loaded = self._loaded.get(key)
        if loaded is not None and self.clock() - loaded.checked_at < self.refresh_s:
            return loaded
        with self._lock(key):  # one download per process, however many concurrent searches
            loaded = self._loaded.get(key)
            if loaded is not None and self.clock() - loaded.checked_at < self.refresh_s:
                return loaded
            try:
                manifest = Manifest.parse(self.blobs.get(f"{_base(tenant, collection)}/LATEST.json"))
            except KeyError:
                return loaded  # never published (or withdrawn): keep serving what we have, if anything
            if loaded is not None and loaded.manifest.version == manifest.version:
                loaded.checked_at = self.clock()
                return loaded
            fresh = self._download(tenant, collection, manifest)
            self._loaded[key] = fresh
            if loaded is not None:
                log.info(
                    "index snapshot swapped",
                    extra={
                        "fields": {"collection": collection, "old": loaded.manifest.version, "new": manifest.version}
                    },
                )
                loaded.path.unlink(missing_ok=True)  # open readers keep their file handle
            return fresh

    def _download(self, tenant: str, collection: str, manifest: Manifest) -> _Loaded:
        if (
            manifest.vectors
            and self.mode != "keyword"
            and manifest.embedding_model != getattr(self.embedder, "name", None)
        ):
            raise ConfigError(
                f"snapshot {manifest.version} of '{collection}' holds {manifest.embedding_model} vectors but this "
                f"worker embeds queries with {getattr(self.embedder, 'name', None)}; set retrieval.embedding_model "
                "to match, or re-ingest and publish"
            )
        data = self.blobs.get(manifest.key)
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ConfigError(f"snapshot {manifest.key} does not match its manifest's SHA-256; publish it again")
        folder = self.scratch / hashlib.sha256(f"{tenant}\x1f{collection}".encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{manifest.version}.db"
        tmp = path.with_suffix(f".{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.downloads += 1
        log.info(
            "index snapshot loaded",
            extra={"fields": {"collection": collection, "version": manifest.version, "bytes": manifest.bytes}},
        )
        mode: Mode = self.mode if manifest.vectors else "keyword"
        retriever = IndexRetriever(
            KeywordIndex(path, read_only=True),
            mode=mode,
            embedder=self.embedder if mode != "keyword" else None,
            rrf_k=self.rrf_k,
            keyword_engine=self.keyword_engine,
        )
        return _Loaded(manifest, path, retriever, self.clock())

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        loaded = self.current(tenant, collection)
        return loaded.retriever.search(tenant, collection, query, k) if loaded else []

    def fetch(self, tenant: str, collection: str, chunk_ids: list[str]) -> list[ContextChunk]:
        loaded = self.current(tenant, collection)
        return loaded.retriever.fetch(tenant, collection, chunk_ids) if loaded else []

    def collections(self, tenant: str) -> list[str]:
        prefix = f"{PREFIX}/{tenant}/"
        return sorted(
            {k[len(prefix) :].rsplit("/", 1)[0] for k in self.blobs.list(prefix) if k.endswith("/LATEST.json")}
        )
