"""Retrieval evaluation on BEIR-format data sets: a loader and the standard metrics, computed as
trec_eval / pytrec_eval (and so BEIR) compute them.

BEIR layout (Thakur et al., 2021): `corpus.jsonl` ({"_id", "title", "text"}), `queries.jsonl`
({"_id", "text"}) and `qrels/<split>.tsv` (query-id, corpus-id, score, with a header row). Any BEIR
data set downloaded by hand can be evaluated the same way as the bundled `stdlib-qa`.

As trec_eval: nDCG uses linear gains (the grade itself) with a log2(rank + 1) discount; a score-0
judgment is a judged non-relevant document, not a missing one; every judged query counts, one with
no relevant document scoring 0; and, as BEIR does by default, a retrieved document whose id is the
query's own id is left out (`ignore_identical_ids`).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, str]]  # _id -> {"title", "text"}
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # query -> {doc: grade}, grade 0 included


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_beir(folder: Path | str, split: str = "test") -> BeirDataset:
    folder = Path(folder)
    for need in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / need).exists():
            raise FileNotFoundError(
                f"{folder / need} is missing: a BEIR data set has corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
            )
    corpus = {
        str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
        for d in _jsonl(folder / "corpus.jsonl")
    }
    queries = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows, None)  # header
        for row in rows:
            if len(row) < 3 or not row[0].strip():
                continue  # a blank line
            qid, did, score = row[0], row[1], row[2]
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {q: t for q, t in queries.items() if q in qrels}  # BEIR evaluates judged queries only
    return BeirDataset(folder.name, corpus, queries, qrels)


def ndcg_at_k(ranked: list[str], judged: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, as trec_eval's ndcg_cut; 0 when no judged document is relevant."""
    dcg = sum(max(0, judged.get(d, 0)) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], judged: dict[str, int], k: int = 10) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def evaluate(
    run: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    *,
    ks: tuple[int, ...] = (10, 100),
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """Mean nDCG@k and recall@k over every judged query (a query the run has no answer for scores 0)."""
    out: dict[str, float] = {}
    ranked = {q: [d for d in run.get(q, []) if not (ignore_identical_ids and d == q)] for q in qrels}
    for k in ks:
        out[f"ndcg@{k}"] = round(statistics.fmean(ndcg_at_k(ranked[q], qrels[q], k) for q in qrels), 4)
        out[f"recall@{k}"] = round(statistics.fmean(recall_at_k(ranked[q], qrels[q], k) for q in qrels), 4)
    return out
