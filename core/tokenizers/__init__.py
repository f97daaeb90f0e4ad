"""Token counting offline: a real BPE loaded from an encoding file shipped in this package.

tiktoken would otherwise download its encoding files on first use, which a Lambda, a Cloud Function
or an air-gapped host can't do. `cl100k_base.tokens.zlib` is OpenAI's published cl100k_base encoding
(MIT, as tiktoken): the token count, every token's length (one byte each), then the tokens' bytes in
rank order, zlib-compressed (419 KB; xz would save 53 KB and cost 15 ms more at every load). Loading
it is one decompress and slices at offsets summed in C (with the ranks dict, 35-59 ms here), not a
parse of 100,000 lines. Its SHA-256 is checked before it is read, and a test rebuilds the upstream
`.tiktoken` text from it and checks the published hash.

Counting starts on an exact pure-Python BPE (`core.tokenizers.bpe`: the same pre-split pattern and
merges, so the same tokens), which costs nothing to build; tiktoken's Rust core (~90 ms to build,
then ~3x faster) takes over once a process has counted enough text for it to pay off, where tiktoken
is installed. The Lambda bundle leaves tiktoken out (1 MB) and counts in Python throughout. Models
whose tokenizer isn't public (Claude's) are counted with this BPE plus the model's `token_margin`;
`estimate` (~4 characters a token) exists for tests of the estimate itself.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from functools import cache
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, Protocol

from core.tokenizers.bpe import PyBpe

ENCODINGS = {
    "cl100k_base": (
        "cl100k_base.tokens.zlib",
        "361486d95ef56257109fcf28e783a73e6bc9943c2a44296fb6cea1b386e2739a",  # of the shipped file
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    )
}
UPSTREAM_SHA256 = {"cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"}
TOKENIZERS = ("cl100k_base", "estimate")
RUST_AFTER_CHARS = 200_000  # counted in Python before the Rust core is built (~90 ms, then ~3x faster)
CACHED_CHARS = 2_000  # texts up to this long are remembered (system prompts and templates repeat)
CACHE_SIZE = 4096


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class BpeCounter:
    """The encoding's exact counts: pure Python first, tiktoken's Rust core once the volume warrants it."""

    def __init__(self, name: str) -> None:
        filename, sha256, pattern, special = ENCODINGS[name]
        self.name = name
        self.tokens = load_tokens(Path(__file__).parent / filename, sha256)
        self.ranks = dict(zip(self.tokens, range(len(self.tokens)), strict=True))
        self._pattern, self._special = pattern, special
        self._py = PyBpe(self.ranks, pattern)
        self._rust: Any = None
        self._can_rust = _has_tiktoken()  # checked without importing it
        self._python_chars = 0
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        # special-token strings inside user text are counted as ordinary text, never as control tokens
        if len(text) <= CACHED_CHARS:
            hit = self._cache.get(text)
            if hit is not None:
                return hit
        n = self._count(text)
        if len(text) <= CACHED_CHARS:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[text] = n
        return n

    def _count(self, text: str) -> int:
        if self._rust is None and (self._python_chars < RUST_AFTER_CHARS or not self._can_rust):
            self._python_chars += len(text)
            return self._py.count(text)
        return len(self.rust().encode_ordinary(text))

    def truncate(self, text: str, tokens: int) -> str:
        """The text of the first `tokens` tokens (a reply cut at max_tokens, as a model would)."""
        ids = self._py.encode(text)[:tokens] if self._rust is None else self._rust.encode_ordinary(text)[:tokens]
        return b"".join(self.tokens[i] for i in ids).decode("utf-8", errors="replace")

    def warm(self) -> bool:
        """Build the Rust core now, where tiktoken is installed (a long-lived worker, before its first job):
        else the ~90 ms build lands on the event loop in the middle of traffic, once this process has
        counted enough text. Whether it was built."""
        if self._can_rust:
            self.rust()
        return self._rust is not None

    def rust(self) -> Any:
        """tiktoken's encoder on the same ranks (~90 ms to build), built on first need."""
        if self._rust is None:
            import tiktoken

            self._rust = tiktoken.Encoding(
                name=self.name, pat_str=self._pattern, mergeable_ranks=self.ranks, special_tokens=self._special
            )
        return self._rust


def _has_tiktoken() -> bool:
    from importlib.util import find_spec

    return find_spec("tiktoken") is not None


def load_tokens(path: Path, sha256: str) -> list[bytes]:
    """The encoding's tokens in rank order, from the shipped file after checking its hash."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"{path.name} is corrupt (not the shipped encoding); reinstall altostratus")
    raw = zlib.decompress(data)
    (n,) = struct.unpack_from("<I", raw)
    offsets = list(accumulate(raw[4 : 4 + n], initial=0))
    blob = raw[4 + n :]
    return [blob[a:b] for a, b in pairwise(offsets)]


def upstream_text(tokens: list[bytes]) -> bytes:
    """The upstream `.tiktoken` file these tokens came from (base64 token, space, rank, per line)."""
    import base64

    return b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for r, t in enumerate(tokens))


class EstimateCounter:
    name = "estimate"

    def count(self, text: str) -> int:
        return max(1, (len(text) + 3) // 4) if text else 0


def counter(name: str = "cl100k_base") -> TokenCounter:
    """One counter per process and encoding (loading the BPE's tokens takes tens of milliseconds)."""
    return _counter(name)  # the cache keys on the name, however it was passed (counter() is counter(NAME))


@cache
def _counter(name: str) -> TokenCounter:
    if name == "estimate":
        return EstimateCounter()
    if name not in ENCODINGS:
        raise ValueError(f"unknown tokenizer '{name}'; use one of {', '.join(TOKENIZERS)}")
    return BpeCounter(name)


def warm(names: set[str]) -> list[str]:
    """Load these encodings and build their Rust cores (see `BpeCounter.warm`); the names built."""
    return sorted(n for n in names if n in ENCODINGS and bpe(n).warm())


def bpe(name: str = "cl100k_base") -> BpeCounter:
    """The process's BPE counter itself, for what needs more than counts (the offline provider's cut)."""
    made = counter(name)
    assert isinstance(made, BpeCounter)
    return made
