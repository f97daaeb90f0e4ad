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


def seconds(value: str) -> float:
    """An argparse type for a wait: a positive, finite number of seconds."""
    try:
        s = float(value)
    except ValueError:
        s = float("nan")
    if not 0 < s < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds: give a positive number, e.g. 30")
    return s


def age(value: str) -> float:
    """An argparse type for how old something must be: 0 or more seconds."""
    if value.strip() in ("0", "0.0"):
        return 0.0
    return seconds(value)


def positive(value: str) -> int:
    """An argparse type for a count (--limit): a whole number of at least 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count: give a whole number of at least 1")
    return int(value)


def natural(value: str) -> int:
    """An argparse type for a number of things that may be none (--workers 0)."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count: give a whole number, 0 or more")
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
