"""The GCP composition: ports from the function's environment, wired by `core.bootstrap` once per instance.

Environment (set by infra/gcp): `ALTO_GCP_PROJECT`, `ALTO_TOPIC` (the jobs topic id), `ALTO_BUCKET`,
`ALTO_CONFIG` (the deployed altostratus.yaml), optionally `ALTO_FIRESTORE_DATABASE` and
`ALTO_CLAIM_CHECK_BYTES`; a pull worker (`alto worker --cloud gcp`) also `ALTO_SUBSCRIPTION`, the pull
subscription's id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from core.bootstrap import ApiApp, LazyApp, as_worker, cloud_settings, compose

REQUIRED = ("ALTO_TOPIC", "ALTO_BUCKET")


def build(env: Mapping[str, str] | None = None, *, api_only: bool = False, pull: bool = False) -> ApiApp:
    """The app on the function's environment; `pull`: for `alto worker --cloud gcp`, on the pull subscription."""
    from adapters.gcp import clients
    from adapters.gcp.firestore import FirestoreJobStore, FirestoreStateStore
    from adapters.gcp.gcs import GcsBlobStore
    from adapters.gcp.pubsub import PUBSUB_MAX_BYTES, PubSubQueue
    from adapters.gcp.secrets import SecretManagerSecrets
    from core.secrets import EnvSecrets

    env = os.environ if env is None else env
    required = (*REQUIRED, "ALTO_SUBSCRIPTION") if pull else REQUIRED
    settings = cloud_settings(env, required=required, adapter="GCP", source="infra/gcp", api_only=api_only)
    project = clients.project()
    blobs = GcsBlobStore(clients.storage, env["ALTO_BUCKET"])
    topic = PubSubQueue(
        clients.publisher,
        f"projects/{project}/topics/{env['ALTO_TOPIC']}",
        blobs,
        limit_bytes=int(env.get("ALTO_CLAIM_CHECK_BYTES", PUBSUB_MAX_BYTES)),
    )
    return compose(
        settings,
        store=FirestoreJobStore(clients.firestore),
        state=FirestoreStateStore(clients.firestore),
        queue=_pull(topic, settings, f"projects/{project}/subscriptions/{env['ALTO_SUBSCRIPTION']}") if pull else topic,
        blobs=blobs,
        secrets=SecretManagerSecrets(clients.secret_manager, clients.project, EnvSecrets(env)),
    )


def _pull(topic: Any, settings: Any, subscription: str) -> Any:
    from adapters.gcp import clients
    from adapters.gcp.pull import PubSubPull

    pull = settings.pull
    return PubSubPull(
        topic,
        clients.subscriber,
        subscription,
        max_messages=pull.concurrency,
        max_lease_s=pull.job_deadline_s + pull.drain_margin_s,
        extension_s=settings.queue.visibility_timeout_s,
        wait_s=pull.wait_s,
    )


get_app = LazyApp(lambda: as_worker(build()))  # the functions that process jobs
get_api_app = LazyApp(lambda: build(api_only=True))  # the `api` function: see core.bootstrap.bootstrap_api
