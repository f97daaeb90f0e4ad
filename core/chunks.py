"""`ContextChunk`: one retrieved passage, as retrieval returns it and prompting and citations use it.

Its own module so retrieval, assembly and prompting share it without importing providers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextChunk:
    id: str  # stable citation id, `doc#chunk`
    source: str
    title: str | None
    text: str
    score: float = 0.0
    section: str | None = None
