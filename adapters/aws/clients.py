"""AWS clients: created once per container, on first use, never at import (no network either way).

botocore directly, not boto3: boto3's clients are botocore's, and its own layer (sessions, resources,
S3 transfer injections) costs ~20 ms of every cold start for nothing these ports call.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    """One client per service per container, each from its own session (sessions aren't thread-safe).
    Region and endpoint come from the Lambda environment (`AWS_DEFAULT_REGION`; `AWS_ENDPOINT_URL`
    points every client at moto in the tests)."""
    from botocore.config import Config
    from botocore.session import Session

    return Session().create_client(
        service,
        config=Config(
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=3,
            read_timeout=20,
            max_pool_connections=64,  # a worker batch runs its records concurrently
        ),
    )
