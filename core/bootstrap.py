"""The composition root: the only place that chooses implementations.

Every entry point (CLI, local server, each cloud handler) calls `bootstrap()` once per process and
hands messages to `app.service`. Cloud adapters pass their own port implementations; anything not
passed gets the embedded default under the data dir.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from core.config.api import ApiSettings
from core.config.load import load_api_settings, load_settings
from core.jobs.service import ApiService
from core.logs import configure_logging, log_event
from core.ports import BlobStore, DocumentIndex, JobQueue, JobStore, Retriever, Secrets, StateStore
from core.secrets import EnvSecrets

if TYPE_CHECKING:
    from core.config.worker import Settings
    from core.jobs.worker_service import WorkerService
    from core.observability.metrics import Metrics
    from core.providers.registry import ProviderRegistry
    from core.retrieval.embedding import Embedder
    from core.retrieval.library import Library
    from core.safety.layer import Safety


class ApiApp:
    """What an HTTP API function runs on: the ports and a service that submits and reads jobs.

    Built from `ApiSettings` by `bootstrap_api`, so an API cold start defines no provider, routing or
    retrieval models and opens no index; `App` (from `bootstrap`) is the same plus job processing.
    Plain classes rather than dataclasses: generating one costs ~0.4 ms of every cold start.
    """

    def __init__(
        self,
        settings: ApiSettings,
        store: JobStore,
        state: StateStore,
        queue: JobQueue,
        blobs: BlobStore,
        secrets: Secrets,
        service: ApiService,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.queue = queue
        self.blobs = blobs
        self.secrets = secrets
        self.service = service

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir()


class App(ApiApp):
    settings: Settings
    service: WorkerService

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        state: StateStore,
        queue: JobQueue,
        blobs: BlobStore,
        secrets: Secrets,
        service: WorkerService,
        *,
        providers: ProviderRegistry,
        retriever: Retriever | None,
        library: Library,
    ) -> None:
        super().__init__(settings, store, state, queue, blobs, secrets, service)
        self.providers = providers
        self.retriever = retriever
        self.library = library


def _ports(
    settings: ApiSettings,
    store: JobStore | None,
    state: StateStore | None,
    queue: JobQueue | None,
    blobs: BlobStore | None,
    secrets: Secrets | None,
) -> tuple[JobStore, StateStore, JobQueue, BlobStore, Secrets]:
    """The ports passed in, the embedded default under the data dir for each one that wasn't."""
    configure_logging(settings.logging.level, redact_pii=settings.guardrails.redact_pii_in_logs)
    data = _usable_folder(settings.resolved_data_dir())
    if store is None or state is None:
        from core.embedded.stores import SqliteJobStore, SqliteStateStore

        threaded = settings.embedded.storage_thread
        store = store or SqliteJobStore(data / "jobs.db", storage_thread=threaded)
        state = state or SqliteStateStore(data / "jobs.db", storage_thread=threaded)
        if threaded:
            from core.embedded.storage_thread import storage_thread

            storage_thread().on_loop = settings.embedded.group_on_loop
    if queue is None:
        from core.embedded.queue import SqliteQueue, adopt_queue_file

        queue = SqliteQueue(
            data / "jobs.db",  # with the jobs: a job and its message commit together
            visibility_timeout_s=settings.queue.visibility_timeout_s,
            max_receives=settings.queue.max_receives,
            storage_thread=settings.embedded.storage_thread,
        )
        if moved := adopt_queue_file(data / "queue.db", queue):
            log_event("queue.file_adopted", moved=moved, detail="queue.db's messages now live in jobs.db")
    if blobs is None:
        from core.embedded.blobs import FileBlobStore

        blobs = FileBlobStore(data / "blobs")
    return store, state, queue, blobs, secrets or EnvSecrets()


