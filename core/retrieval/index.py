"""The embedded index: SQLite FTS5 (BM25, Porter stemming) plus optional chunk vectors, per tenant
and collection, in one file.

One file holds everything a collection needs so that the same file is what `alto ingest --publish`
uploads as a read-only snapshot for serverless workers (see `snapshot.py`).

Scoping: every chunk carries a `scope` token (a hash of tenant and collection) in the FTS table, and
every query is `scope AND (terms)`, so FTS5 intersects doclists instead of ranking other tenants'
matches and filtering them afterwards.

Common words: stop words are dropped from queries, and in collections of `COMMON_MIN_CHUNKS` or
more, terms found in more than `COMMON_FRACTION` of the chunks only rank chunks that match a rarer
term (Lucene's common-terms idea); a query made only of common terms requires all of them (falling
back to its two most selective). This bounds the worst common-word query (`benchmarks/retrieval.py`).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.chunks import ChunkRow, ContextChunk
from core.embedded.sqlite import SqliteDb
from core.text import STOP_WORDS, words

COMMON_FRACTION = 0.05
COMMON_MIN_CHUNKS = 2000  # below this, ranking every match costs well under a millisecond anyway
SCHEMA_VERSION = 2

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
    end_offset INTEGER,
    chunk_hash TEXT,
    tokens INTEGER,
    scope TEXT NOT NULL DEFAULT '',
    vector BLOB
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (tenant, collection, source);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_id ON chunks (tenant, collection, chunk_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, section, scope, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, title, section, scope)
    VALUES (new.rowid, new.text, new.title, new.section, new.scope);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, title, section, scope)
    VALUES ('delete', old.rowid, old.text, old.title, old.section, old.scope);
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keyword_models (
    tenant TEXT NOT NULL, collection TEXT NOT NULL, generation INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (tenant, collection)
);
"""


def scope_token(tenant: str, collection: str) -> str:
    """A single FTS token naming (tenant, collection); digits only, so no stemmer can alter it."""
    return "s" + str(int(hashlib.sha256(f"{tenant}\x1f{collection}".encode()).hexdigest()[:15], 16))


