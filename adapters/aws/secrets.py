"""Secrets Manager references (`aws-sm:NAME` or `aws-sm:NAME#json_key`), cached per container."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.errors import ConfigError
from core.secrets import CachedSecrets, EnvSecrets


class SecretsManagerSecrets(CachedSecrets):
    scheme = "aws-sm"

    def __init__(self, client: Callable[[], Any], fallback: EnvSecrets | None = None) -> None:
        super().__init__(fallback)
        self._client = client

    def fetch(self, ref: str, name: str) -> str:
        secret_id, _, field = name.partition("#")
        c = self._client()
        try:
            value = c.get_secret_value(SecretId=secret_id)["SecretString"]
        except c.exceptions.ResourceNotFoundException:
            raise ConfigError(f"secret {ref}: no such secret in Secrets Manager; create it or fix the name") from None
        if not field:
            return value
        try:
            return json.loads(value)[field]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"secret {ref}: the secret is not a JSON object with key '{field}'") from None
