"""Guardrails: policy checks before the model (input size, blocked patterns) and after it (answer
length, citations only to supplied chunks). PII masking for what is logged is `core.redaction`.

A violation is permanent and explained: retrying the same input would fail the same way.
"""

from __future__ import annotations

import re
from functools import lru_cache

from core.config.api import GuardrailsConfig
from core.errors import GuardrailViolation
from core.models import Citation


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def check_input(prompt: str, cfg: GuardrailsConfig) -> None:
    if cfg.max_input_chars is not None and len(prompt) > cfg.max_input_chars:
        raise GuardrailViolation(
            f"guardrail max_input_chars: the prompt has {len(prompt)} characters, the limit is {cfg.max_input_chars}; "
            "shorten it or raise guardrails.max_input_chars",
            rule="max_input_chars",
        )
    for i, pat in enumerate(_compiled(tuple(cfg.blocked_patterns))):
        if pat.search(prompt):
            raise GuardrailViolation(
                f"guardrail blocked_patterns[{i}]: the prompt matches a blocked pattern; remove that content",
                rule="blocked_patterns",
            )


def check_output(text: str, citations: list[Citation], cfg: GuardrailsConfig) -> None:
    if cfg.max_output_chars is not None and len(text) > cfg.max_output_chars:
        raise GuardrailViolation(
            f"guardrail max_output_chars: the answer has {len(text)} characters, the limit is {cfg.max_output_chars}",
            rule="max_output_chars",
        )
    bad = [c.id for c in citations if not c.valid]
    if cfg.require_valid_citations and bad:
        raise GuardrailViolation(
            f"guardrail require_valid_citations: the answer cites {', '.join(bad)}, which were not in its context",
            rule="require_valid_citations",
        )