class KeywordIndex:
    """Writer and reader of the embedded index; also the `Retriever` for keyword mode."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self.db: SqliteDb | _ReadOnlyDb = _ReadOnlyDb(self.path)
        else:
            self.db = SqliteDb(path, SCHEMA)
            self._check_schema()
        self._df_cache: dict[tuple[str, str], tuple[float, dict[str, int], int]] = {}
        self._lock = threading.Lock()

    def _check_schema(self) -> None:
        c = self.db.conn()
        cols = {r[1] for r in c.execute("PRAGMA table_info(chunks)")}
        fts_cols = {r[1] for r in c.execute("PRAGMA table_info(chunks_fts)")}
        if "scope" not in cols or "scope" not in fts_cols:
            from core.errors import ConfigError

            raise ConfigError(
                f"{self.path} was written by an older Altostratus (index schema 1); delete it and run "
                "`alto ingest` again (the index holds only derived data)"
            )
        c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    # ------------------------------------------------------------------ writes

    def document_hash(self, tenant: str, collection: str, source: str) -> str | None:
        row = (
            self.db.conn()
            .execute(
                "SELECT content_hash FROM documents WHERE tenant = ? AND collection = ? AND source = ?",
                (tenant, collection, source),
            )
            .fetchone()
        )
        return row[0] if row else None

    def replace_document(
        self,
        tenant: str,
        collection: str,
        source: str,
        doc_id: str,
        title: str | None,
        content_hash: str,
        chunks: list[ChunkRow],
    ) -> None:
        """Atomically swap a document's chunks: readers see the old set or the new, never a mix."""
        scope = scope_token(tenant, collection)
        with self.db.tx() as c:
            c.execute(
                "DELETE FROM chunks WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source)
            )
            c.executemany(
                "INSERT INTO chunks (tenant, collection, source, chunk_id, title, section, text, start_offset, "
                "end_offset, chunk_hash, tokens, scope, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        tenant,
                        collection,
                        source,
                        r.chunk_id,
                        title,
                        r.section,
                        r.text,
                        r.start,
                        r.end,
                        r.chunk_hash,
                        r.tokens,
                        scope,
                        r.vector,
                    )
                    for r in chunks
                ],
            )
            c.execute(
                "INSERT OR REPLACE INTO documents (tenant, collection, source, doc_id, title, content_hash, ingested_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, collection, source, doc_id, title, content_hash, time.time()),
            )
            self._bump(c, tenant, collection)

    def remove_document(self, tenant: str, collection: str, source: str) -> None:
        with self.db.tx() as c:
            c.execute(
                "DELETE FROM chunks WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source)
            )
            c.execute(
                "DELETE FROM documents WHERE tenant = ? AND collection = ? AND source = ?", (tenant, collection, source)
            )
            self._bump(c, tenant, collection)

    @staticmethod
    def _bump(c: sqlite3.Connection, tenant: str, collection: str) -> None:
        """A per-collection generation number: lets readers (and the vector cache) notice changes."""
        key = f"gen:{tenant}\x1f{collection}"
        c.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (key,),
        )

    def generation(self, tenant: str, collection: str) -> int:
        row = (
            self.db.conn()
            .execute("SELECT value FROM meta WHERE key = ?", (f"gen:{tenant}\x1f{collection}",))
            .fetchone()
        )
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ reads

    def sources(self, tenant: str, collection: str) -> list[str]:
        rows = (
            self.db.conn()
            .execute("SELECT source FROM documents WHERE tenant = ? AND collection = ?", (tenant, collection))
            .fetchall()
        )
        return [r[0] for r in rows]

    def collections(self, tenant: str) -> list[str]:
        rows = (
            self.db.conn().execute("SELECT DISTINCT collection FROM documents WHERE tenant = ?", (tenant,)).fetchall()
        )
        return [r[0] for r in rows]

    def stats(self, tenant: str, collection: str) -> dict[str, Any]:
        c = self.db.conn()
        docs = c.execute(
            "SELECT count(*) FROM documents WHERE tenant = ? AND collection = ?", (tenant, collection)
        ).fetchone()[0]
        chunks, vectors, tokens = c.execute(
            "SELECT count(*), count(vector), coalesce(sum(tokens), 0) FROM chunks WHERE tenant = ? AND collection = ?",
            (tenant, collection),
        ).fetchone()
        return {"documents": docs, "chunks": chunks, "vectors": vectors, "tokens": tokens}

    def fetch(self, tenant: str, collection: str, chunk_ids: Iterable[str]) -> list[ContextChunk]:
        """Chunks by id, in the order asked (ids no longer in the index are left out)."""
        ids = list(chunk_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = (
            self.db.conn()
            .execute(
                f"SELECT chunk_id, source, title, text, section FROM chunks WHERE tenant = ? AND collection = ? "
                f"AND chunk_id IN ({marks})",
                (tenant, collection, *ids),
            )
            .fetchall()
        )
        by_id = {r[0]: ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], section=r[4]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def vectors(self, tenant: str, collection: str) -> tuple[list[str], list[bytes]]:
        rows = (
            self.db.conn()
            .execute(
                "SELECT chunk_id, vector FROM chunks WHERE tenant = ? AND collection = ? AND vector IS NOT NULL "
                "ORDER BY rowid",
                (tenant, collection),
            )
            .fetchall()
        )
        return [r[0] for r in rows], [r[1] for r in rows]

    def texts(self, tenant: str, collection: str) -> tuple[list[str], list[str]]:
        """(chunk ids, searchable text) in index order: what a derived keyword model is built from."""
        rows = (
            self.db.conn()
            .execute(
                "SELECT chunk_id, coalesce(title, ''), coalesce(section, ''), text FROM chunks "
                "WHERE tenant = ? AND collection = ? ORDER BY rowid",
                (tenant, collection),
            )
            .fetchall()
        )
        return [r[0] for r in rows], [f"{r[1]} {r[2]} {r[3]}" for r in rows]

    def keyword_blob(self, tenant: str, collection: str, generation: int) -> bytes | None:
        row = (
            self.db.conn()
            .execute(
                "SELECT data FROM keyword_models WHERE tenant = ? AND collection = ? AND generation = ?",
                (tenant, collection, generation),
            )
            .fetchone()
        )
        return row[0] if row else None

    def put_keyword_blob(self, tenant: str, collection: str, generation: int, data: bytes) -> None:
        with self.db.tx() as c:
            if self.generation(tenant, collection) == generation:  # not if an ingest raced past us
                c.execute(
                    "INSERT OR REPLACE INTO keyword_models VALUES (?, ?, ?, ?)", (tenant, collection, generation, data)
                )

    def _doc_freqs(self, tenant: str, collection: str, terms: list[str]) -> tuple[dict[str, int], int]:
        """Chunk counts per stemmed term within the collection (cached per index generation)."""
        c = self.db.conn()
        gen = self.generation(tenant, collection)
        key = (tenant, collection)
        with self._lock:
            cached = self._df_cache.get(key)
            if cached is None or cached[0] != gen:
                total = c.execute(
                    "SELECT count(*) FROM chunks WHERE tenant = ? AND collection = ?", (tenant, collection)
                ).fetchone()[0]
                cached = (gen, {}, total)
                self._df_cache[key] = cached
        _, dfs, total = cached
        scope = scope_token(tenant, collection)
        for t in terms:
            if t not in dfs:
                # counting a doclist intersection is cheap next to ranking it, and done once per term
                dfs[t] = c.execute(
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'scope:{scope} AND "{t}"',)
                ).fetchone()[0]
        return dfs, total

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        terms = [w.replace('"', "") for w in dict.fromkeys(words(query)) if w not in STOP_WORDS][:32]
        terms = [t for t in terms if t]
        if not terms:
            return []
        scope = scope_token(tenant, collection)
        dfs, total = self._doc_freqs(tenant, collection, terms)
        terms = [t for t in terms if dfs.get(t, 0) > 0]
        if not terms:
            return []
        limit = int(total * COMMON_FRACTION) if total >= COMMON_MIN_CHUNKS else total
        rare = [t for t in terms if dfs[t] <= limit]
        common = [t for t in terms if dfs[t] > limit]
        quoted = {t: f'"{t}"' for t in terms}
        if rare:
            expr = "(" + " OR ".join(quoted[t] for t in rare) + ")"
            if common:  # common terms still add to the score of chunks that matched a rare term
                expr = f"{expr} AND ({' OR '.join(quoted[t] for t in rare + common)})"
        else:
            expr = " AND ".join(quoted[t] for t in common)
        rows = self._ranked(scope, expr, k)
        if not rows and not rare and len(common) > 1:  # no chunk has them all: the two most selective
            rows = self._ranked(scope, " OR ".join(quoted[t] for t in sorted(common, key=dfs.__getitem__)[:2]), k)
        return [ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], section=r[4], score=-r[5]) for r in rows]

    def _ranked(self, scope: str, expr: str, k: int) -> list[tuple]:
        return (
            self.db.conn()
            .execute(
                "SELECT c.chunk_id, c.source, c.title, c.text, c.section, bm25(chunks_fts, 1.0, 0.5, 0.5, 0.0) AS score "
                "FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
                "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                (f"scope:{scope} AND ({expr})", k),
            )
            .fetchall()
        )

    def export(self, tenant: str, collection: str, dest: Path) -> None:
        """Write one collection into a fresh index file (the snapshot `alto ingest --publish` uploads)."""
        dest.unlink(missing_ok=True)
        out = KeywordIndex(dest)
        src = self.db.conn()
        with out.db.tx() as c:
            for row in src.execute(
                "SELECT tenant, collection, source, doc_id, title, content_hash, ingested_at FROM documents "
                "WHERE tenant = ? AND collection = ?",
                (tenant, collection),
            ):
                c.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            for row in src.execute(
                "SELECT tenant, collection, source, chunk_id, title, section, text, start_offset, end_offset, "
                "chunk_hash, tokens, scope, vector FROM chunks WHERE tenant = ? AND collection = ? ORDER BY rowid",
                (tenant, collection),
            ):
                c.execute(
                    "INSERT INTO chunks (tenant, collection, source, chunk_id, title, section, text, start_offset, "
                    "end_offset, chunk_hash, tokens, scope, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            self._bump(c, tenant, collection)
        from core.retrieval import bm25

        if bm25.available():  # ship the derived keyword model: cold starts load it instead of building it
            bm25.Bm25Engine(out).model(tenant, collection)
        oc = out.db.conn()
        oc.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")
        oc.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        oc.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        assert isinstance(out.db, SqliteDb)  # written just now: never a snapshot
        out.db.close()


class _ReadOnlyDb:
    """Per-thread read-only connections to a downloaded snapshot (immutable: no locks, no WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            self._local.conn = c
        return c

    def tx(self) -> Any:
        raise PermissionError(f"{self.path} is a read-only index snapshot; ingest into the writable index")
