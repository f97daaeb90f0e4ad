"""Multi-step jobs through the embedded runtime and a real fake Messages API: chains, maps whose size
follows the document, failure policies, cancellation, the fan-in's exactly-once start, max_calls, and a
20-page PDF summarised through a 2,048-token window."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from core.config.workflows import SUMMARIZE
from core.entrypoints.local import run_until_done
from core.models import Job, JobRequest, JobStatus, QueueMessage
from core.ports import Delivery
from core.tokenizers import counter
from core.views import JobView
from tests.conftest import KEYS, anthropic_config, wait_terminal

ACME = {"Authorization": f"Bearer {KEYS['acme']}"}
TRIAGE = {
    "steps": [
        {"id": "facts", "prompt": "List the claims in: {{ input }}"},
        {"id": "verdict", "prompt": "Given {{ facts }}, is the request allowed?", "max_tokens": 200},
    ]
}


def config(url: str, *, window: int = 200_000, max_tokens: int = 256, **workflows: Any) -> dict[str, Any]:
    cfg = anthropic_config(url)
    cfg["models"]["fake-sonnet"].update({"context_window": window, "token_margin": 0.05})
    cfg["routing"]["default"]["max_tokens"] = max_tokens
    cfg["workflows"] = {"triage@2": TRIAGE, **workflows}
    return cfg


def document(sections: int, tokens_each: int) -> str:
    """`sections` Markdown sections of about `tokens_each` tokens each."""
    out = []
    for s in range(sections):
        words, body = 0, []
        while counter().count(" ".join(body)) < tokens_each - 12:
            body.append(f"Section {s} sentence {words} explains how queue leases bound retries.")
            words += 1
        out.append(f"# Section {s}\n\n" + " ".join(body))
    return "\n\n".join(out)


def run(app, job_id: str, timeout: float = 30.0) -> Job:
    asyncio.run(run_until_done(app, [job_id], timeout_s=timeout))
    job = app.store.get(job_id)
    assert job is not None
    return job


def submit(app, workflow: str, text: str, **extra: Any) -> Job:
    job, _ = app.service.submit(
        "acme",
        JobRequest(
            workflow=workflow,
            inputs={"document" if "summ" in workflow or "map" in workflow else "input": text},
            **extra,
        ),
    )
    return job


def deliver(app, job: Job) -> Any:
    """One delivery of the job's message, processed in this thread (each on its own event loop, so the
    provider clients are closed after it, as `alto ask` does)."""
    body = QueueMessage.for_job(job).model_dump_json()

    async def once() -> Any:
        try:
            return await app.service.process(Delivery(message_id=f"m-{job.id}", body=body))
        finally:
            await app.providers.aclose()

    return asyncio.run(once())


def children(app, parent_id: str) -> list[Job]:
    return app.service.children("acme", parent_id, limit=200)


def opened(app, sections: int) -> tuple[Job, list[Job]]:
    """A summarize job whose parent delivery ran once: its map round open, its children queued."""
    parent = submit(app, "summarize", document(sections, 2500))
    deliver(app, parent)
    return parent, children(app, parent.id)


# ---------------------------------------------------------------- chains and maps


def test_a_chain_step_sees_the_earlier_steps_output_and_the_usage_sums_every_call(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.keep_requests = True
    app = make_app(config(url))
    job = run(app, submit(app, "triage", "refund of order 42 after 90 days").id)
    assert job.status is JobStatus.succeeded, job.error
    first, second = fake.requests
    assert "refund of order 42" in first["messages"][0]["content"]
    facts = children(app, job.id)[0].result_text
    assert facts
    assert facts in second["messages"][0]["content"]  # step 2's prompt holds step 1's output
    assert second["max_tokens"] == 200  # the step's max_tokens lowered the route's 256
    view = JobView.of(job)
    assert view.workflow == "triage@2"
    assert [s.id for s in view.steps] == ["facts", "verdict"]
    assert view.result == children(app, job.id)[1].result_text
    assert view.usage.calls == 2 == sum(s.usage.calls for s in view.steps)
    assert view.usage.input_tokens == sum(c.usage.input_tokens for c in children(app, job.id)) > 0
    assert view.usage.cost_usd == pytest.approx(sum(c.usage.cost_usd for c in children(app, job.id)))
    assert all(c.parent.parent_id == job.id and c.trace_id == job.trace_id for c in children(app, job.id))


@pytest.mark.parametrize("sections", [1, 3, 7])
def test_a_maps_child_count_follows_the_document(make_app, fake_anthropic, sections):
    fake, url = fake_anthropic
    app = make_app(config(url))
    job = run(app, submit(app, "summarize@1", document(sections, 2500)).id)
    assert job.status is JobStatus.succeeded, job.error
    parts, summary = job.workflow.steps
    assert parts.total == sections  # one part per 2,500-token section: two never fit one 3,000-token chunk
    assert summary.total == (0 if sections == 1 else 1)  # one part needs no combining call
    assert fake.stats["calls"] == job.usage.calls == parts.total + summary.total


def test_a_hierarchical_reduce_combines_level_by_level_and_bills_each_node_once(make_app, fake_anthropic):
    fake, url = fake_anthropic
    wf = {
        "steps": [
            dict(SUMMARIZE["steps"][0], map={"over": "document", "chunk_tokens": 300}),
            dict(SUMMARIZE["steps"][1], reduce={"over": "parts", "max_inputs": 3}),
        ],
        "input": "document",
    }
    app = make_app(config(url, **{"map@1": wf}))
    job = run(app, submit(app, "map@1", document(10, 280)).id)
    assert job.status is JobStatus.succeeded, job.error
    parts, summary = job.workflow.steps
    assert parts.total == 10
    assert summary.rounds == [4, 2, 1]  # 10 -> 4 (3+3+2+2) -> 2 -> 1
    kids = children(app, job.id)
    assert len(kids) == 17
    assert all(c.provider_calls == 1 for c in kids)
    assert fake.stats["calls"] == 17 == job.usage.calls


# ---------------------------------------------------------------- failure, cancellation, fan-in


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_child_failing_permanently_under_each_policy(make_app, fake_anthropic, policy):
    fake, url = fake_anthropic
    fake.plan.script = ["ok", "400", "ok", "ok"]  # one of the three parts is refused, whichever runs second
    steps = [dict(SUMMARIZE["steps"][0], on_child_failure=policy), SUMMARIZE["steps"][1]]
    app = make_app(config(url, **{"map@1": {"input": "document", "steps": steps}}))
    job_id = submit(app, "map@1", document(3, 2500)).id
    run(app, job_id)
    asyncio.run(run_until_done(app, [c.id for c in children(app, job_id)], timeout_s=20))  # any still in flight
    job = app.store.get(job_id)
    parts = job.workflow.steps[0]
    assert parts.failed == 1
    assert parts.succeeded == 2
    if policy == "fail":
        assert job.status is JobStatus.failed
        assert "step 'parts': child " in job.error.message
        assert "failed" in job.error.message
        assert job.error.message.split("child ")[1].split(" ")[0] in {c.id for c in children(app, job.id)}
    else:
        assert job.status is JobStatus.succeeded, job.error
        assert len(parts.gaps) == 1
        assert " failed: " in parts.gaps[0]
        assert job.workflow.steps[1].total == 1  # the two parts left were combined
    assert job.usage.calls == fake.stats["calls"] - 1  # every billed call is counted; the refused one was not billed


def test_cancelling_a_workflow_means_children_not_started_never_start(make_app, fake_anthropic, live):
    fake, url = fake_anthropic
    app = make_app(config(url))
    parent = submit(app, "summarize", document(4, 2500))
    assert deliver(app, parent).status is JobStatus.running  # the map round is open: 4 children queued
    kids = children(app, parent.id)
    assert len(kids) == 4
    assert all(c.status is JobStatus.queued for c in kids)
    cancelled = app.service.cancel("acme", parent.id)
    assert cancelled.status is JobStatus.cancelled
    asyncio.run(run_until_done(app, [c.id for c in kids], timeout_s=20))
    assert fake.stats["calls"] == 0
    assert all(c.status is JobStatus.cancelled for c in children(app, parent.id))
    assert app.store.get(parent.id).status is JobStatus.cancelled


def test_delete_over_http_cancels_and_a_second_delete_says_it_is_already_over(live, fake_anthropic):
    _fake, url = fake_anthropic
    _app, base = live(config(url), workers=0)
    with httpx.Client(base_url=base) as c:
        r = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": document(2, 2500)}}, headers=ACME)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        r = c.delete(f"/v1/jobs/{job_id}", headers=ACME)
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        r = c.delete(f"/v1/jobs/{job_id}", headers=ACME)
        assert r.status_code == 409
        assert "already cancelled" in r.json()["error"]["message"]
        assert c.delete(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEYS['beta']}"}).status_code == 404


def test_a_redelivered_last_child_does_not_start_the_reduce_twice(make_app, fake_anthropic):
    fake, url = fake_anthropic
    app = make_app(config(url))
    parent, kids = opened(app, 3)
    for kid in kids:
        deliver(app, kid)
    for _ in range(3):  # the last child's message comes back after it finished, and so does the parent's
        deliver(app, kids[-1])
        deliver(app, parent)
    reduce = app.store.get(parent.id).workflow.steps[1]
    assert reduce.status == "running"
    assert reduce.rounds == [1]  # one reduce node, opened once
    run(app, parent.id)
    done = app.store.get(parent.id)
    assert done.status is JobStatus.succeeded
    assert fake.stats["calls"] == 4 == done.usage.calls  # 3 parts + 1 reduce, however often redelivered


def test_two_last_children_finishing_at_once_wake_the_parent_exactly_once(make_app, fake_anthropic):
    _fake, url = fake_anthropic
    app = make_app(config(url))
    parent, (a, b) = opened(app, 2)
    for kid in (a, b):
        job = app.store.get(kid.id)
        assert app.service.ledger.succeed(job, text="done", citations=[], usage=job.usage)
    steps = app.service.workflows.steps
    start, results = threading.Barrier(2), []

    def count(kid: Job) -> None:
        start.wait()
        results.append(steps.count_child(app.store.get(kid.id)).wake)

    threads = [threading.Thread(target=count, args=(k,)) for k in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert steps.count_child(app.store.get(a.id)).wake  # seen again (a redelivery): it may re-wake, never re-count
    assert app.store.get(parent.id).workflow.steps[0].succeeded == 2


def test_max_calls_bounds_the_provider_calls_of_the_whole_workflow(make_app, fake_anthropic):
    fake, url = fake_anthropic
    wf = {"input": "document", "max_calls": 3, "steps": SUMMARIZE["steps"]}
    app = make_app(config(url, **{"map@1": wf}))
    job = run(app, submit(app, "map@1", document(5, 2500)).id)
    assert job.status is JobStatus.failed
    assert "max_calls (3)" in job.error.message
    assert fake.stats["calls"] == 3


# ---------------------------------------------------------------- submit, listing, documents


def test_submit_names_what_is_wrong_with_a_workflow_request(live, fake_anthropic):
    _, url = fake_anthropic
    _app, base = live(config(url), workers=0)
    with httpx.Client(base_url=base, headers=ACME) as c:
        cases = [
            ({"workflow": "nope", "inputs": {"document": "x"}}, "workflow", "not configured"),
            ({"workflow": "summarize", "inputs": {}}, "inputs.document", "needs the input"),
            ({"workflow": "summarize", "inputs": {"document": "x", "extra": "y"}}, "inputs.extra", "only the input"),
            (
                {"workflow": "summarize", "inputs": {"document": "blob:workflow-inputs/missing.pdf"}},
                "inputs.document",
                "no blob",
            ),
            (
                {"workflow": "summarize", "inputs": {"document": "blob:audit/retention=90d/beta/x.jsonl"}},
                "inputs.document",
                "must be uploaded under 'workflow-inputs/'",
            ),  # never another part of the blob store
            ({"workflow": "summarize", "prompt": "hi", "inputs": {"document": "x"}}, "prompt", "not both"),
            ({"inputs": {"document": "x"}, "prompt": "hi"}, "inputs", "for workflows"),
            ({}, "prompt", "prompt is required"),
        ]
        for body, field, words in cases:
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 422, (body, r.text)
            err = r.json()["error"]
            assert err["field"] == field, (body, err)
            assert words in err["message"], (body, err)
        assert c.get("/v1/jobs").json()["jobs"] == []  # nothing stored


def test_children_are_listed_by_parent_and_a_large_input_goes_to_the_blob_store(live, fake_anthropic):
    _, url = fake_anthropic
    app, base = live(config(url), workers=1)
    text = document(3, 2500)
    with httpx.Client(base_url=base, headers=ACME) as c:
        r = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": text}})
        job_id = r.json()["job_id"]
        view = wait_terminal(c, f"/v1/jobs/{job_id}", ACME, timeout=30)
        assert view["status"] == "succeeded"
        assert view["result"]
        assert [s["children"]["total"] for s in view["steps"]] == [3, 1]
        listed = c.get("/v1/jobs", params={"parent": job_id}).json()["jobs"]
        assert len(listed) == 4
        assert {j["parent_id"] for j in listed} == {job_id}
        assert c.get("/v1/jobs", params={"parent": "job_nope"}).status_code == 404
    stored = app.store.get(job_id).request.inputs["document"]
    assert stored.startswith("blob:workflow-inputs/")
    assert app.blobs.get(stored[5:]).decode() == text


def test_a_twenty_page_pdf_through_a_2048_token_window_makes_one_summary(make_app, fake_anthropic, tmp_path):
    from tests.test_rag import make_pdf

    fake, url = fake_anthropic
    fake.keep_requests = True
    pdf = tmp_path / "handbook.pdf"
    make_pdf(pdf, pages=20)
    app = make_app(config(url, window=2048, max_tokens=256))
    app.blobs.put("workflow-inputs/handbook.pdf", pdf.read_bytes())
    job = run(app, submit(app, "summarize", "blob:workflow-inputs/handbook.pdf").id, timeout=60)
    assert job.status is JobStatus.succeeded, job.error
    parts, summary = job.workflow.steps
    assert parts.total >= 9
    assert summary.total >= 1
    assert job.result_text
    assert any("# Page 7" in c.request.prompt for c in children(app, job.id))  # chunks follow the PDF's pages
    count = counter().count
    for sent in fake.requests:  # every call fit the window with its output allowance
        assert count(sent["system"]) + count(sent["messages"][0]["content"]) + sent["max_tokens"] <= 2048


def test_the_offline_provider_summarises_locally_with_no_network(make_app):
    app = make_app({})
    job = run(app, submit(app, "summarize", document(4, 2500)).id)
    assert job.status is JobStatus.succeeded, job.error
    assert job.result_text.startswith("- Section")
    assert job.usage.calls == 5


def test_a_failed_workflow_replays_from_its_failed_step_and_never_pays_twice(make_app, fake_anthropic):
    fake, url = fake_anthropic
    fake.plan.script = ["ok", "400"]  # the second part is refused once; everything after succeeds
    app = make_app(config(url))
    job_id = submit(app, "summarize", document(3, 2500)).id
    run(app, job_id)
    asyncio.run(run_until_done(app, [c.id for c in children(app, job_id)], timeout_s=20))
    failed = app.store.get(job_id)
    assert failed.status is JobStatus.failed
    assert fake.stats["calls"] == 3
    replayed = app.service.replay(job_id)
    assert replayed.status is JobStatus.queued
    assert replayed.error is None
    done = run(app, job_id)
    assert done.status is JobStatus.succeeded, done.error
    assert fake.stats["calls"] == 5  # the refused part once more, then the reduce: the two good parts kept
    kids = children(app, job_id)
    assert sorted(k.provider_calls for k in kids) == [1, 1, 1, 1]  # (the refused part's budget started over)
    assert done.usage.calls == 4
    assert done.workflow.steps[0].usage.calls == 3  # billed calls, each counted once


def test_a_fan_in_cut_off_by_a_crash_is_healed_by_the_reconciler(make_app, fake_anthropic):
    fake, url = fake_anthropic
    app = make_app(config(url))
    parent, (a, b) = opened(app, 2)
    deliver(app, a)
    lost = app.store.get(b.id)  # b finished, but its worker died before counting it into the parent
    assert app.service.ledger.succeed(lost, text="part b", citations=[], usage=lost.usage)
    assert app.store.get(parent.id).workflow.steps[0].status == "running"
    assert app.service.reconcile(older_than_s=0)["requeued"] >= 1  # the parent's message is sent again
    done = run(app, parent.id)
    assert done.status is JobStatus.succeeded
    assert done.workflow.steps[0].succeeded == 2
    assert fake.stats["calls"] == 2  # a, then the reduce: b was never called, and nothing was paid twice
