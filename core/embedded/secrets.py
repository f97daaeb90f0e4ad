"""Secret references resolved from the environment or files; cloud schemes are resolved by adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from core.errors import ConfigError


class EnvSecrets:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env

    def resolve(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if scheme == "env":
            value = self.env.get(name)
            if not value:
                raise ConfigError(f"secret {ref}: environment variable {name} is not set; export it or change the reference")
            return value
        if scheme == "file":
            try:
                return Path(name).read_text().strip()
            except OSError as e:
                raise ConfigError(f"secret {ref}: cannot read {name} ({e.strerror}); fix the path or permissions") from None
        raise ConfigError(
            f"secret {ref}: the '{scheme}' scheme needs its cloud adapter's secret store; "
            "locally use env:NAME or file:/path"
        )
