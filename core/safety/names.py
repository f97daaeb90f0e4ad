"""Person names, found by Presidio's analyzer where the `presidio` extra and a spaCy model are installed.

Names have no format to match, so they need a named-entity model; the rest of the PII detectors need nothing.
The model is `pii.name_model`: an installed spaCy package (en_core_web_lg) or a folder holding one. It is never
downloaded here (Presidio would fetch a missing one at run time): a missing model is a ConfigError naming the fix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.safety.pii import Span

MIN_SCORE = 0.6


def missing(model: str) -> str | None:
    """What is missing here to find names with `model` (None: nothing)."""
    from core.providers.sdks import missing_extra

    if (problem := missing_extra(("presidio_analyzer",), "presidio")) is not None:
        return (
            f"safety pii kind 'name' {problem}, with a spaCy model (python -m spacy download en_core_web_lg); "
            "or remove 'name' from pii.kinds"
        )
    import spacy.util

    if spacy.util.is_package(model) or Path(model).is_dir():
        return None
    return (
        f"safety pii.name_model: the spaCy model '{model}' is not installed here; install it where the service "
        f"is built (python -m spacy download {model}), or point name_model at a folder holding one"
    )


@lru_cache(maxsize=4)
def _analyzer(model: str) -> Any:
    if (problem := missing(model)) is not None:
        raise ConfigError(problem)
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def person_names(text: str, model: str) -> list[Span]:
    found = _analyzer(model).analyze(text=text, entities=["PERSON"], language="en")
    return [Span("name", r.start, r.end, "PERSON") for r in found if r.score >= MIN_SCORE]
