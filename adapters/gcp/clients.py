"""Google Cloud clients: created once per instance, on first use, never at import.

In tests (and locally) `PUBSUB_EMULATOR_HOST` / `FIRESTORE_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST`
point the official clients at emulators, with anonymous credentials, so nothing reaches a metadata
server; `SECRET_MANAGER_EMULATOR_HOST` does the same for Secret Manager (Google ships no emulator for it:
the tests serve its gRPC API from tests/fakes/secret_manager.py).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any


def project() -> str:
    p = os.environ.get("ALTO_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")
    if not p:
        from core.errors import ConfigError

        raise ConfigError("set ALTO_GCP_PROJECT (or GOOGLE_CLOUD_PROJECT) to the project the adapter runs in")
    return p


def _anonymous_if_emulated(var: str) -> dict[str, Any]:
    if os.environ.get(var):
        from google.auth.credentials import AnonymousCredentials

        return {"credentials": AnonymousCredentials()}
    return {}


@cache
def publisher() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # a namespace package mypy can't follow

    return pubsub_v1.PublisherClient(**_anonymous_if_emulated("PUBSUB_EMULATOR_HOST"))


@cache
def firestore() -> Any:
    from google.cloud import firestore as fs

    return fs.Client(
        project=project(),
        database=os.environ.get("ALTO_FIRESTORE_DATABASE", "(default)"),
        **_anonymous_if_emulated("FIRESTORE_EMULATOR_HOST"),
    )


@cache
def storage() -> Any:
    from google.cloud import storage as gcs  # type: ignore[attr-defined]  # a namespace package mypy can't follow

    # google-cloud-storage 3.17+ fetches each bucket's metadata in the background on first use, only to label
    # trace spans: a storage.buckets.get no function is granted (a 403 per instance), for spans we don't make
    os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
    return gcs.Client(project=project(), **_anonymous_if_emulated("STORAGE_EMULATOR_HOST"))


@cache
def secret_manager() -> Any:
    from google.cloud import secretmanager

    emulator = os.environ.get("SECRET_MANAGER_EMULATOR_HOST")
    if emulator:  # plaintext gRPC on loopback, as the other emulators speak
        import grpc
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
            SecretManagerServiceGrpcTransport,
        )

        return secretmanager.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(emulator))
        )
    return secretmanager.SecretManagerServiceClient()


@cache
def subscriber() -> Any:
    """The pull worker's client (`alto worker --cloud gcp`): a streaming pull on the jobs subscription."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # a namespace package mypy can't follow

    return pubsub_v1.SubscriberClient(**_anonymous_if_emulated("PUBSUB_EMULATOR_HOST"))
