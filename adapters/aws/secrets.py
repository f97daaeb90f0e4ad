"""Secrets Manager references (`aws-sm:NAME` or `aws-sm:NAME#json_key`), cached per container."""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

from core.embedded.secrets import EnvSecrets
from core.errors import ConfigError


class SecretsManagerSecrets:
    def __init__(self, client: Callable[[], Any], fallback: EnvSecrets | None = None) -> None:
        self._client = client
        self.fallback = fallback or EnvSecrets()
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if scheme != "aws-sm":
            return self.fallback.resolve(ref)
        with self._lock:
            if ref in self._cache:
                return self._cache[ref]
        secret_id, _, field = name.partition("#")
        c = self._client()
        try:
            value = c.get_secret_value(SecretId=secret_id)["SecretString"]
        except c.exceptions.ResourceNotFoundException:
            raise ConfigError(f"secret {ref}: no such secret in Secrets Manager; create it or fix the name") from None
        if field:
            try:
                value = json.loads(value)[field]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"secret {ref}: the secret is not a JSON object with key '{field}'") from None
        with self._lock:
            self._cache[ref] = value
        return value
