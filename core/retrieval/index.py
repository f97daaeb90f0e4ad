"""Embedded keyword index on SQLite FTS5 (BM25 ranking, Porter stemming), per tenant and collection."""

from __future__ import annotations

import time
from pathlib import Path

from core.embedded.sqlite import SqliteDb
from core.providers.base import ContextChunk
from core.text import STOP_WORDS, words

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    title TEXT,
    content_hash TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    PRIMARY KEY (tenant, collection, source)
);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    title TEXT,
    section TEXT,
    text TEXT NOT NULL,
    start_offset INTEGER,
    end_offset INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (tenant, collection, source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, section, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, title, section) VALUES (new.rowid, new.text, new.title, new.section);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, title, section)
    VALUES ('delete', old.rowid, old.text, old.title, old.section);
END;
"""


class KeywordIndex:
    def __init__(self, path: Path | str) -> None:
        self.db = SqliteDb(path, SCHEMA)

    def document_hash(self, tenant: str, collection: str, source: str) -> str | None:
        row = self.db.conn().execute(
            "SELECT content_hash FROM documents WHERE tenant = ? AND collection = ? AND source = ?",
            (tenant, collection, source),
        ).fetchone()
        return row[0] if row else None

    def replace_document(
        self,
        tenant: str,
        collection: str,
        source: str,
        doc_id: str,
        title: str | None,
        content_hash: str,
        chunks: list[tuple[str, str | None, str, int, int]],  # (chunk_id, section, text, start, end)
    ) -> None:
        """Atomically swap a document's chunks: readers see the old set or the new, never a mix."""
        with self.db.tx() as c:
            c.execute("DELETE FROM chunks WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source))
            c.executemany(
                "INSERT INTO chunks (tenant, collection, source, chunk_id, title, section, text, start_offset, end_offset) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(tenant, collection, source, cid, title, sec, text, s, e) for cid, sec, text, s, e in chunks],
            )
            c.execute(
                "INSERT OR REPLACE INTO documents (tenant, collection, source, doc_id, title, content_hash, ingested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, collection, source, doc_id, title, content_hash, time.time()),
            )

    def remove_document(self, tenant: str, collection: str, source: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM chunks WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source))
            c.execute("DELETE FROM documents WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source))

    def sources(self, tenant: str, collection: str) -> list[str]:
        rows = self.db.conn().execute(
            "SELECT source FROM documents WHERE tenant = ? AND collection = ?", (tenant, collection)
        ).fetchall()
        return [r[0] for r in rows]

    def collections(self, tenant: str) -> list[str]:
        rows = self.db.conn().execute("SELECT DISTINCT collection FROM documents WHERE tenant = ?", (tenant,)).fetchall()
        return [r[0] for r in rows]

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        terms = [w for w in dict.fromkeys(words(query)) if w not in STOP_WORDS]
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms[:64])
        rows = self.db.conn().execute(
            "SELECT c.chunk_id, c.source, c.title, c.text, bm25(chunks_fts) AS score "
            "FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? AND c.tenant = ? AND c.collection = ? ORDER BY score LIMIT ?",
            (match, tenant, collection, k),
        ).fetchall()
        return [ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], score=-r[4]) for r in rows]
