"""Configuration: the sections the HTTP API reads (`api`), the ones job processing adds (`worker`), and
loading them from file and environment (`load`). Importing this package defines no worker section."""

from core.config.api import KEY_HASH, SECRET_REF, ApiSettings, hash_api_key
from core.config.load import load_api_settings, load_settings

__all__ = ["KEY_HASH", "SECRET_REF", "ApiSettings", "hash_api_key", "load_api_settings", "load_settings"]
