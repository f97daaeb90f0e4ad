"""The shipped BPE: provably the upstream encoding, and the pure-Python counter equals tiktoken's."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from core.tokenizers import ENCODINGS, UPSTREAM_SHA256, BpeCounter, load_tokens, upstream_text

ROOT = Path(__file__).resolve().parent.parent
TOKENIZERS = ROOT / "core" / "tokenizers"

MIXED = [
    "Hello world's 12345  \n\n  résumé 你好!! x <|endoftext|> tab\t\tend   ",
    "I'LL say it: we'Ve, they'RE, don't... 3.14159 1,000,000 0x1F",
    "🙂🙂 emoji and ZWJ 👩‍👩‍👧 sequences, Ωmega, ﬁligature, Ünïcödé",
    "  \n  \r\n\t x\n\n\n    indented\r\n",
    "",
    " ",
    "a",
    "'S",
    "lone surrogate \ud800 in text",
    "def f(x):\n    return {'k': [1, 2, 3]}  # comment\n",
]


@pytest.fixture(scope="module")
def bpe() -> BpeCounter:
    return BpeCounter("cl100k_base")


def test_the_shipped_file_is_the_published_cl100k_base_encoding():
    filename, sha256, _, _ = ENCODINGS["cl100k_base"]
    tokens = load_tokens(TOKENIZERS / filename, sha256)
    assert len(tokens) == 100256
    assert hashlib.sha256(upstream_text(tokens)).hexdigest() == UPSTREAM_SHA256["cl100k_base"]


def test_a_corrupt_file_is_refused_with_what_to_do(tmp_path):
    filename, sha256, _, _ = ENCODINGS["cl100k_base"]
    bad = tmp_path / filename
    shutil.copy(TOKENIZERS / filename, bad)
    with bad.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(RuntimeError, match=r"corrupt.*reinstall altostratus"):
        load_tokens(bad, sha256)


def test_python_tokens_equal_tiktokens_on_mixed_text_and_this_repository(bpe):
    rust = bpe.rust()
    texts = MIXED + [p.read_text(errors="replace") for p in sorted((ROOT / "core").rglob("*.py"))[:60]]
    texts += [(ROOT / "README.md").read_text()]
    for text in texts:
        assert bpe._py.encode(text) == rust.encode_ordinary(text), text[:80]
        assert bpe._py.count(text) == len(rust.encode_ordinary(text))


def test_long_pieces_merge_in_n_log_n_with_the_same_tokens(bpe):
    import base64
    import random

    rng = random.Random(7)
    rust = bpe.rust()
    long = [
        "x" * 5000,
        base64.b64encode(rng.randbytes(6000)).decode(),
        "".join(rng.choice("!@#$%^&*<>") for _ in range(3000)),
        "ab" * 2000,
        "\u00e9" * 700 + "z" * 300,
        "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(900)),
    ]
    for text in long:
        assert bpe._py.encode(text) == rust.encode_ordinary(text), text[:40]


def test_truncation_is_the_same_with_or_without_the_rust_core():
    text = "Straße 42 — ünïcode 🙂 and a long tail of words to cut " * 20
    python_only = BpeCounter("cl100k_base")
    with_rust = BpeCounter("cl100k_base")
    with_rust.rust()
    for n in (1, 2, 7, 50, 10_000):
        assert python_only.truncate(text, n) == with_rust.truncate(text, n)
    assert python_only._rust is None


def test_the_rust_core_is_built_only_when_the_volume_pays_for_it():
    from core.tokenizers import RUST_AFTER_CHARS

    fresh = BpeCounter("cl100k_base")
    assert fresh.count("What is the refund window for annual plans?") == 9
    assert fresh._rust is None  # the first jobs never pay tiktoken's ~90 ms build
    text = "a paragraph of ordinary prose, counted again and again. " * 50
    for i in range(RUST_AFTER_CHARS // len(text) + 2):
        fresh.count(text + str(i))  # distinct texts: the count cache doesn't absorb them
    assert fresh._rust is not None


def test_repeated_texts_are_counted_once(bpe):
    system = "You answer support questions using only the context given. " * 10
    first = bpe.count(system)
    bpe._py.ranks = {}  # any recount would now come out different
    try:
        assert bpe.count(system) == first
    finally:
        bpe._py.ranks = bpe.ranks


def test_one_counter_per_encoding_however_it_is_named():
    """`counter()` and `counter("cl100k_base")` once made two BPEs (the tokens loaded twice, 38 MB each,
    and every question counted twice, once per cache)."""
    from core.tokenizers import bpe, counter

    assert counter() is counter("cl100k_base") is bpe() is bpe("cl100k_base")


WORKER_FIRST_JOB = """
import asyncio, sys
from core.bootstrap import bootstrap
from core.config.worker import Settings
from core.entrypoints.local import WorkerPool
from core.models import JobRequest
from core.tokenizers import bpe

app = bootstrap(Settings.model_validate({"data_dir": sys.argv[1], "logging": {"level": "ERROR"}}))
seen = []

async def main():
    stop = asyncio.Event()
    pool = WorkerPool(app, concurrency=2, on_outcome=lambda d, o: (seen.append(bpe()._rust is not None), stop.set()))
    app.service.submit("acme", JobRequest(prompt="What is the refund window?"))
    await pool.run(stop)

asyncio.run(main())
print(seen)
"""


def test_a_worker_pool_builds_the_rust_core_before_its_first_job(tmp_path):
    """A long-lived worker builds tiktoken's core at start, so its ~90 ms never lands on the loop mid-traffic
    (a short-lived process, a cold start, still counts in Python until the volume pays for it)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WORKER_FIRST_JOB, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip().splitlines()[-1] == "[True]"
