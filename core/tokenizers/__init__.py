"""Token counting offline: a real BPE loaded from an encoding file shipped in this package.

tiktoken would otherwise download its encoding files on first use, which a Lambda, a Cloud Function
or an air-gapped host can't do. `cl100k_base.tiktoken` is OpenAI's published encoding (MIT, as
tiktoken), byte-identical to the upstream file: its SHA-256 is checked at load.

Models whose tokenizer isn't public (Claude's) are counted with this BPE plus the model's
`token_margin`; `estimate` (~4 characters a token) exists for tests of the estimate itself.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Protocol

ENCODINGS = {
    "cl100k_base": (
        "cl100k_base.tiktoken",
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
        data = (Path(__file__).parent / filename).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"{filename} is corrupt (SHA-256 mismatch); reinstall altostratus")
        ranks = {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in data.splitlines() if ln)}
        self.name = name
        self.encoding = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)

    def count(self, text: str) -> int:
        # special-token strings inside user text are counted as ordinary text, never as control tokens
        return len(self.encoding.encode(text, disallowed_special=()))


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
