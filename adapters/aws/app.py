"""The AWS composition: ports from the Lambda environment, wired by `core.bootstrap` once per container.

Environment (set by serverless.yml): `ALTO_JOBS_TABLE`, `ALTO_STATE_TABLE`, `ALTO_QUEUE_URL`,
`ALTO_BUCKET`, `ALTO_CONFIG` (the packaged altostratus.yaml). Nothing here runs at import: the first
invocation builds the app (clients are created even later, on first use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from core.bootstrap import ApiApp, LazyApp, as_worker, cloud_settings, compose

REQUIRED = ("ALTO_JOBS_TABLE", "ALTO_STATE_TABLE", "ALTO_QUEUE_URL", "ALTO_BUCKET")


def build(env: Mapping[str, str] | None = None, *, api_only: bool = False, pull: bool = False) -> ApiApp:
    """The app on the Lambda environment; `pull`: for `alto worker --cloud aws`, long-polling its receives."""
    from adapters.aws.clients import client
    from adapters.aws.dynamodb import DynamoJobStore, DynamoStateStore
    from adapters.aws.s3 import S3BlobStore
    from adapters.aws.secrets import SecretsManagerSecrets
    from adapters.aws.sqs import SqsQueue
    from core.secrets import EnvSecrets

    env = os.environ if env is None else env
    settings = cloud_settings(env, required=REQUIRED, adapter="AWS", source="serverless.yml", api_only=api_only)

    blobs = S3BlobStore(lambda: client("s3"), env["ALTO_BUCKET"])
    return compose(
        settings,
        store=DynamoJobStore(lambda: client("dynamodb"), env["ALTO_JOBS_TABLE"]),
        state=DynamoStateStore(lambda: client("dynamodb"), env["ALTO_STATE_TABLE"]),
        queue=SqsQueue(
            lambda: client("sqs"),
            env["ALTO_QUEUE_URL"],
            blobs,
            visibility_timeout_s=settings.queue.visibility_timeout_s,
            receive_wait_s=settings.pull.wait_s if pull else 0,  # type: ignore[attr-defined]  # full settings
        ),
        blobs=blobs,
        secrets=SecretsManagerSecrets(lambda: client("secretsmanager"), EnvSecrets(env)),
    )


get_app = LazyApp(lambda: as_worker(build()))  # the functions that process jobs
get_api_app = LazyApp(lambda: build(api_only=True))  # the `api` function: see core.bootstrap.bootstrap_api
