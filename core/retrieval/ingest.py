"""Ingestion: read documents, chunk along structure, count tokens with the real BPE, embed, upsert by hash.

Documents come from a folder or from the blob store (`blob:PREFIX`, which is S3 / GCS / Blob Storage
when an adapter supplies the port). Markdown, text, reStructuredText, HTML, PDF and source code are
read; chunks follow headings, paragraphs and fenced code blocks and are packed to `chunk_tokens`
(counted with cl100k_base) with a tail overlap. Unchanged documents are skipped by content hash,
changed ones have their chunks replaced atomically, and `prune=True` removes documents that are gone.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.chunks import ChunkRow
from core.errors import InputError
from core.ports import BlobStore, DocumentIndex
from core.retrieval.documents import CODE_SUFFIXES, HEADING, SUFFIXES, read_text
from core.tokenizers import counter


@dataclass
class IngestStats:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    tokens: int = 0
    skipped: list[str] = field(default_factory=list)  # files passed over (not a document type), each with why
    failed: list[str] = field(default_factory=list)  # documents that could not be read, each with its reason
    notes: list[str] = field(default_factory=list)  # ingested, with something worth knowing


@dataclass
class Document:
    """One document to ingest; `load` reads its bytes only when needed."""

    source: str  # relative path, or `blob:KEY`
    suffix: str
    load: Callable[[], bytes]


def _blocks(text: str, is_code: bool) -> Iterable[tuple[str | None, str, int]]:
    """Yield (section, block, offset): paragraphs and fenced code blocks, tracking the current heading."""
    section: str | None = None
    offset = 0
    if is_code:
        for part in re.split(r"\n\s*\n", text):
            start = text.find(part, offset)
            offset = start + len(part)
            if part.strip():
                yield None, part, start
        return
    lines = text.splitlines(keepends=True)
    buf: list[str] = []
    buf_start = 0
    pos = 0
    in_fence = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        m = HEADING.match(stripped) if not in_fence else None
        if m or (not in_fence and not stripped):
            if buf and "".join(buf).strip():
                yield section, "".join(buf), buf_start
            buf = []
            if m:
                section = m.group(2).strip()
                buf = [line]
                buf_start = pos
            else:
                buf_start = pos + len(line)
        else:
            if not buf:
                buf_start = pos
            buf.append(line)
        pos += len(line)
    if buf and "".join(buf).strip():
        yield section, "".join(buf), buf_start


def _split_oversized(block: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Split on sentence/line boundaries; a single run-on 'sentence' is cut by words as a last resort."""
    pieces: list[str] = []
    acc = ""
    units: list[str] = []
    for unit in re.split(r"(?<=[.!?\n])\s+", block):
        if count(unit) <= max_tokens:
            units.append(unit)
            continue
        words_, cur = unit.split(), list[str]()
        for w in words_:
            if cur and count(" ".join([*cur, w])) > max_tokens:
                units.append(" ".join(cur))
                cur = []
            cur.append(w)
        if cur:
            units.append(" ".join(cur))
    for unit in units:
        if acc and count(acc + " " + unit) > max_tokens:
            pieces.append(acc)
            acc = unit
        else:
            acc = (acc + " " + unit).strip()
    if acc:
        pieces.append(acc)
    return pieces


def chunk_text(
    text: str, *, max_tokens: int, overlap_tokens: int, is_code: bool = False, count: Callable[[str], int] | None = None
) -> list[tuple[str | None, str, int, int]]:
    """Greedy packing of structural blocks into chunks of at most `max_tokens`, with tail overlap.

    Returns (section, text, start offset, end offset) with offsets into `text`. A chunk never spans
    two sections, so its section (heading, or PDF page) is exact.
    """
    count = count or counter().count
    chunks: list[tuple[str | None, str, int, int]] = []
    cur: list[str] = []
    cur_start: int | None = None
    cur_end = 0
    cur_section: str | None = None
    cur_tokens = 0

    def flush(keep_overlap: bool) -> None:
        nonlocal cur, cur_tokens, cur_start
        body = "\n\n".join(b.strip("\n") for b in cur).strip()
        if body and cur_start is not None:
            chunks.append((cur_section, body, cur_start, max(cur_end, cur_start)))
        keep: list[str] = []
        if keep_overlap and overlap_tokens:
            tail = body.split()
            while tail and count(" ".join(keep)) < overlap_tokens:
                keep.insert(0, tail.pop())
        cur = [" ".join(keep)] if keep else []
        cur_tokens = count(cur[0]) if cur else 0
        cur_start = None  # offsets cover a chunk's own text; its leading overlap repeats the previous one

    for section, block, start in _blocks(text, is_code):
        pieces = [block] if count(block) <= max_tokens else _split_oversized(block, max_tokens - overlap_tokens, count)
        for piece in pieces:
            at = block.find(piece[:40]) if len(pieces) > 1 else 0
            p_start = start + max(0, at)
            t = count(piece)
            if cur and (section != cur_section or cur_tokens + t > max_tokens):
                flush(keep_overlap=section == cur_section)
            if cur_start is None:
                cur_start, cur_section = p_start, section
            cur.append(piece)
            cur_tokens += t
            cur_end = p_start + len(piece) if len(pieces) > 1 else start + len(block)
    if cur:
        flush(keep_overlap=False)
    return chunks


