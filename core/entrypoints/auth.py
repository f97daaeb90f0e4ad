"""API keys: tenant lookup by SHA-256 of the bearer key, so raw keys are never stored or logged."""

from __future__ import annotations

import hashlib

from core.config.api import KEY_HASH, ApiSettings
from core.ports import Secrets


class ApiKeys:
    def __init__(self, settings: ApiSettings, secrets: Secrets) -> None:
        self.by_hash: dict[str, str] = {}
        for tenant, cfg in settings.tenants.items():
            for entry in cfg.api_keys:
                digest = entry if KEY_HASH.match(entry) else "sha256:" + _sha(secrets.resolve(entry))
                self.by_hash[digest] = tenant

    def tenant_for(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.by_hash.get("sha256:" + _sha(token.strip()))


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