def _safety(settings: ApiSettings, metrics: Metrics, secrets: Secrets, embedded: bool) -> Safety:
    """The safety layer; its vault key is `safety.vault_key`, or with the embedded stores a key file beside them
    (a cloud deployment has no shared folder: every instance would make its own key)."""
    from core.safety.layer import Safety

    return Safety.of(
        settings, metrics=metrics, secrets=secrets, local=settings.resolved_data_dir() if embedded else None
    )


def _usable_folder(data: Path) -> Path:
    """The data folder, created if need be; ConfigError naming ALTO_DATA_DIR when it can't be one."""
    from core.errors import ConfigError

    if data.exists() and not data.is_dir():
        raise ConfigError(
            f"the data folder {data} is a file, not a folder: point ALTO_DATA_DIR (or data_dir) at a "
            "folder, or remove the file"
        )
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the data folder {data}: {e.strerror}; point ALTO_DATA_DIR (or data_dir) "
            "at a folder you can write"
        ) from None
    return data


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
    clock: Callable[[], float] | None = None,
) -> App:
    """The app for `settings`. `clock`: the processing stages' time (leases, deferrals, the batch lane's
    flush), injectable so a test moves time instead of sleeping; the wall clock by default."""
    from core.jobs.wiring import Ports
    from core.jobs.worker_service import WorkerService
    from core.retrieval.library import Library

    settings = settings or load_settings(config_path)
    embedded = blobs is None
    store, state, queue, blobs, secrets = _ports(settings, store, state, queue, blobs, secrets)
    built, writer, embedder = build_retrieval(settings, blobs, secrets)
    retriever = retriever or built
    if providers is None:
        from core.providers.registry import ProviderRegistry

        providers = ProviderRegistry(settings, secrets)
    from core.observability.wiring import build_audit, build_metrics

    metrics = build_metrics(settings)
    service = WorkerService(
        settings,
        Ports(store, state, queue, blobs, secrets, providers, retriever),
        metrics=metrics,
        audit=build_audit(settings, blobs),
        safety=_safety(settings, metrics, secrets, embedded),
        clock=clock or time.time,
    )
    keyword = getattr(retriever, "keyword", None)
    library = Library(
        settings.retrieval, writer, blobs, embedder, after_ingest=getattr(keyword, "wait_current", None)
    )  # bm25s: built here, loaded by workers
    return App(
        settings,
        store,
        state,
        queue,
        blobs,
        secrets,
        service,
        providers=providers,
        retriever=retriever,
        library=library,
    )


def bootstrap_api(
    settings: ApiSettings,
    *,
    store: JobStore | None = None,
    state: StateStore | None = None,
    queue: JobQueue | None = None,
    blobs: BlobStore | None = None,
    secrets: Secrets | None = None,
) -> ApiApp:
    """An app for the HTTP API alone: submit, status, listings. Without a retriever it does not check at
    submit that a named collection exists; the worker fails such a job, saying so."""
    embedded = blobs is None
    store, state, queue, blobs, secrets = _ports(settings, store, state, queue, blobs, secrets)
    from core.observability.wiring import build_metrics

    metrics = build_metrics(settings)
    safety = _safety(settings, metrics, secrets, embedded)
    service = ApiService(settings, store=store, state=state, queue=queue, blobs=blobs, metrics=metrics, safety=safety)
    return ApiApp(settings, store, state, queue, blobs, secrets, service)


def compose(
    settings: ApiSettings, *, store: JobStore, state: StateStore, queue: JobQueue, blobs: BlobStore, secrets: Secrets
) -> ApiApp:
    """A cloud entry point's app from its ports: the API alone for `ApiSettings`, everything for `Settings`."""
    if type(settings) is ApiSettings:
        return bootstrap_api(settings, store=store, state=state, queue=queue, blobs=blobs, secrets=secrets)
    return bootstrap(
        settings,  # type: ignore[arg-type]  # not ApiSettings itself: the Settings load_settings made
        store=store,
        state=state,
        queue=queue,
        blobs=blobs,
        secrets=secrets,
    )


