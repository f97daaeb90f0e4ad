"""The vault: a job's redacted values sealed (AES-GCM) under the deployment's key, bound to the job they belong to.

A redacting policy keeps the values it replaced so the answer can be restored; they are stored only sealed, in the
job's record, so no store, log, trace or cache holds them in the clear. The key is `safety.vault_key` (a secret
reference), or for the embedded stores a key file made once in the data directory. Two subkeys come from it: one
seals, one names placeholders (`core.safety.placeholders`). `cryptography` is imported only when a policy redacts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.ports import Secrets

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1:"


class Vault:
    def __init__(self, key: Callable[[], bytes]) -> None:
        self._source = key
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def _root(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._source()
            return self._key

    def subkey(self, purpose: str) -> bytes:
        return hmac.new(self._root(), purpose.encode(), hashlib.sha256).digest()

    def seal(self, table: dict[str, str], bound: str) -> str:
        """`table` (placeholder to value) encrypted, bound to `bound` (the job's tenant and id)."""
        aead = _aead(self.subkey("seal"))
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, json.dumps(table, separators=(",", ":")).encode(), bound.encode())
        return VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, bound: str) -> dict[str, str]:
        if not sealed.startswith(VERSION):
            raise ValueError("not a sealed table of this version")
        raw = base64.b64decode(sealed[len(VERSION) :])
        try:
            plain = _aead(self.subkey("seal")).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound.encode())
        except Exception:  # cryptography's InvalidTag says nothing more
            raise ValueError(
                f"the sealed values of {bound} do not open with this vault key: the key changed, or the record "
                "was copied from another job"
            ) from None
        table = json.loads(plain)
        return {str(k): str(v) for k, v in table.items()}

    def digest(self, text: str) -> str:
        """A keyed hash (for a fingerprint that must not be a plain hash of personal data)."""
        return hmac.new(self.subkey("fingerprint"), text.encode(), hashlib.sha256).hexdigest()


def _aead(key: bytes) -> Any:  # cryptography's AESGCM, imported only here
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError(
            "a safety policy redacts PII, which seals the redacted values with `cryptography`: "
            "pip install 'altostratus[safety]'"
        ) from None
    return AESGCM(key)


def key_source(ref: str | None, secrets: Secrets, local: Path | None) -> Callable[[], bytes]:
    """Where the vault's key comes from: the secret `ref`, else a key file under `local` (the embedded stores)."""

    def resolve() -> bytes:
        if ref is not None:
            return _decoded(secrets.resolve(ref), ref)
        if local is None:
            raise ConfigError(
                "a safety policy redacts PII, and `safety.vault_key` is not set: put 32 random bytes, base64 "
                "(`openssl rand -base64 32`), in the secret store the functions read and reference it there"
            )
        return _local_key(local / "vault.key")

    return resolve


def _decoded(value: str, ref: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"safety.vault_key {ref}: the value must be {KEY_BYTES} random bytes in base64 (44 characters)"
        )
    return key


def _local_key(path: Path) -> bytes:
    """The embedded stores' key, made once: O_EXCL, so two processes starting together agree on one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the process that made it may not have written it yet
            if text := path.read_text().strip():
                return _decoded(text, str(path))
            time.sleep(0.01)
        return _decoded(path.read_text(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(new_key())
    return _decoded(path.read_text(), str(path))


def new_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
