"""Postgres + pgvector: the index for corpora too big to snapshot (RDS/Aurora, Cloud SQL, Azure
Database for PostgreSQL all offer the extension).

Both halves of hybrid retrieval run in Postgres: full-text search on a generated `tsvector`
(English stemming and stop words, GIN index) and cosine distance on a `vector(384)` column; the two
rankings are fused with the same reciprocal-rank fusion as the embedded index. Vector search is
exact within a (tenant, collection) by default, which keeps tenant filtering correct; set
`retrieval.pgvector.hnsw: true` for an approximate HNSW index on very large single-tenant tables.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core.chunks import ChunkRow, ContextChunk
from core.retrieval.embedding import Embedder
from core.retrieval.hybrid import Mode, search_by_mode


def _schema(p: str, dim: int, hnsw: bool) -> list[str]:
    ddl = [
        "CREATE EXTENSION IF NOT EXISTS vector",
        f"""CREATE TABLE IF NOT EXISTS {p}_documents (
            tenant text NOT NULL, collection text NOT NULL, source text NOT NULL, doc_id text NOT NULL,
            title text, content_hash text NOT NULL, ingested_at double precision NOT NULL,
            PRIMARY KEY (tenant, collection, source))""",
        f"""CREATE TABLE IF NOT EXISTS {p}_chunks (
            tenant text NOT NULL, collection text NOT NULL, source text NOT NULL, chunk_id text NOT NULL,
            title text, section text, text text NOT NULL, start_offset int, end_offset int, chunk_hash text,
            tokens int, embedding vector({dim}),
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', coalesce(title, '') || ' ' || coalesce(section, '')), 'B')
                || setweight(to_tsvector('english', text), 'A')) STORED,
            PRIMARY KEY (tenant, collection, chunk_id))""",
        f"CREATE INDEX IF NOT EXISTS {p}_chunks_source ON {p}_chunks (tenant, collection, source)",
        f"CREATE INDEX IF NOT EXISTS {p}_chunks_tsv ON {p}_chunks USING gin (tsv)",
    ]
    if hnsw:
        ddl.append(f"CREATE INDEX IF NOT EXISTS {p}_chunks_hnsw ON {p}_chunks USING hnsw (embedding vector_cosine_ops)")
    return ddl


def _vec(v: Any) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in v) + "]"


class PgVectorIndex:
    """`DocumentIndex` and `Retriever` on Postgres; one connection per process, created lazily."""

    def __init__(
        self,
        dsn: str,
        *,
        mode: Mode = "hybrid",
        embedder: Embedder | None = None,
        rrf_k: int = 60,
        table_prefix: str = "alto",
        hnsw: bool = False,
    ) -> None:
        if mode != "keyword" and embedder is None:
            raise ValueError(f"retrieval mode '{mode}' needs an embedding model")
        if not table_prefix.isidentifier():
            raise ValueError(f"retrieval.pgvector.table_prefix must be an SQL identifier, got {table_prefix!r}")
        self.dsn = dsn
        self.mode = mode
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.p = table_prefix
        self.hnsw = hnsw
        self._conn: Any = None
        self._lock = threading.Lock()

    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            c = psycopg.connect(self.dsn, autocommit=True)
            for stmt in _schema(self.p, self.embedder.dim if self.embedder else 384, self.hnsw):
                c.execute(stmt)
            self._conn = c
        return self._conn

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        with self._lock:
            return self.conn().execute(sql, params).fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ DocumentIndex

    def document_hash(self, tenant: str, collection: str, source: str) -> str | None:
        rows = self._rows(
            f"SELECT content_hash FROM {self.p}_documents WHERE tenant = %s AND collection = %s AND source = %s",
            (tenant, collection, source),
        )
        return rows[0][0] if rows else None

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
        import numpy as np

        with self._lock:
            c = self.conn()
            with c.transaction():
                c.execute(
                    f"DELETE FROM {self.p}_chunks WHERE tenant = %s AND collection = %s AND source = %s",
                    (tenant, collection, source),
                )
                with c.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {self.p}_chunks (tenant, collection, source, chunk_id, title, section, text, "
                        "start_offset, end_offset, chunk_hash, tokens, embedding) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::vector)",
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
                                _vec(np.frombuffer(r.vector, dtype=np.float32)) if r.vector else None,
                            )
                            for r in chunks
                        ],
                    )
                c.execute(
                    f"INSERT INTO {self.p}_documents (tenant, collection, source, doc_id, title, content_hash, "
                    "ingested_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, collection, source) "
                    "DO UPDATE SET doc_id = EXCLUDED.doc_id, title = EXCLUDED.title, "
                    "content_hash = EXCLUDED.content_hash, ingested_at = EXCLUDED.ingested_at",
                    (tenant, collection, source, doc_id, title, content_hash, time.time()),
                )

    def remove_document(self, tenant: str, collection: str, source: str) -> None:
        with self._lock:
            c = self.conn()
            with c.transaction():
                for table in ("chunks", "documents"):
                    c.execute(
                        f"DELETE FROM {self.p}_{table} WHERE tenant = %s AND collection = %s AND source = %s",
                        (tenant, collection, source),
                    )

    def sources(self, tenant: str, collection: str) -> list[str]:
        return [
            r[0]
            for r in self._rows(
                f"SELECT source FROM {self.p}_documents WHERE tenant = %s AND collection = %s", (tenant, collection)
            )
        ]

    # ------------------------------------------------------------------ Retriever

    def collections(self, tenant: str) -> list[str]:
        return [
            r[0]
            for r in self._rows(
                f"SELECT DISTINCT collection FROM {self.p}_documents WHERE tenant = %s ORDER BY 1", (tenant,)
            )
        ]

    def fetch(self, tenant: str, collection: str, chunk_ids: list[str]) -> list[ContextChunk]:
        if not chunk_ids:
            return []
        rows = self._rows(
            f"SELECT chunk_id, source, title, text, section FROM {self.p}_chunks "
            "WHERE tenant = %s AND collection = %s AND chunk_id = ANY(%s)",
            (tenant, collection, list(chunk_ids)),
        )
        by_id = {r[0]: ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], section=r[4]) for r in rows}
        return [by_id[i] for i in chunk_ids if i in by_id]

    def keyword_search(self, tenant: str, collection: str, query: str, k: int) -> list[ContextChunk]:
        # any-term match (OR), ranked by cover density; plainto_tsquery stems and drops stop words
        rows = self._rows(
            f"WITH q AS (SELECT NULLIF(replace(plainto_tsquery('english', %s)::text, '&', '|'), '')::tsquery AS q) "
            f"SELECT chunk_id, source, title, text, section, ts_rank_cd(tsv, q.q) AS score "
            f"FROM {self.p}_chunks, q WHERE tenant = %s AND collection = %s AND tsv @@ q.q "
            "ORDER BY score DESC, chunk_id LIMIT %s",
            (query, tenant, collection, k),
        )
        return [
            ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], section=r[4], score=float(r[5])) for r in rows
        ]

    def vector_search(self, tenant: str, collection: str, query: str, k: int) -> list[ContextChunk]:
        assert self.embedder is not None
        q = _vec(self.embedder.embed([query])[0])
        rows = self._rows(
            f"SELECT chunk_id, source, title, text, section, 1 - (embedding <=> %s::vector) AS score "
            f"FROM {self.p}_chunks WHERE tenant = %s AND collection = %s AND embedding IS NOT NULL "
            "ORDER BY embedding <=> %s::vector, chunk_id LIMIT %s",
            (q, tenant, collection, q, k),
        )
        return [
            ContextChunk(id=r[0], source=r[1], title=r[2], text=r[3], section=r[4], score=float(r[5])) for r in rows
        ]

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        if not query.strip():
            return []
        return search_by_mode(
            self.mode,
            lambda n: self.keyword_search(tenant, collection, query, n),
            (lambda n: self.vector_search(tenant, collection, query, n)) if self.embedder is not None else None,
            k,
            self.rrf_k,
        )
