"""The lifecycle's stages through the app's public entry points: retrieval off the event loop, one replay path
with one set of answers on every runtime, one aftermath per terminal write, and one body limit for every route."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from core.bootstrap import bootstrap_api
from core.chunks import ContextChunk
from core.config.load import load_api_settings
from core.entrypoints.http import ApiRequest, api_for, respond
from core.entrypoints.local import run_until_done
from core.errors import InputError, QueueUnavailable
from core.models import JobRequest, JobStatus
from tests.conftest import KEYS
from tests.fakes.queues import RefusingQueue


class BlockingRetriever:
    """A retriever whose search for collection `slow` submits a second job and then waits (up to 10 s) for that
    job to finish, as a pgvector query or a first snapshot download would hold a thread. On the event loop
    it would stall every other job, the second one included, until its wait ran out."""

    def __init__(self) -> None:
        self.app: Any = None
        self.other: str | None = None
        self.finished_while_searching: bool | None = None

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        other, _ = self.app.service.submit(tenant, JobRequest(prompt="an unrelated question"))
        self.other = other.id
        end = time.monotonic() + 10
        while time.monotonic() < end:
            current = self.app.store.get(other.id)
            if current is not None and current.status.terminal:
                break
            time.sleep(0.02)
        self.finished_while_searching = self.app.store.get(other.id).status.terminal
        return [ContextChunk(id="slow.md#0", source="slow.md", title="Slow", text="Retries back off.", score=1.0)]

    def collections(self, tenant: str) -> list[str]:
        return ["slow"]

    def fetch(self, tenant: str, collection: str, chunk_ids: list[str]) -> list[ContextChunk]:
        return []


def test_a_slow_retrieval_runs_off_the_loop_and_stalls_no_other_job(make_app):
    retriever = BlockingRetriever()
    app = make_app(retriever=retriever)
    retriever.app = app
    slow, _ = app.service.submit("acme", JobRequest(prompt="How do retries back off?", collection="slow"))
    asyncio.run(run_until_done(app, [slow.id], timeout_s=60))
    assert retriever.finished_while_searching is True, "the other job waited for the retrieval to end"
    assert app.store.get(slow.id).status is JobStatus.succeeded
    assert app.store.get(retriever.other).status is JobStatus.succeeded


def _cancelled_job(service: Any) -> str:
    job, _ = service.submit("acme", JobRequest(prompt="anything"))
    service.cancel("acme", job.id)
    return job.id


@pytest.fixture
def both(make_app, tmp_path):
    """A worker app and an API-only app on one data dir, each with a queue that can break."""
    from core.embedded.queue import SqliteQueue

    queue = RefusingQueue(SqliteQueue(tmp_path / "data" / "jobs.db"), down=False)
    worker = make_app(queue=queue)
    settings = load_api_settings(
        env={"ALTO_DATA_DIR": str(tmp_path / "data"), "ALTO_API_KEYS": ",".join(f"{t}={k}" for t, k in KEYS.items())}
    )
    api = bootstrap_api(
        settings, store=worker.store, state=worker.state, queue=queue, blobs=worker.blobs, secrets=worker.secrets
    )
    return worker, api, queue


def test_replay_gives_the_same_answers_on_an_api_only_app_and_a_worker_app(both):
    worker, api, queue = both
    for app in (worker, api):
        job_id = _cancelled_job(app.service)
        queue.down = True
        with pytest.raises(QueueUnavailable, match="reconciler will send it"):
            app.service.replay(job_id)
        queue.down = False
        assert app.store.get(job_id).status is JobStatus.queued  # queued again; the reconciler sends its message
        with pytest.raises(InputError, match="only dead_lettered, failed or cancelled") as refused:
            app.service.replay(job_id)
        assert refused.value.status == 409


def test_a_replay_whose_message_is_lost_answers_503_on_both_saying_what_happens_next(both):
    worker, api, queue = both
    for app in (worker, api):
        queue.down = False
        job_id = _cancelled_job(app.service)
        queue.down = True
        resp = respond(
            api_for(app),
            ApiRequest(
                method="POST",
                path=f"/v1/jobs/{job_id}/replay",
                base_url="",
                headers={"authorization": f"Bearer {KEYS['acme']}"},
                body=b"",
            ),
        )
        assert resp.status == 503
        assert "reconciler will send it" in json.loads(resp.payload())["error"]["message"]


def test_a_workflow_is_replayed_where_workers_run_and_refused_with_409_elsewhere(both):
    worker, api, _ = both
    parent, _ = api.service.submit("acme", JobRequest(workflow="summarize", inputs={"document": "Some text."}))
    api.service.cancel("acme", parent.id)
    with pytest.raises(InputError, match="replay it where workers run") as refused:
        api.service.replay(parent.id)
    assert refused.value.status == 409
    assert worker.service.replay(parent.id).status is JobStatus.queued  # not begun: it starts over


def test_a_terminal_write_runs_its_aftermath_once_and_a_repeated_ending_none(make_app):
    """The ledger's write says whether it ended the job; the outcome ledger counts each ending once, whether
    the pipeline, the API's cancel or the operator ended it."""
    app = make_app()
    done, _ = app.service.submit("acme", JobRequest(prompt="a question"))
    asyncio.run(run_until_done(app, [done.id]))
    cancelled = _cancelled_job(app.service)
    with pytest.raises(InputError):
        app.service.cancel("acme", cancelled)  # already ended: no second ending, no second count
    report = app.service.outcomes.report(["acme"], since=time.time() - 3600, by=["status"])
    counts = {row["status"]: row["jobs"] for row in report}
    assert counts.get("succeeded") == 1
    assert counts.get("cancelled") == 1


def test_one_body_limit_for_every_route_says_where_large_documents_go(make_app):
    app = make_app()
    big = b"x" * (2 * 1024 * 1024 + 1)
    for method, path in (("POST", "/v1/jobs"), ("POST", "/v1/jobs/job_x/replay"), ("DELETE", "/v1/jobs/job_x")):
        resp = respond(api_for(app), ApiRequest(method=method, path=path, headers={}, body=big, base_url=""))
        body = json.loads(resp.payload())
        assert resp.status == 413, (method, path)
        assert "alto ingest" in body["error"]["message"]


def test_the_http_api_is_built_once_per_app_by_the_entry_point(make_app):
    app = make_app()
    assert api_for(app) is api_for(app)
    assert not hasattr(app, "api")  # the composition root knows nothing of HTTP
