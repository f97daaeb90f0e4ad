"""Secrets on Azure Functions: Key Vault references in app settings, resolved by the platform, read as
`env:NAME`. A reference the platform could not resolve (the secret missing, the identity's role not yet
granted) reaches the app as its own literal text; that must never be sent to a provider as a key."""

from __future__ import annotations

from collections.abc import Mapping

from core.errors import ConfigError
from core.secrets import EnvSecrets

UNRESOLVED = "@Microsoft.KeyVault("


class AppSettingSecrets(EnvSecrets):
    def __init__(self, env: Mapping[str, str] | None = None, *, app: str = "the function app") -> None:
        super().__init__(env)
        self.app = app

    def resolve(self, ref: str) -> str:
        value = super().resolve(ref)
        if value.startswith(UNRESOLVED):
            raise ConfigError(
                f"secret {ref}: the Key Vault reference in app setting {ref.partition(':')[2]} did not resolve (the "
                f"secret is missing, or the app's identity cannot read it yet): store it with `az keyvault secret set`, "
                f"then `az functionapp restart` {self.app}; the Function App's Environment variables blade shows why"
            )
        return value
