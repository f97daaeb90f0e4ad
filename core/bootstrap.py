"""The composition root: the only place that chooses implementations.

Every entry point (CLI, local server, each cloud handler) calls `bootstrap()` once per process and
hands messages to `app.service`. Cloud adapters pass their own port implementations; anything not
passed gets the embedded default under the data dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.config import Settings, load_settings
from core.embedded.secrets import EnvSecrets
from core.logs import configure_logging
from core.ports import BlobStore, JobQueue, JobStore, Secrets, StateStore
from core.providers.registry import ProviderRegistry
from core.routing import Router
from core.service import JobService, Retriever


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
    service: JobService

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
    if retriever is None:
        from core.retrieval.index import KeywordIndex

        retriever = KeywordIndex(data / "index.db")
    secrets = secrets or EnvSecrets()
    providers = providers or ProviderRegistry(settings, secrets)
    service = JobService(
        settings, store=store, state=state, queue=queue, providers=providers, retriever=retriever,
        router=Router(settings),
    )
    return App(settings, store, state, queue, blobs, secrets, providers, retriever, service)
