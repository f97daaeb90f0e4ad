"""Secret references resolved from the environment or files; cloud schemes are resolved by adapters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from core.errors import ConfigError


class EnvSecrets:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def resolve(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if scheme == "env":
            value = self.env.get(name)
            if not value:
                raise ConfigError(
                    f"secret {ref}: environment variable {name} is not set; export it or change the reference"
                )
            return value
        if scheme == "file":
            try:
                return Path(name).read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"secret {ref}: cannot read {name} ({e.strerror}); fix the path or permissions"
                ) from None
        raise ConfigError(
            f"secret {ref}: the '{scheme}' scheme needs its cloud adapter's secret store; "
            "locally use env:NAME or file:/path"
        )


class CachedSecrets:
    """A cloud secret store behind one reference scheme (`aws-sm:`, `gcp-sm:`), each value fetched
    once per process and kept; every other scheme goes to `fallback`. Subclasses implement `fetch`."""

    scheme = ""

    def __init__(self, fallback: EnvSecrets | None = None) -> None:
        import threading

        self.fallback = fallback or EnvSecrets()
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def fetch(self, ref: str, name: str) -> str:
        """The secret's value; raises ConfigError naming what is wrong and the fix."""
        raise NotImplementedError

    def resolve(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if scheme != self.scheme:
            return self.fallback.resolve(ref)
        with self._lock:
            if ref in self._cache:
                return self._cache[ref]
        value = self.fetch(ref, name)
        with self._lock:
            self._cache[ref] = value
        return value
