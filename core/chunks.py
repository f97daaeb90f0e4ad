"""The chunk types of the domain: `ChunkRow`, one passage as ingestion writes it to an index, and
`ContextChunk`, one retrieved passage as retrieval returns it and prompting and citations use it.

Their own module so the ports, retrieval, assembly and prompting share them without importing an engine.
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


@dataclass
class ChunkRow:
    """One chunk as ingestion writes it."""

    chunk_id: str
    section: str | None
    text: str
    start: int
    end: int
    tokens: int
    chunk_hash: str
    vector: bytes | None = None
