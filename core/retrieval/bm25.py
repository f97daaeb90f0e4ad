"""The fast keyword engine: bm25s (eager BM25 in NumPy) over a collection of the embedded index.

Measured side by side on 100k chunks (`benchmarks/retrieval.py`), FTS5 ranks every match of every
query term at query time (p50 ~20 ms, common-word queries 40+ ms), while bm25s scores at index time
and answers by summing the postings of the query's terms (p50 < 1 ms, common words included). FTS5
stays the index of record (incremental, transactional, in the same file); the bm25s index is
derived from it once per collection generation, stored in the index file next to the chunks (so a
published snapshot carries it and a cold start loads it in milliseconds), and rebuilt after ingest in
a background thread while the previous generation's model keeps answering.

Tokens: lowercase words of 2+ characters, English stop words removed, Snowball English stemming.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from core.chunks import ContextChunk
from core.logs import log_event

TOKEN = re.compile(r"(?u)\b\w\w+\b")


def available() -> bool:
    """Installed? Checked without importing: NumPy must not load on the submit path."""
    from importlib.util import find_spec

    return find_spec("bm25s") is not None and find_spec("Stemmer") is not None


class ChunkTexts(Protocol):
    """What the engine reads from the embedded index (`core.retrieval.index.KeywordIndex`), which in
    turn builds this engine when it exports a snapshot: a protocol, so neither module imports the other."""

    read_only: bool

    def generation(self, tenant: str, collection: str) -> int: ...

    def texts(self, tenant: str, collection: str) -> tuple[list[str], list[str]]: ...

    def fetch(self, tenant: str, collection: str, chunk_ids: Iterable[str]) -> list[ContextChunk]: ...

    def keyword_blob(self, tenant: str, collection: str, generation: int) -> bytes | None: ...

    def put_keyword_blob(self, tenant: str, collection: str, generation: int, data: bytes) -> None: ...


class _Model:
    def __init__(self, bm25: Any, chunk_ids: list[str]) -> None:
        self.bm25 = bm25
        self.chunk_ids = chunk_ids


class Bm25Engine:
    """Keyword search with bm25s; one model per (tenant, collection) and index generation."""

    def __init__(self, index: ChunkTexts) -> None:
        self.index = index
        self._models: dict[tuple[str, str], tuple[int, _Model]] = {}
        self._lock = threading.Lock()
        self._building: dict[tuple[str, str], int] = {}  # generation being brought up in the background
        self._loaded: tuple[Any, Any, set[str]] | None = None

    def _libs(self) -> tuple[Any, Any, set[str]]:
        """bm25s, the stemmer and the stop words, imported on first search (NumPy comes with them)."""
        if self._loaded is None:
            import bm25s
            import Stemmer
            from bm25s.stopwords import STOPWORDS_EN

            self._loaded = (bm25s, Stemmer.Stemmer("english"), set(STOPWORDS_EN))
        return self._loaded

    @property
    def _bm25s(self) -> Any:
        return self._libs()[0]

    @property
    def stemmer(self) -> Any:
        return self._libs()[1]

    @property
    def stopwords(self) -> set[str]:
        return self._libs()[2]

    def _tokens(self, text: str) -> list[str]:
        return self.stemmer.stemWords([w for w in TOKEN.findall(text.lower()) if w not in self.stopwords])

    def build(self, tenant: str, collection: str) -> tuple[_Model, bytes]:
        ids, texts = self.index.texts(tenant, collection)
        model = self._bm25s.BM25()
        if texts:
            tokens = self._bm25s.tokenize(
                texts, stopwords=list(self.stopwords), stemmer=self.stemmer, show_progress=False
            )
            model.index(tokens, show_progress=False)
        return _Model(model, ids), self._pack(model, ids)

    def _pack(self, model: Any, ids: list[str]) -> bytes:
        import json

        buf = io.BytesIO()
        with tempfile.TemporaryDirectory(prefix="alto-bm25-") as tmp:
            if ids:
                model.save(tmp, show_progress=False)
            Path(tmp, "chunk_ids.json").write_text(json.dumps(ids))
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(tmp, arcname=".")
        return buf.getvalue()

    def _unpack(self, data: bytes) -> _Model:
        import json

        with tempfile.TemporaryDirectory(prefix="alto-bm25-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(tmp, filter="data")
            ids = json.loads(Path(tmp, "chunk_ids.json").read_text())
            model = self._bm25s.BM25.load(tmp, mmap=False) if ids else self._bm25s.BM25()
        return _Model(model, ids)

    def model(self, tenant: str, collection: str) -> _Model:
        """The collection's model. After an update (a new generation) the previous model keeps serving
        while the new one is loaded or built in a background thread, so no query waits on a rebuild
        (7 s at 100k chunks); only a process's very first query of a collection waits for its model."""
        key = (tenant, collection)
        gen = self.index.generation(tenant, collection)
        hit = self._models.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        if hit is not None:
            self._refresh(key, gen)
            return hit[1]
        with self._lock:
            hit = self._models.get(key)
            if hit is not None:
                return hit[1]
            model = self._load_or_build(tenant, collection, gen)
            self._models[key] = (gen, model)
            return model

    def _load_or_build(self, tenant: str, collection: str, gen: int) -> _Model:
        stored = self.index.keyword_blob(tenant, collection, gen)
        if stored is not None:
            return self._unpack(stored)
        model, packed = self.build(tenant, collection)
        if not self.index.read_only:
            self.index.put_keyword_blob(tenant, collection, gen, packed)
        return model

    def _refresh(self, key: tuple[str, str], gen: int) -> None:
        with self._lock:
            if self._building.get(key, -1) >= gen:
                return
            self._building[key] = gen
        threading.Thread(target=self._rebuild, args=(key, gen), name="alto-bm25-rebuild", daemon=True).start()

    def _rebuild(self, key: tuple[str, str], gen: int) -> None:
        try:
            model = self._load_or_build(key[0], key[1], gen)
            with self._lock:
                current = self._models.get(key)
                if current is None or current[0] < gen:
                    self._models[key] = (gen, model)
        except Exception as e:  # the previous model keeps serving; the next query tries again
            log_event("bm25.rebuild_failed", logging.ERROR, collection=key[1], error=repr(e)[:500])
        finally:
            with self._lock:
                if self._building.get(key) == gen:
                    del self._building[key]

    def wait_current(self, tenant: str, collection: str, timeout_s: float = 60.0) -> bool:
        """Until the model of the collection's current generation serves (tests, benchmarks, warm-up)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = self._models.get((tenant, collection))
            if hit is not None and hit[0] == self.index.generation(tenant, collection):
                return True
            self.model(tenant, collection)
            time.sleep(0.01)
        return False

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        import numpy as np

        m = self.model(tenant, collection)
        if not m.chunk_ids:
            return []
        vocab = m.bm25.vocab_dict
        ids = sorted({vocab[t] for t in self._tokens(query) if t in vocab})
        if not ids:
            return []
        scores = m.bm25.get_scores(ids)
        # select among the query terms' postings, not the whole collection (a scan of 100k scores
        # costs more than everything else): a chunk appears once per matching term, so the best
        # k × terms postings hold the best k chunks
        csc = m.bm25.scores
        indptr, indices = csc["indptr"], csc["indices"]
        cand = np.concatenate([indices[indptr[i] : indptr[i + 1]] for i in ids])
        need = k * len(ids)
        if len(cand) > need:
            cand = cand[np.argpartition(scores[cand], len(cand) - need)[len(cand) - need :]]
        cand = np.unique(cand)
        top = [int(i) for i in cand[np.argsort(-scores[cand], kind="stable")][:k] if scores[i] > 0]
        found = {c.id: c for c in self.index.fetch(tenant, collection, [m.chunk_ids[i] for i in top])}
        return [
            ContextChunk(
                id=c.id, source=c.source, title=c.title, text=c.text, section=c.section, score=float(scores[i])
            )
            for i in top
            if (c := found.get(m.chunk_ids[i]))
        ]
