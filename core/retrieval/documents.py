"""Reading documents: Markdown, text, reStructuredText, HTML, PDF and source code into text and a title.

HTML headings become Markdown headings and PDF pages become sections, so chunking sees the structure;
bytes that are not UTF-8 are reported, and a file that is mostly not text is refused with the reason.
"""

from __future__ import annotations

import html.parser
import io
import logging
import re
from typing import NamedTuple

from core.errors import InputError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".pdf"}
CODE_SUFFIXES = {
    ".py",
    ".js",
    ".ts",
    ".go",
    ".rs",
    ".java",
    ".c",
    ".h",
    ".cpp",
    ".rb",
    ".sh",
    ".sql",
    ".yaml",
    ".yml",
    ".toml",
}
SUFFIXES = TEXT_SUFFIXES | CODE_SUFFIXES
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


class _HtmlText(html.parser.HTMLParser):
    BLOCK = frozenset({"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "br", "section", "article"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False
        self._heading: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
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


def _pdf_text(data: bytes, source: str) -> tuple[str, str | None]:
    """Text per page as `# Page N` sections, so chunks (and citations) know their page."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings ("EOF marker not found") are ours to word
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == 0:
            raise InputError(f"{source}: the PDF is encrypted; decrypt it first (e.g. `qpdf --decrypt`)", field="path")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except PdfReadError as e:
        raise InputError(
            f"{source}: not a readable PDF ({e}); open it in a viewer and save or print it as a new PDF", field="path"
        ) from None
    if not any(pages):
        raise InputError(
            f"{source}: the PDF has no text layer (a scan?); run OCR first (e.g. `ocrmypdf`) and ingest the result",
            field="path",
        )
    body = "\n\n".join(f"# Page {n}\n\n{text}" for n, text in enumerate(pages, start=1) if text)
    return body, (str(meta_title).strip() or None) if meta_title else None


def read_document(source: str, suffix: str, data: bytes) -> tuple[str, str | None]:
    """Return (text, title). HTML headings become Markdown headings; PDF pages become sections."""
    suffix = suffix.lower()
    if suffix == ".pdf":
        return _pdf_text(data, source)
    raw = data.decode("utf-8", errors="replace")
    if suffix in (".html", ".htm"):
        p = _HtmlText()
        p.feed(raw)
        text = re.sub(r"\n{3,}", "\n\n", "".join(p.parts)).strip()
        return text, p.title
    if suffix == ".rst":  # underlined titles → Markdown headings so chunking sees the structure
        lines = raw.splitlines()
        out: list[str] = []
        for _i, line in enumerate(lines):
            if RST_UNDERLINE.match(line) and out and out[-1].strip() and not out[-1].startswith("#"):
                out[-1] = "## " + out[-1].strip()
                continue
            out.append(line)
        raw = "\n".join(out)
    title = None
    if suffix not in CODE_SUFFIXES:
        for line in raw.splitlines():
            m = HEADING.match(line)
            if m:
                title = m.group(2).strip()
                break
    return raw, title


class Read(NamedTuple):
    text: str = ""
    title: str | None = None
    skipped: str | None = None  # why the document was not read, if it wasn't
    notes: tuple[str, ...] = ()  # read, with something worth knowing


def read_text(source: str, suffix: str, data: bytes) -> Read:
    """A document's text and title, or why it can't be read; bytes that are not UTF-8 are said so."""
    notes: list[str] = []
    if suffix.lower() != ".pdf":
        bad = data.decode("utf-8", errors="replace").count("\ufffd") if not _is_utf8(data) else 0
        if bad > max(16, len(data) // 10):
            return Read(
                skipped=f"{source}: not UTF-8 text ({bad} of {len(data)} bytes undecodable); convert it to "
                "UTF-8 or leave it out"
            )
        if bad:
            notes.append(f"{source}: {bad} bytes are not UTF-8 and were replaced with U+FFFD")
    try:
        text, title = read_document(source, suffix, data)
    except InputError as e:
        return Read(skipped=str(e))
    return Read(text, title, None, tuple(notes))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