def doc_id_for(source: str) -> str:
    """A stable, readable document id from its path: 'guides/retry.md' → 'guides-retry-md'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", source.removeprefix("blob:")).strip("-").lower() or "doc"


def folder_documents(root: Path) -> tuple[list[Document], bool, list[str]]:
    """Documents under `root` (or the single file), hidden paths left out. Returns (documents, is_folder,
    files passed over with the reason). A folder with no document at all is an error, not a silent no-op."""
    root = root.resolve()
    if not root.exists():
        raise InputError(f"ingest path {root} does not exist; pass a file or folder of documents", field="path")
    supported = ", ".join(sorted(SUFFIXES))
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise InputError(
                f"{root.name}: {root.suffix or 'no extension'} is not a document type ingest reads ({supported})",
                field="path",
            )
        return [Document(root.name, root.suffix, root.read_bytes)], False, []
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    docs = [p for p in files if p.suffix.lower() in SUFFIXES]
    passed = [
        f"{p.relative_to(root).as_posix()}: {p.suffix or 'no extension'} is not a document type ingest reads"
        for p in files
        if p.suffix.lower() not in SUFFIXES
    ]
    if not docs:
        raise InputError(
            f"no documents under {root} ({len(files)} other files); ingest reads {supported}", field="path"
        )
    return [Document(p.relative_to(root).as_posix(), p.suffix, p.read_bytes) for p in docs], True, passed


def blob_documents(blobs: BlobStore, prefix: str) -> list[Document]:
    """Documents in the blob store under `prefix` (S3 / GCS / Blob Storage through the adapters)."""
    keys = [k for k in sorted(blobs.list(prefix)) if PurePosixPath(k).suffix.lower() in SUFFIXES]
    return [Document(f"blob:{k}", PurePosixPath(k).suffix, functools.partial(blobs.get, k)) for k in keys]


def ingest_documents(
    index: DocumentIndex,
    documents: list[Document],
    *,
    tenant: str,
    collection: str,
    chunk_tokens: int = 200,
    overlap_tokens: int = 30,
    prune: bool = False,
    progress: bool = False,
    embedder: object | None = None,
) -> IngestStats:
    """Upsert `documents` into `collection`; with `prune`, remove the collection's other documents.

    A document that can't be read is skipped and reported, never half-written; its previous chunks stay.
    """
    stats = IngestStats()
    slugs = Counter(doc_id_for(doc.source) for doc in documents)
    bar = _progress_bar(len(documents), collection) if progress else None
    for doc in documents:
        try:
            data = doc.load()
        except (OSError, KeyError) as e:
            stats.failed.append(f"{doc.source}: {getattr(e, 'strerror', None) or e}")
            continue
        finally:
            if bar:
                bar.update(1)
        digest = hashlib.sha256(data).hexdigest()
        previous = index.document_hash(tenant, collection, doc.source)
        if previous == digest:
            stats.unchanged += 1
            continue
        read = read_text(doc.source, doc.suffix, data)
        stats.notes += read.notes
        if read.skipped:
            stats.failed.append(read.skipped)
            continue
        text, title = read.text, read.title
        doc_id = doc_id_for(doc.source)
        if slugs[doc_id] > 1:  # 'a-b.md' and 'a_b.md' would share an id: tell them apart, stably
            doc_id += "-" + hashlib.sha256(doc.source.encode()).hexdigest()[:6]
        title = title or PurePosixPath(doc.source).stem
        rows = _rows(doc, text, title, doc_id, chunk_tokens, overlap_tokens, embedder)
        index.replace_document(tenant, collection, doc.source, doc_id, title, digest, rows)
        stats.chunks += len(rows)
        stats.tokens += sum(r.tokens for r in rows)
        if previous is None:
            stats.added += 1
        else:
            stats.updated += 1
    if bar:
        bar.close()
    if prune:
        stats.removed = _prune(index, tenant, collection, {d.source for d in documents})
    return stats


def _progress_bar(total: int, collection: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc=f"ingest {collection}")


def _prune(index: DocumentIndex, tenant: str, collection: str, present: set[str]) -> int:
    """Remove the collection's documents that are not in `present`; how many were removed."""
    gone = [source for source in index.sources(tenant, collection) if source not in present]
    for source in gone:
        index.remove_document(tenant, collection, source)
    return len(gone)


def _rows(
    doc: Document, text: str, title: str, doc_id: str, chunk_tokens: int, overlap_tokens: int, embedder: object | None
) -> list[ChunkRow]:
    """One document's chunks as index rows, with their vectors when an embedder is configured."""
    count = counter().count
    pieces = chunk_text(
        text,
        max_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        is_code=doc.suffix.lower() in CODE_SUFFIXES,
        count=count,
    )
    rows = [
        ChunkRow(
            chunk_id=f"{doc_id}#{i}",
            section=sec,
            text=body,
            start=s,
            end=e,
            tokens=count(body),
            chunk_hash=hashlib.sha256(body.encode()).hexdigest()[:16],
        )
        for i, (sec, body, s, e) in enumerate(pieces)
    ]
    if embedder is not None and rows:
        vecs = embedder.embed([_embedding_text(title, r) for r in rows])  # type: ignore[attr-defined]
        for r, v in zip(rows, vecs, strict=True):
            r.vector = v.tobytes()
    return rows


def _embedding_text(title: str, row: ChunkRow) -> str:
    """Title and section help the vector of a chunk that never names its subject."""
    head = " / ".join(x for x in (title, row.section) if x)
    return f"{head}\n{row.text}" if head else row.text
