"""Secret Manager references (`gcp-sm:NAME`, `gcp-sm:NAME/VERSION` or a full resource name), cached
per instance."""

from __future__ import annotations

import threading
from typing import Any, Callable

from core.embedded.secrets import EnvSecrets
from core.errors import ConfigError


class SecretManagerSecrets:
    def __init__(self, client: Callable[[], Any], project: Callable[[], str], fallback: EnvSecrets | None = None) -> None:
        self._client = client
        self._project = project
        self.fallback = fallback or EnvSecrets()
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if scheme != "gcp-sm":
            return self.fallback.resolve(ref)
        with self._lock:
            if ref in self._cache:
                return self._cache[ref]
        if name.startswith("projects/"):
            resource = name if "/versions/" in name else f"{name}/versions/latest"
        else:
            secret, _, version = name.partition("/")
            resource = f"projects/{self._project()}/secrets/{secret}/versions/{version or 'latest'}"
        from google.api_core.exceptions import NotFound

        try:
            value = self._client().access_secret_version(name=resource).payload.data.decode()
        except NotFound:
            raise ConfigError(f"secret {ref}: {resource} does not exist; create it or fix the name") from None
        with self._lock:
            self._cache[ref] = value
        return value
