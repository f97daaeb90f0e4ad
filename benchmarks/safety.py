"""Safety: what the policy layer finds, what it wrongly finds, and the latency it adds to a job.

1. Recall of the PII planted in `tests/data/safety_corpus.yaml` (a value counts when its span and kind are found),
   by kind, and the checksum decoys reported (a wrong Luhn, IBAN or DNI check: none should be).
2. The injection heuristics: planted instructions found, benign lines that mention instructions left alone.
3. False positives on clean text: the project's sample docs (`samples/docs`) and documentation (`docs/**/*.md`),
   findings by kind per 100,000 characters (IP addresses in the docs are real ones, reported as found).
4. Latency per job, submit to result, one job at a time through an in-process worker on the embedded stores and the
   offline provider, for three policies: none, `strict` (PII redacted, a pattern, injection fencing), and `strict`
   with input moderation (the offline model classifies, as a job of its own). p50 and p99, and what each adds.
5. The screening alone (every check on a 2,000-character prompt with four PII values), p50 and p99.

Prints one JSON line.

    python benchmarks/safety.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from core.bootstrap import bootstrap  # noqa: E402
from core.config.worker import Settings  # noqa: E402
from core.entrypoints.local import WorkerPool, unwire_wakeups, wire_wakeups  # noqa: E402
from core.models import JobRequest  # noqa: E402
from core.safety import pii  # noqa: E402
from core.safety.injection import suspects  # noqa: E402
from core.secrets import EnvSecrets  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "safety_corpus.yaml"
KINDS = ["email", "phone", "card", "iban", "national_id", "ip_address"]
COUNTRIES = ["US", "GB", "ES", "NL", "FR", "IN"]
STRICT: dict[str, Any] = {
    "pii": "redact",
    "patterns": [{"name": "codename", "pattern": r"project\s+bluebird", "action": "block"}],
}
FILLER = "The queue hands each message to one worker at a time, and a retry waits for its backoff. "


def prompt(i: int) -> str:
    values = f"Write to ana.lopez{i}@example.org or call +44 20 7946 {i % 10000:04d}; card 4539 1488 0343 6467. "
    return (values + FILLER * 24)[:2000]


def recall() -> dict[str, Any]:
    corpus = yaml.safe_load(CORPUS.read_text())
    names = pii.detector_names(KINDS, COUNTRIES)
    planted, found = Counter(), Counter()
    for item in corpus["pii"]:
        planted[item["kind"]] += 1
        spans = pii.find(item["text"], names)
        found[item["kind"]] += any(
            s.kind == item["kind"] and item["text"][s.start : s.end] == item["value"] for s in spans
        )
    decoys = sum(bool(pii.find(d["text"], names)) for d in corpus["decoys"])
    return {
        "pii_recall": round(sum(found.values()) / sum(planted.values()), 3),
        "pii_planted": sum(planted.values()),
        "pii_recall_by_kind": {k: f"{found[k]}/{planted[k]}" for k in sorted(planted)},
        "checksum_decoys_reported": f"{decoys}/{len(corpus['decoys'])}",
        "injection_found": f"{sum(bool(suspects(t)) for t in corpus['injection'])}/{len(corpus['injection'])}",
        "injection_false_positives": f"{sum(bool(suspects(t)) for t in corpus['benign'])}/{len(corpus['benign'])}",
    }


def false_positives() -> dict[str, Any]:
    names = pii.detector_names(KINDS, COUNTRIES)
    out = {}
    for label, files in (
        ("samples/docs", sorted((ROOT / "samples" / "docs").iterdir())),
        ("docs", sorted((ROOT / "docs").rglob("*.md"))),
    ):
        chars, kinds, injected, where = 0, Counter(), 0, Counter()
        for f in files:
            text = f.read_text()
            chars += len(text)
            found = [s.kind for s in pii.find(text, names)] + ["injection"] * len(suspects(text))
            kinds.update(k for k in found if k != "injection")
            injected += found.count("injection")
            where.update({str(f.relative_to(ROOT)): len(found)} if found else {})
        out[label] = {
            "chars": chars,
            "pii_findings": dict(kinds),
            "per_100k_chars": round(sum(kinds.values()) * 100_000 / chars, 2),
            "injection_findings": injected,
            "files_with_findings": dict(where),
        }
    return out


def app_for(policy: dict[str, Any] | None, data: Path) -> Any:
    cfg: dict[str, Any] = {"data_dir": str(data)}
    if policy is not None:
        cfg["safety"] = {"policies": {"p": policy}, "default": "p"}
    return bootstrap(Settings.model_validate(cfg), secrets=EnvSecrets({}))


async def latencies(app: Any, jobs: int, warmup: int = 10) -> list[float]:
    """Per-job milliseconds, submit to result, after `warmup` jobs (the tokenizer, the vault key, first imports)."""
    stop, pool = asyncio.Event(), WorkerPool(app, concurrency=4)
    wire_wakeups(app, [pool])
    runner = asyncio.create_task(pool.run(stop))
    out = []
    try:
        for i in range(warmup + jobs):
            started = time.perf_counter()
            job, _ = await app.service.asubmit("acme", JobRequest(prompt=prompt(i)))
            while not (done := app.store.get(job.id)).status.terminal:
                await asyncio.sleep(0.001)
            assert done.status.value == "succeeded", done.error
            if i >= warmup:
                out.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        pool.notify()
        await runner
        unwire_wakeups(app)
        await app.providers.aclose()
    return out


def pct(xs: list[float], q: float) -> float:
    return round(statistics.quantiles(xs, n=100)[int(q) - 1], 2)


def screening(runs: int = 2000) -> dict[str, float]:
    app = app_for(STRICT, Path(tempfile.mkdtemp()))
    safety, times = app.service.safety, []
    request = JobRequest(prompt=prompt(7))
    safety.submitted("acme", request)  # the vault key and the compiled patterns, once
    for _ in range(runs):
        t = time.perf_counter()
        safety.submitted("acme", request)
        times.append((time.perf_counter() - t) * 1e6)
    return {"screen_p50_us": pct(times, 50), "screen_p99_us": pct(times, 99)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    args = ap.parse_args()
    runs = {
        "none": None,
        "strict": STRICT,
        "strict+moderation": {**STRICT, "moderation": {"model": "offline", "categories": ["violence", "hate"]}},
    }
    latency: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in runs.items():
            ms = asyncio.run(latencies(app_for(policy, Path(tmp) / name), args.jobs))
            latency[name] = {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99)}
    for name in ("strict", "strict+moderation"):
        latency[name]["added_p50_ms"] = round(latency[name]["p50_ms"] - latency["none"]["p50_ms"], 2)
        latency[name]["added_p99_ms"] = round(latency[name]["p99_ms"] - latency["none"]["p99_ms"], 2)
    print(json.dumps({**recall(), "clean_corpus": false_positives(), "latency": latency, **screening()}))


if __name__ == "__main__":
    main()
