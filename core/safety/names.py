"""Person names, found by Presidio's analyzer where the `presidio` extra (and a spaCy model) is installed.

Names have no format to match, so they need a named-entity model; the rest of the PII detectors need nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from core.errors import ConfigError
from core.safety.pii import Span

MIN_SCORE = 0.6


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        raise ConfigError(
            "safety pii kind 'name' needs Presidio: pip install 'altostratus[presidio]' and a spaCy model "
            "(python -m spacy download en_core_web_lg), or remove 'name' from pii.kinds"
        ) from None
    return AnalyzerEngine()


def person_names(text: str) -> list[Span]:
    found = _analyzer().analyze(text=text, entities=["PERSON"], language="en")
    return [Span("name", r.start, r.end, "PERSON") for r in found if r.score >= MIN_SCORE]
