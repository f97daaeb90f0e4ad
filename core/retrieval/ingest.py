"""Ingestion: read files, chunk along structure (headings, paragraphs, code blocks), upsert by hash.

Unchanged files are skipped, changed files have their chunks replaced atomically, and files gone
from the folder are removed when `prune=True`.
"""

from __future__ import annotations

import hashlib
import html.parser
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.retrieval.index import KeywordIndex
from core.text import estimate_tokens

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".html", ".htm"}
CODE_SUFFIXES = {".py", ".js", ".ts", ".go", ".rs", ".java", ".c", ".h", ".cpp", ".rb", ".sh", ".sql", ".yaml", ".yml", ".toml"}
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass
class IngestStats:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    skipped: list[str] = field(default_factory=list)


class _HtmlText(html.parser.HTMLParser):
    BLOCK = {"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "br", "section", "article"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False
        self._heading: int | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[override]
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = int(tag[1])
            self.parts.append("\n\n" + "#" * self._heading + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = None
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        self.parts.append(data if self._heading is None else " ".join(data.split()))


def read_document(path: Path) -> tuple[str, str | None]:
    """Return (text, title). HTML is reduced to text with headings kept as Markdown headings."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        p = _HtmlText()
        p.feed(raw)
        text = re.sub(r"\n{3,}", "\n\n", "".join(p.parts)).strip()
        return text, p.title
    title = None
    for line in raw.splitlines():
        m = HEADING.match(line)
        if m:
            title = m.group(2).strip()
            break
    return raw, title


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


def chunk_text(
    text: str, *, max_tokens: int, overlap_tokens: int, is_code: bool = False,
    count: Callable[[str], int] = estimate_tokens,
) -> list[tuple[str | None, str, int, int]]:
    """Greedy packing of structural blocks into chunks of at most ~max_tokens, with tail overlap."""
    chunks: list[tuple[str | None, str, int, int]] = []
    cur: list[str] = []
    cur_start = 0
    cur_section: str | None = None
    cur_tokens = 0

    def flush() -> None:
        nonlocal cur, cur_tokens
        body = "\n\n".join(b.strip("\n") for b in cur).strip()
        if body:
            chunks.append((cur_section, body, cur_start, cur_start + len(body)))
        tail = body.split()
        keep: list[str] = []
        while tail and count(" ".join(keep)) < overlap_tokens:
            keep.insert(0, tail.pop())
        cur = [" ".join(keep)] if keep and overlap_tokens else []
        cur_tokens = count(cur[0]) if cur else 0

    for section, block, start in _blocks(text, is_code):
        pieces = [block]
        if count(block) > max_tokens:  # split an oversized block on sentence or line boundaries
            pieces, acc = [], ""
            for unit in re.split(r"(?<=[.!?\n])\s+", block):
                if acc and count(acc + " " + unit) > max_tokens:
                    pieces.append(acc)
                    acc = unit
                else:
                    acc = (acc + " " + unit).strip()
            if acc:
                pieces.append(acc)
        for piece in pieces:
            t = count(piece)
            if cur and (cur_tokens + t > max_tokens or section != cur_section):
                flush()
                if section != cur_section:
                    cur, cur_tokens = [], 0
            if not cur or not "".join(cur).strip():
                cur_start, cur_section = start, section
            cur.append(piece)
            cur_tokens += t
    if cur:
        flush()
    return chunks


def doc_id_for(source: str) -> str:
    """A stable, readable document id from its relative path: 'guides/retry.md' → 'guides-retry-md'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-").lower() or "doc"


def iter_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | CODE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def ingest_path(
    index: KeywordIndex,
    root: Path,
    *,
    tenant: str,
    collection: str,
    chunk_tokens: int = 200,
    overlap_tokens: int = 30,
    prune: bool = False,
    progress: bool = False,
) -> IngestStats:
    root = root.resolve()
    if not root.exists():
        from core.errors import InputError

        raise InputError(f"ingest path {root} does not exist; pass a file or folder of documents", field="path")
    files = iter_files(root)
    stats = IngestStats()
    seen: set[str] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc=f"ingest {collection}")
    base = root.parent if root.is_file() else root
    for path in files:
        source = path.relative_to(base).as_posix()
        seen.add(source)
        try:
            data = path.read_bytes()
        except OSError as e:
            stats.skipped.append(f"{source}: {e.strerror}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        previous = index.document_hash(tenant, collection, source)
        if previous == digest:
            stats.unchanged += 1
        else:
            text, title = read_document(path)
            is_code = path.suffix.lower() in CODE_SUFFIXES
            doc_id = doc_id_for(source)
            pieces = chunk_text(text, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens, is_code=is_code)
            rows = [(f"{doc_id}#{i}", sec, body, s, e) for i, (sec, body, s, e) in enumerate(pieces)]
            index.replace_document(tenant, collection, source, doc_id, title or path.stem, digest, rows)
            stats.chunks += len(rows)
            if previous is None:
                stats.added += 1
            else:
                stats.updated += 1
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    if prune and root.is_dir():
        for source in index.sources(tenant, collection):
            if source not in seen:
                index.remove_document(tenant, collection, source)
                stats.removed += 1
    return stats
