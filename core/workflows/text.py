"""A workflow's text work, pure: rendering step prompts, splitting a document along its structure,
grouping outputs for one combining call. No I/O, so every rule here is tested on its own."""

from __future__ import annotations

import math
from collections.abc import Callable

from core.config.workflows import PLACEHOLDER
from core.retrieval.ingest import chunk_text

SEPARATOR = "\n\n---\n\n"


def render(prompt: str, values: dict[str, str]) -> str:
    """`{{ name }}` replaced by its value, in one pass: text put in is never read as a placeholder."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), prompt)


def split_document(text: str, chunk_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Chunks of at most `chunk_tokens`, cut at headings, pages and paragraphs (the same structural blocks
    `alto ingest` uses), with neighbouring small sections packed together so a part is as full as it may be."""
    parts: list[str] = []
    acc, acc_tokens = "", 0
    for section, body, _start, _end in chunk_text(text, max_tokens=chunk_tokens, overlap_tokens=0, count=count):
        piece = f"{section}\n\n{body}" if section and not body.lstrip().startswith("#") else body
        tokens = count(piece)
        if acc and acc_tokens + tokens + 2 > chunk_tokens:
            parts.append(acc)
            acc, acc_tokens = "", 0
        acc = f"{acc}\n\n{piece}" if acc else piece
        acc_tokens += tokens + (2 if acc_tokens else 0)
    if acc:
        parts.append(acc)
    return parts


def group_inputs(texts: list[str], *, max_inputs: int, fit_tokens: int, count: Callable[[str], int]) -> list[list[int]]:
    """Indices of `texts` in consecutive groups, as even as `max_inputs` allows (10 by 3 is 3+3+2+2, never
    3+3+3+1: a one-input call combines nothing), each closed early if its joined text would pass `fit_tokens`.
    A group always takes at least two inputs, so every level shrinks the count; a pair that can't fit fails
    its call with the model's own overflow error rather than looping."""
    groups: list[list[int]] = []
    i, n = 0, len(texts)
    while i < n:
        left = n - i
        size = math.ceil(left / math.ceil(left / max_inputs))
        group, tokens = [i], count(texts[i]) + count(SEPARATOR)
        i += 1
        while i < n and len(group) < size:
            t = count(texts[i]) + count(SEPARATOR)
            if tokens + t > fit_tokens and len(group) >= 2:
                break
            group.append(i)
            tokens += t
            i += 1
        groups.append(group)
    return groups
