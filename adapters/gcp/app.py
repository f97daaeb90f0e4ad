"""The GCP composition: ports from the function's environment, wired by `core.bootstrap` once per instance.

Environment (set by infra/gcp): `ALTO_GCP_PROJECT`, `ALTO_TOPIC` (the jobs topic id), `ALTO_BUCKET`,
`ALTO_CONFIG` (the deployed altostratus.yaml), optionally `ALTO_FIRESTORE_DATABASE` and
`ALTO_CLAIM_CHECK_BYTES`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from core.bootstrap import ApiApp, LazyApp, as_worker, cloud_settings, compose

REQUIRED = ("ALTO_TOPIC", "ALTO_BUCKET")


def build(env: Mapping[str, str] | None = None, *, api_only: bool = False) -> ApiApp:
    from adapters.gcp import clients
    from adapters.gcp.firestore import FirestoreJobStore, FirestoreStateStore
    from adapters.gcp.gcs import GcsBlobStore
    from adapters.gcp.pubsub import PUBSUB_MAX_BYTES, PubSubQueue
    from adapters.gcp.secrets import SecretManagerSecrets
    from core.secrets import EnvSecrets

    env = os.environ if env is None else env
    settings = cloud_settings(env, required=REQUIRED, adapter="GCP", source="infra/gcp", api_only=api_only)
    project = clients.project()
    blobs = GcsBlobStore(clients.storage, env["ALTO_BUCKET"])
    return compose(
        settings,
        store=FirestoreJobStore(clients.firestore),
        state=FirestoreStateStore(clients.firestore),
        queue=PubSubQueue(
            clients.publisher,
            f"projects/{project}/topics/{env['ALTO_TOPIC']}",
            blobs,
            limit_bytes=int(env.get("ALTO_CLAIM_CHECK_BYTES", PUBSUB_MAX_BYTES)),
        ),
        blobs=blobs,
        secrets=SecretManagerSecrets(clients.secret_manager, clients.project, EnvSecrets(env)),
    )


get_app = LazyApp(lambda: as_worker(build()))  # the functions that process jobs
get_api_app = LazyApp(lambda: build(api_only=True))  # the `api` function: see core.bootstrap.bootstrap_api
