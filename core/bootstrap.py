"""The composition root: the only place that chooses implementations.

Every entry point (CLI, local server, each cloud handler) calls `bootstrap()` once per process and
hands messages to `app.service`. Cloud adapters pass their own port implementations; anything not
passed gets the embedded default under the data dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from core.config import Settings, load_settings
from core.embedded.secrets import EnvSecrets
from core.logs import configure_logging
from core.ports import BlobStore, DocumentIndex, JobQueue, JobStore, Retriever, Secrets, StateStore
from core.retrieval.library import Library
from core.service import JobService

if TYPE_CHECKING:
    from core.api import Api
    from core.providers.registry import ProviderRegistry
    from core.retrieval.embedding import Embedder


@dataclass
class App:
    settings: Settings
    store: JobStore
    state: StateStore
    queue: JobQueue
    blobs: BlobStore
    secrets: Secrets
    providers: ProviderRegistry
    retriever: Retriever | None
    library: Library
    service: JobService

    @cached_property
    def api(self) -> "Api":
        """The HTTP API over this app (API keys resolved once): what every runtime's HTTP entry serves."""
        from core.api import build_api

        return build_api(self)

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir()


def bootstrap(
    settings: Settings | None = None,
    *,
    config_path: str | Path | None = None,
    store: JobStore | None = None,
    state: StateStore | None = None,
    queue: JobQueue | None = None,
    blobs: BlobStore | None = None,
    secrets: Secrets | None = None,
    retriever: Retriever | None = None,
    providers: ProviderRegistry | None = None,
) -> App:
    settings = settings or load_settings(config_path)
    configure_logging(settings.logging.level, redact_pii=settings.guardrails.redact_pii_in_logs)
    data = settings.resolved_data_dir()
    if store is None or state is None:
        from core.embedded.stores import SqliteJobStore, SqliteStateStore

        store = store or SqliteJobStore(data / "jobs.db")
        state = state or SqliteStateStore(data / "jobs.db")
    if queue is None:
        from core.embedded.queue import SqliteQueue

        queue = SqliteQueue(
            data / "queue.db",
            visibility_timeout_s=settings.queue.visibility_timeout_s,
            max_receives=settings.queue.max_receives,
        )
    if blobs is None:
        from core.embedded.blobs import FileBlobStore

        blobs = FileBlobStore(data / "blobs")
    secrets = secrets or EnvSecrets()
    built, writer, embedder = build_retrieval(settings, blobs, secrets)
    retriever = retriever or built
    if providers is None:
        from core.providers.registry import ProviderRegistry

        providers = ProviderRegistry(settings, secrets)
    service = JobService(
        settings, store=store, state=state, queue=queue, providers=providers, retriever=retriever,
    )
    library = Library(settings.retrieval, writer, blobs, embedder)
    return App(settings, store, state, queue, blobs, secrets, providers, retriever, library, service)


def build_retrieval(
    settings: Settings, blobs: BlobStore, secrets: Secrets,
) -> tuple[Retriever, DocumentIndex, Embedder | None]:
    """(retriever, what ingestion writes to, embedder) for `retrieval.backend` and `retrieval.mode`.

    Nothing heavy happens here: the embedding model loads on first use, Postgres connects on first query.
    """
    r = settings.retrieval
    embedder = None
    if r.mode != "keyword":
        from core.retrieval.embedding import LazyEmbedder

        embedder = LazyEmbedder(r.embedding_model)
    if r.backend == "pgvector":
        from core.retrieval.pgvector import PgVectorIndex

        assert r.pgvector is not None
        pg = PgVectorIndex(
            secrets.resolve(r.pgvector.dsn), mode=r.mode, embedder=embedder, rrf_k=r.rrf_k,
            table_prefix=r.pgvector.table_prefix, hnsw=r.pgvector.hnsw,
        )
        return pg, pg, embedder
    from core.retrieval.hybrid import IndexRetriever
    from core.retrieval.index import KeywordIndex

    local = KeywordIndex(settings.resolved_data_dir() / "index.db")
    if r.backend == "snapshot":
        from core.retrieval.snapshot import SnapshotRetriever

        snap = SnapshotRetriever(
            blobs, scratch_dir=r.snapshot.scratch_dir, refresh_s=r.snapshot.refresh_s, mode=r.mode,
            embedder=embedder, rrf_k=r.rrf_k, keyword_engine=r.keyword_engine,
        )
        return snap, local, embedder
    return IndexRetriever(
        local, mode=r.mode, embedder=embedder, rrf_k=r.rrf_k, keyword_engine=r.keyword_engine,
    ), local, embedder


class LazyApp:
    """A cloud entry point's app: built by `factory` on the first invocation, then kept for the
    instance's life (import stays cheap and network-free; `reset()` is for tests)."""

    def __init__(self, factory: "Callable[[], App]") -> None:
        import threading

        self.factory = factory
        self._app: App | None = None
        self._lock = threading.Lock()

    def __call__(self) -> App:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self.factory()
        return self._app

    def reset(self) -> None:
        self._app = None


def cloud_settings(env: "Mapping[str, str]", *, required: tuple[str, ...], adapter: str, source: str) -> Settings:
    """Settings for a cloud entry point: its required environment checked (naming what is missing
    and what sets it), the deployed config loaded, and data kept in the instance's writable temp dir."""
    import os
    import tempfile

    from core.errors import ConfigError

    missing = [k for k in required if not env.get(k)]
    if missing:
        raise ConfigError(f"the {adapter} adapter needs {', '.join(missing)} in its environment "
                          f"({source} sets them; for a local run export them)")
    settings = load_settings(env.get("ALTO_CONFIG") or None, env=env)
    if "ALTO_DATA_DIR" not in env:  # the only writable folder on Lambda / Cloud Functions / Azure Functions
        settings.data_dir = os.path.join(tempfile.gettempdir(), "altostratus")
    return settings
