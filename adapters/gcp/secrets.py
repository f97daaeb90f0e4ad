"""Secret Manager references (`gcp-sm:NAME`, `gcp-sm:NAME/VERSION` or a full resource name), cached
per instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.errors import ConfigError
from core.secrets import CachedSecrets, EnvSecrets


class SecretManagerSecrets(CachedSecrets):
    scheme = "gcp-sm"

    def __init__(
        self, client: Callable[[], Any], project: Callable[[], str], fallback: EnvSecrets | None = None
    ) -> None:
        super().__init__(fallback)
        self._client = client
        self._project = project

    def fetch(self, ref: str, name: str) -> str:
        if name.startswith("projects/"):
            resource = name if "/versions/" in name else f"{name}/versions/latest"
        else:
            secret, _, version = name.partition("/")
            resource = f"projects/{self._project()}/secrets/{secret}/versions/{version or 'latest'}"
        from google.api_core.exceptions import NotFound

        try:
            return self._client().access_secret_version(name=resource).payload.data.decode()
        except NotFound:
            raise ConfigError(f"secret {ref}: {resource} does not exist; create it or fix the name") from None
