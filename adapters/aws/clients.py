"""boto3 clients: created once per container, on first use, never at import (no network either way)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def client(service: str) -> Any:
    """One client per service per container. Region and endpoint come from the Lambda environment
    (`AWS_REGION`; `AWS_ENDPOINT_URL` points every client at moto in the tests)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(service, config=Config(
        retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=20,
        max_pool_connections=64,  # a worker batch runs its records concurrently
    ))