def build_retrieval(
    settings: Settings, blobs: BlobStore, secrets: Secrets
) -> tuple[Retriever, DocumentIndex, Embedder | None]:
    """(retriever, what ingestion writes to, embedder) for `retrieval.backend` and `retrieval.mode`.

    Nothing heavy happens here: the embedding model loads on first use, Postgres connects on first query.
    """
    r = settings.retrieval
    if r.mode != "keyword" or r.keyword_engine != "fts5":  # NumPy will load: size its BLAS pool first
        from core.retrieval.threads import limit_blas

        limit_blas(r.blas_threads)
    embedder = None
    if r.mode != "keyword":
        from core.retrieval.embedding import LazyEmbedder

        embedder = LazyEmbedder(r.embedding_model)
    if r.backend == "pgvector":
        from core.retrieval.pgvector import PgVectorIndex

        assert r.pgvector is not None
        pg = PgVectorIndex(
            secrets.resolve(r.pgvector.dsn),
            mode=r.mode,
            embedder=embedder,
            rrf_k=r.rrf_k,
            table_prefix=r.pgvector.table_prefix,
            hnsw=r.pgvector.hnsw,
        )
        return pg, pg, embedder
    from core.retrieval.hybrid import IndexRetriever
    from core.retrieval.index import KeywordIndex

    local = KeywordIndex(settings.resolved_data_dir() / "index.db")
    if r.backend == "snapshot":
        from core.retrieval.snapshot import SnapshotRetriever

        snap = SnapshotRetriever(
            blobs,
            scratch_dir=r.snapshot.scratch_dir,
            refresh_s=r.snapshot.refresh_s,
            mode=r.mode,
            embedder=embedder,
            rrf_k=r.rrf_k,
            keyword_engine=r.keyword_engine,
        )
        return snap, local, embedder
    return (
        IndexRetriever(local, mode=r.mode, embedder=embedder, rrf_k=r.rrf_k, keyword_engine=r.keyword_engine),
        local,
        embedder,
    )


A = TypeVar("A", bound=ApiApp)


class LazyApp(Generic[A]):
    """A cloud entry point's app: built by `factory` on the first invocation, then kept for the
    instance's life (import stays cheap and network-free; `reset()` is for tests)."""

    def __init__(self, factory: Callable[[], A]) -> None:
        import threading

        self.factory = factory
        self._app: A | None = None
        self._lock = threading.Lock()

    def __call__(self) -> A:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = self.factory()
                    from core.process_tuning import apply_once

                    apply_once(self._app.settings.process)  # the end of the instance's cold start
        return self._app

    def reset(self) -> None:
        self._app = None


def as_worker(app: ApiApp) -> App:
    """The app of an entry point that processes jobs: one built from the full settings, not the API's alone."""
    if not isinstance(app, App):
        from core.errors import ConfigError

        raise ConfigError(
            "this entry point processes jobs, but its app was built for the HTTP API alone (api_only=True); "
            "build it from the full settings"
        )
    return app


def cloud_settings(
    env: Mapping[str, str], *, required: tuple[str, ...], adapter: str, source: str, api_only: bool = False
) -> ApiSettings:
    """Settings for a cloud entry point: its required environment checked (naming what is missing
    and what sets it), the deployed config loaded (as `ApiSettings` for an HTTP API function, else
    in full), and data kept in the instance's writable temp dir."""
    import tempfile

    from core.errors import ConfigError

    missing = [k for k in required if not env.get(k)]
    if missing:
        raise ConfigError(
            f"the {adapter} adapter needs {', '.join(missing)} in its environment "
            f"({source} sets them; for a local run export them)"
        )
    settings = (load_api_settings if api_only else load_settings)(env.get("ALTO_CONFIG") or None, env=env)
    if "ALTO_DATA_DIR" not in env:  # the only writable folder on Lambda / Cloud Functions / Azure Functions
        settings.data_dir = Path(tempfile.gettempdir()) / "altostratus"
    return settings
