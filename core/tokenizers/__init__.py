"""Token counting offline: a real BPE loaded from an encoding file shipped in this package.

tiktoken would otherwise download its encoding files on first use, which a Lambda, a Cloud Function
or an air-gapped host can't do. `cl100k_base.bpe.xz` is OpenAI's published cl100k_base encoding (MIT,
as tiktoken) stored compactly: the tokens in rank order, each as a length byte and its bytes, xz
compressed (389 KB instead of 1.7 MB, which matters inside a 10 MB Lambda zip). At load the upstream
`.tiktoken` text is rebuilt in memory and its SHA-256 checked against the published hash, so the
file is provably the upstream encoding.

Models whose tokenizer isn't public (Claude's) are counted with this BPE plus the model's
`token_margin`; `estimate` (~4 characters a token) exists for tests of the estimate itself.
"""

from __future__ import annotations

import base64
import hashlib
import lzma
from functools import lru_cache
from pathlib import Path
from typing import Protocol

ENCODINGS = {
    "cl100k_base": (
        "cl100k_base.bpe.xz",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
         "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    ),
}
TOKENIZERS = ("cl100k_base", "estimate")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class BpeCounter:
    """tiktoken's BPE, built from the shipped file by path (no download, no cache directory)."""

    def __init__(self, name: str) -> None:
        import tiktoken

        filename, sha256, pattern, special = ENCODINGS[name]
        ranks = load_ranks(Path(__file__).parent / filename, sha256)
        self.name = name
        self.encoding = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)

    def count(self, text: str) -> int:
        # special-token strings inside user text are counted as ordinary text, never as control tokens
        return len(self.encoding.encode(text, disallowed_special=()))


def load_ranks(path: Path, sha256: str) -> dict[bytes, int]:
    """Token → rank from the compact file, verified against the upstream `.tiktoken` file's hash."""
    raw = lzma.decompress(path.read_bytes())
    tokens: list[bytes] = []
    i = 0
    while i < len(raw):
        n = raw[i]
        tokens.append(raw[i + 1:i + 1 + n])
        i += 1 + n
    upstream = b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for r, t in enumerate(tokens))
    if hashlib.sha256(upstream).hexdigest() != sha256:
        raise RuntimeError(f"{path.name} is corrupt (not the published encoding); reinstall altostratus")
    return {t: r for r, t in enumerate(tokens)}


class EstimateCounter:
    name = "estimate"

    def count(self, text: str) -> int:
        return max(1, (len(text) + 3) // 4) if text else 0


@lru_cache(maxsize=None)
def counter(name: str = "cl100k_base") -> TokenCounter:
    """One counter per process and encoding (loading the BPE takes ~0.1 s)."""
    if name == "estimate":
        return EstimateCounter()
    if name not in ENCODINGS:
        raise ValueError(f"unknown tokenizer '{name}'; use one of {', '.join(TOKENIZERS)}")
    return BpeCounter(name)
