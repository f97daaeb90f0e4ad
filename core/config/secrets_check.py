"""What `alto config check` verifies beyond the schema: every secret reference the configuration will
use resolves on this machine. Only providers that some route can reach are checked (the built-in
`anthropic` provider is defined everywhere, used by few), and only `env:` and `file:` references
(cloud secret stores are checked where they live). Build machines skip this with `--skip-secrets`;
`--bundle` checks the packages a deployment's bundle must hold (the vault's cipher when a policy redacts, the
names model when one looks for names)."""

from __future__ import annotations

from core.config.api import SECRET_REF
from core.config.worker import Settings
from core.errors import ConfigError
from core.ports import Secrets
from core.providers.sdks import missing_extra, missing_sdk

LOCAL_SCHEMES = ("env", "file")


def routed_providers(settings: Settings) -> list[str]:
    """Providers some route may call (validation has checked that every routed model exists)."""
    return sorted({settings.models[m].provider for m in settings.routing.routed_models()})


def secret_refs(settings: Settings) -> list[tuple[str, str]]:
    """(where, reference) for every secret the running service will resolve."""
    refs = [(f"providers.{name}.api_key", settings.providers[name].api_key) for name in routed_providers(settings)]
    for tenant, cfg in settings.tenants.items():
        refs += [(f"tenants.{tenant}.api_keys[{i}]", k) for i, k in enumerate(cfg.api_keys) if SECRET_REF.match(k)]
        refs.append((f"tenants.{tenant}.webhook_secret", cfg.webhook_secret))
    if settings.safety.vault_key is not None:
        refs.append(("safety.vault_key", settings.safety.vault_key))
    if settings.retrieval.backend == "pgvector" and settings.retrieval.pgvector is not None:
        refs.append(("retrieval.pgvector.dsn", settings.retrieval.pgvector.dsn))
    return [(where, ref) for where, ref in refs if ref]


def missing_sdks(settings: Settings) -> list[str]:
    """Routed providers whose SDK is not installed here, each with the pip command that installs it."""
    return [
        f"  providers.{name} (type {settings.providers[name].type}) {missing}"
        for name in routed_providers(settings)
        if (missing := missing_sdk(settings.providers[name].type))
    ]


def missing_cipher(settings: Settings) -> list[str]:
    """The vault's cipher, when a policy redacts and `cryptography` is not installed here."""
    redacting = settings.safety.redacting()
    if not redacting or (problem := missing_extra(("cryptography",), "safety")) is None:
        return []
    return [f"  safety.policies.{redacting[0]} redacts, and the vault that seals the values {problem}"]


def missing_for_safety(settings: Settings) -> list[str]:
    """What the safety policies need that is not installed here: the vault's cipher, the names model."""
    from core.safety.names import missing

    found = [(n, problem) for n, model in settings.safety.name_models() if (problem := missing(model)) is not None]
    return missing_cipher(settings) + [f"  safety.policies.{n}: {problem}" for n, problem in found]


def unresolved_secrets(settings: Settings, secrets: Secrets) -> list[str]:
    problems = []
    for where, ref in secret_refs(settings):
        if ref.partition(":")[0] not in LOCAL_SCHEMES:
            continue
        try:
            secrets.resolve(ref)
        except ConfigError as e:
            problems.append(f"  {where}: {e}")
    return problems
