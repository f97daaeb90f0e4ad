"""Builds providers by name from configuration, once per process, importing each SDK only when used."""

from __future__ import annotations

import logging

from core.config.worker import Settings
from core.errors import ConfigError
from core.logs import log_event
from core.ports import Secrets
from core.providers.base import Provider
from core.providers.sdks import NEEDS, missing_sdk


class ProviderRegistry:
    def __init__(self, settings: Settings, secrets: Secrets) -> None:
        self.settings = settings
        self.secrets = secrets
        self._built: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        """The provider `name`, built on first use; ConfigError (naming the fix) when it can't be built, which
        fails the job permanently rather than ending the worker that tried."""
        provider = self._built.get(name)
        if provider is None:
            cfg = self.settings.providers.get(name)
            if cfg is not None and (missing := missing_sdk(cfg.type)):
                raise ConfigError(f"provider '{name}' (type {cfg.type}) {missing}")
            try:
                provider = self._built[name] = self._build(name)
            except ImportError as e:  # an SDK broken or half-installed: the same fix
                extra = NEEDS.get(cfg.type, ((), cfg.type))[1] if cfg is not None else "anthropic"
                raise ConfigError(
                    f"provider '{name}' could not import {e.name or 'its SDK'} ({e}); reinstall it: "
                    f"pip install --force-reinstall 'altostratus[{extra}]'"
                ) from None
        return provider

    def _build(self, name: str) -> Provider:
        cfg = self.settings.providers.get(name)
        if cfg is None:
            raise ConfigError(f"provider '{name}' is not configured under `providers`")
        if cfg.type == "offline":
            from core.providers.offline import OfflineProvider

            return OfflineProvider()
        if cfg.type == "anthropic":
            from core.providers.anthropic import AnthropicProvider

            if not cfg.api_key:
                raise ConfigError(f"providers.{name}.api_key: set a secret reference such as env:ANTHROPIC_API_KEY")
            return AnthropicProvider(
                api_key=self.secrets.resolve(cfg.api_key),
                base_url=cfg.base_url,
                timeout_s=cfg.timeout_s,
                max_connections=cfg.max_connections,
                http=cfg.http,
                calls=cfg.calls,
                sdk_spans=not self.settings.observability.otel.enabled,
            )
        if cfg.type == "openai_compatible":
            from core.providers.openai_compatible import OpenAICompatibleProvider

            if not cfg.base_url:
                raise ConfigError(
                    f"providers.{name}.base_url: openai_compatible needs the API base, e.g. https://api.openai.com/v1, "
                    "http://localhost:11434/v1 (Ollama) or https://RESOURCE.openai.azure.com (api_style: azure)"
                )
            return OpenAICompatibleProvider(
                base_url=cfg.base_url,
                api_key=self.secrets.resolve(cfg.api_key) if cfg.api_key else None,
                timeout_s=cfg.timeout_s,
                max_connections=cfg.max_connections,
                api_style=cfg.api_style,
                api_version=cfg.api_version,
            )
        if cfg.type == "bedrock":
            from core.providers.bedrock import BedrockProvider

            return BedrockProvider(
                region=cfg.region,
                endpoint_url=cfg.endpoint_url or cfg.base_url,
                timeout_s=cfg.timeout_s,
                max_connections=cfg.max_connections,
            )
        raise ConfigError(f"providers.{name}.type: unknown provider type {cfg.type!r}")

    def warm(self) -> list[str]:
        """Build every provider a route may call, before the first job: a cold SDK import blocks the loop
        for about a second, which would otherwise fall inside the first jobs' deadlines. One that can't
        be built is left for its jobs to report. Returns the names built."""
        from core.config.secrets_check import routed_providers

        built = []
        for name in routed_providers(self.settings):
            try:
                self.get(name)
            except ConfigError as e:  # its jobs fail saying this; the worker goes on with the others
                log_event("provider.unavailable", logging.ERROR, provider=name, error=str(e))
                continue
            built.append(name)
        return built

    async def aclose(self) -> None:
        for p in self._built.values():
            await p.aclose()
        self._built.clear()
