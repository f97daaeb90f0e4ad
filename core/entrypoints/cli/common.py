"""What every `alto` command shares: building the app from `--config` once, and the default tenant."""

from __future__ import annotations

import argparse
import os

from core.bootstrap import App, bootstrap
from core.config.load import load_settings

DEFAULT_TENANT = "default"


def app_from(args: argparse.Namespace) -> App:
    settings = load_settings(args.config)
    if args.cmd != "serve" and "ALTO_LOGGING__LEVEL" not in os.environ:
        settings.logging.level = "WARNING"  # interactive commands print results, not the event stream
    return bootstrap(settings)
