"""The Azure composition: ports from the Function App's settings, wired by `core.bootstrap` once per
instance. Identity-based connections (managed identity), never connection strings, in deployed
settings:

- `ServiceBusConnection__fullyQualifiedNamespace` (the bindings' and the SDK sender's namespace),
  `ALTO_QUEUE_NAME`;
- `ALTO_STORAGE_ACCOUNT` (the app data account; the Functions host keeps its own in AzureWebJobsStorage)
  or `ALTO_STORAGE_CONNECTION` (Azurite, local only) for Table and Blob Storage; `ALTO_JOBS_TABLE`,
  `ALTO_STATE_TABLE`, `ALTO_CONTAINER`;
- secrets as Key Vault references in app settings (`@Microsoft.KeyVault(...)`), read by the config as
  `env:NAME` (adapters/azure/secrets.py refuses one the platform left unresolved).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from core.bootstrap import ApiApp, LazyApp, as_worker, cloud_settings, compose


def _credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# the Functions host's identity-based connection settings: the platform names them, in its own case
STORAGE_ACCOUNT_SETTING = "AzureWebJobsStorage__accountName"
NAMESPACE_SETTING = "ServiceBusConnection__fullyQualifiedNamespace"


def _storage(client_cls: Any, service: str) -> Any:
    """A Storage service client: Azurite's connection string locally, the managed identity deployed."""
    if os.environ.get("ALTO_STORAGE_CONNECTION"):
        return client_cls.from_connection_string(os.environ["ALTO_STORAGE_CONNECTION"])
    account = os.environ.get("ALTO_STORAGE_ACCOUNT") or os.environ[STORAGE_ACCOUNT_SETTING]
    return client_cls(f"https://{account}.{service}.core.windows.net", credential=_credential())


@cache
def table_service() -> Any:
    from azure.data.tables import TableServiceClient

    return _storage(TableServiceClient, "table")


@cache
def blob_service() -> Any:
    from azure.storage.blob import BlobServiceClient

    return _storage(BlobServiceClient, "blob")


@cache
def _service_bus() -> Any:
    from azure.servicebus import ServiceBusClient

    return ServiceBusClient(os.environ[NAMESPACE_SETTING], credential=_credential())


@cache
def sender() -> Any:
    return _service_bus().get_queue_sender(os.environ["ALTO_QUEUE_NAME"])


@cache
def receiver() -> Any:
    """The pull worker's receiver (`alto worker --cloud azure`): peek-lock, no prefetch (a prefetched message's lock
    runs out while it waits in the buffer)."""
    from azure.servicebus import ServiceBusReceiveMode

    return _service_bus().get_queue_receiver(
        os.environ["ALTO_QUEUE_NAME"], receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=0
    )


def build(
    env: Mapping[str, str] | None = None, *, api_only: bool = False, sender_factory: Any = None, pull: bool = False
) -> ApiApp:
    """The app on the Function App's settings; `pull`: for `alto worker --cloud azure`, on a peek-lock receiver."""
    from adapters.azure.blobs import AzureBlobStore
    from adapters.azure.pull import ServiceBusPull
    from adapters.azure.secrets import AppSettingSecrets
    from adapters.azure.servicebus import ServiceBusQueue
    from adapters.azure.tables import TableJobStore, TableStateStore

    env = os.environ if env is None else env
    settings = cloud_settings(
        env, required=("ALTO_QUEUE_NAME",), adapter="Azure", source="infra/azure", api_only=api_only
    )
    jobs, state = env.get("ALTO_JOBS_TABLE", "altojobs"), env.get("ALTO_STATE_TABLE", "altostate")
    container = env.get("ALTO_CONTAINER", "alto")
    blobs = AzureBlobStore(lambda: blob_service().get_container_client(container))
    queue: Any = ServiceBusQueue(sender_factory or sender, blobs, max_delivery_count=settings.queue.max_receives)
    if pull:
        queue = ServiceBusPull(queue, receiver, wait_s=settings.pull.wait_s)  # type: ignore[attr-defined]
    return compose(
        settings,
        store=TableJobStore(lambda: table_service().get_table_client(jobs)),
        state=TableStateStore(lambda: table_service().get_table_client(state)),
        queue=queue,
        blobs=blobs,
        secrets=AppSettingSecrets(env, app=env.get("WEBSITE_SITE_NAME", "the function app")),
    )


get_app = LazyApp(lambda: as_worker(build()))  # the functions that process jobs
get_api_app = LazyApp(lambda: build(api_only=True))  # the `api` function: see core.bootstrap.bootstrap_api


def reset() -> None:
    for f in (table_service, blob_service, _service_bus, sender, receiver):
        f.cache_clear()
    get_app.reset()
    get_api_app.reset()
