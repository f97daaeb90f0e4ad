"""PII masking for what is written down (log lines, audit records): e-mail addresses, card and phone numbers.

A neutral module, so logging can mask without importing the guardrails' policy checks.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PII = [
    (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[email]"),
    (r"\b(?:\d[ -]?){13,19}\b", "[card]"),
    (r"(?<!\w)\+?\d[\d ()-]{7,}\d\b", "[phone]"),
]


@lru_cache(maxsize=1)
def _pii() -> list[tuple[re.Pattern[str], str]]:
    """Compiled on first use: only deployments that turn on `redact_pii_in_logs` pay for it."""
    return [(re.compile(p), repl) for p, repl in _PII]


def redact(text: str) -> str:
    for pat, repl in _pii():
        text = pat.sub(repl, text)
    return text
