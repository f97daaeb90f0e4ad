"""What every `alto` command shares: building the app from `--config` once, and the default tenant."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from core.bootstrap import App, bootstrap
from core.config.load import load_settings
from core.models import NAME_PATTERN, NAME_RULE

DEFAULT_TENANT = "default"


def valid_name(value: str) -> str:
    """An argparse type for tenant and collection names (they become parts of keys and paths)."""
    if not re.match(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid name: use {NAME_RULE}")
    return value


def port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port: use 1-65535, or 0 for any free port")
    return int(value)


def readable_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a file")
    return path


def app_from(args: argparse.Namespace) -> App:
    settings = load_settings(args.config)
    if args.cmd != "serve" and "ALTO_LOGGING__LEVEL" not in os.environ:
        settings.logging.level = "WARNING"  # interactive commands print results, not the event stream
    return bootstrap(settings)
