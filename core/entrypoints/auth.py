"""API keys: who calls, looked up by SHA-256 of the bearer key, so raw keys are never stored or logged.

A tenant's key acts on that tenant's jobs; an operator's key (`operators.api_keys`) reads and acts on every
tenant's and submits nothing."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from core.config.api import KEY_HASH, ApiSettings
from core.ports import Secrets

OPERATOR = object()  # what an operator's key maps to in the lookup


class Caller(NamedTuple):
    tenant: str | None  # None: an operator, whose reads and actions span every tenant

    @property
    def operator(self) -> bool:
        return self.tenant is None


class ApiKeys:
    def __init__(self, settings: ApiSettings, secrets: Secrets) -> None:
        self.by_hash: dict[str, object] = {}
        for tenant, cfg in settings.tenants.items():
            for entry in cfg.api_keys:
                self.by_hash[_digest(entry, secrets)] = tenant
        for entry in settings.operators.api_keys:
            self.by_hash[_digest(entry, secrets)] = OPERATOR
        self.tenants = sorted(settings.tenants)

    def caller(self, authorization: str | None) -> Caller | None:
        """Who sends this Authorization header, or None for a missing or unknown key."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        found = self.by_hash.get("sha256:" + _sha(token.strip()))
        if found is None:
            return None
        return Caller(None) if found is OPERATOR else Caller(str(found))

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of a tenant's key (None for an operator's, or an unknown key)."""
        caller = self.caller(authorization)
        return caller.tenant if caller is not None else None


def _digest(entry: str, secrets: Secrets) -> str:
    return entry if KEY_HASH.match(entry) else "sha256:" + _sha(secrets.resolve(entry))


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
