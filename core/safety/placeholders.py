"""Placeholders for redacted values: `[EMAIL_3f9c2a]`, the same for the same value everywhere in a tenant's jobs.

A placeholder's suffix is a keyed hash of the tenant and the value (the vault's key), not a counter: a thread's
earlier turns, a cached reply and a retrieved chunk all name one address alike, so the model sees one entity, and
the answer is restored with the job's own table. The key makes the suffix useless for guessing the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]{1,64})_([0-9a-f]{6})\]")
PARTIAL = re.compile(r"\[[A-Z0-9_]{0,65}[0-9a-f]{0,6}$")  # a placeholder cut at the end of a streamed text
Reveal = Callable[[str], str]


def placeholder(key: bytes, tenant: str, kind: str, value: str) -> str:
    digest = hmac.new(key, f"{tenant}\x00{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"[{re.sub(r'[^A-Z0-9]', '_', kind.upper())}_{digest[:6]}]"


def substitute(text: str, spans: list[tuple[int, int, str]]) -> str:
    """`text` with each (start, end) replaced by its placeholder; spans sorted and disjoint."""
    out, at = [], 0
    for start, end, tag in spans:
        out.append(text[at:start])
        out.append(tag)
        at = end
    out.append(text[at:])
    return "".join(out)


def revealer(table: dict[str, str]) -> Reveal:
    """Restores the placeholders `table` knows; any other bracketed text is left as it is."""
    if not table:
        return _same
    return lambda text: PLACEHOLDER.sub(lambda m: table.get(m.group(0), m.group(0)), text) if "[" in text else text


def _same(text: str) -> str:
    return text


def reveal_json(value: Any, reveal: Reveal) -> Any:
    """A parsed JSON reply (or tool arguments) with its strings restored."""
    if isinstance(value, str):
        return reveal(value)
    if isinstance(value, list):
        return [reveal_json(v, reveal) for v in value]
    if isinstance(value, dict):
        return {k: reveal_json(v, reveal) for k, v in value.items()}
    return value


def held_tail(text: str) -> int:
    """How many characters at the end of `text` may be the start of a placeholder (held back from a stream)."""
    m = PARTIAL.search(text[-80:])
    return len(m.group(0)) if m else 0
