"""Defects found by hostile, chaos and new-user testing, each reproduced through a public entry point."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.embedded.queue import SqliteQueue
from core.models import JobRequest, JobStatus
from tests.conftest import KEYS

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# ---------------------------------------------------------------- 1. one request must not poison a tenant


@pytest.mark.parametrize("levels", [8, 230, 300])  # 9, 231 and 301 levels
def test_deeply_nested_metadata_is_refused_naming_the_field_and_nothing_is_stored(live, levels):
    _app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "hi", "metadata": nested(levels)}, headers=AUTH)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "metadata"
        assert "at most 8" in err["message"]
        listed = c.get("/v1/jobs", headers=AUTH)
        assert listed.status_code == 200
        assert listed.json()["jobs"] == []


def test_metadata_within_bounds_is_accepted_and_readable_everywhere(live):
    _app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "hi", "metadata": nested(7)}, headers=AUTH)  # 8 levels
        assert r.status_code == 202
        assert c.get("/v1/jobs", headers=AUTH).status_code == 200
        assert c.get(f"/v1/jobs/{r.json()['job_id']}", headers=AUTH).status_code == 200
        big = c.post("/v1/jobs", json={"prompt": "hi", "metadata": {"blob": "x" * 20_000}}, headers=AUTH)
        assert big.status_code == 422
        assert big.json()["error"]["field"] == "metadata"


def test_a_body_nested_past_the_parser_is_a_400_not_a_500(live):
    _app, url = live()
    body = b'{"prompt": "hi", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "(body)"


def test_a_record_this_version_cannot_read_does_not_take_down_listings_or_sweeps(make_app):
    app = make_app()
    good, _ = app.service.submit("acme", JobRequest(prompt="fine"))
    poisoned, _ = app.service.submit("acme", JobRequest(prompt="poison"))
    # a row written before submit bounded metadata: valid JSON that the model can no longer parse
    app.store.db.conn().execute("UPDATE jobs SET data = ? WHERE id = ?", (json.dumps({"id": poisoned.id}), poisoned.id))
    app.store.db.conn().commit()
    assert [j.id for j in app.service.list("acme")] == [good.id]
    counts = app.service.reconcile(older_than_s=0)
    assert counts["checked"] == 1
    assert counts["requeued"] == 1


class RefusesOneJob:
    """The embedded queue, refusing to send one job's message (a reset connection, a poison payload)."""

    def __init__(self, inner: SqliteQueue) -> None:
        self.inner = inner
        self.refused: str | None = None

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        if self.refused and self.refused in body:
            raise ConnectionError("queue endpoint reset")
        return self.inner.send(body, delay_s=delay_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_one_job_the_queue_refuses_does_not_stop_a_reconcile_sweep(make_app, tmp_path):
    queue = RefusesOneJob(SqliteQueue(tmp_path / "data" / "jobs.db"))
    app = make_app(queue=queue)
    jobs = [app.service.submit("acme", JobRequest(prompt=f"stranded {i}"))[0] for i in range(3)]
    for d in app.queue.receive(max_messages=10):
        app.queue.ack(d)
    queue.refused = jobs[1].id
    counts = app.service.reconcile(older_than_s=0)
    assert counts == {"requeued": 2, "checked": 3, "failed": 1}
    assert app.store.get(jobs[1].id).status is JobStatus.queued


# ---------------------------------------------------------------- 5. an aborted upload never becomes a job


def test_a_body_cut_short_by_a_disconnect_is_discarded(live, capsys):
    import socket
    import time

    app, url = live()
    host, port = url.removeprefix("http://").split(":")
    body = b'{"prompt":"hi"}'
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEYS["acme"].encode() + b"\r\nContent-Length: 100\r\n\r\n" + body
        )
    logged, deadline = "", time.monotonic() + 10
    while '"event": "request.aborted"' not in logged and time.monotonic() < deadline:
        time.sleep(0.02)  # until the server has seen the disconnect and dropped the request
        logged += capsys.readouterr().err
    assert '"event": "request.aborted"' in logged
    assert app.service.list("acme") == []


# ---------------------------------------------------------------- 7. the API contract


def test_query_errors_name_their_parameter_and_strict_json_is_enforced(live):
    _app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.get("/v1/jobs?limit=abc", headers=AUTH)
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "limit"
        assert c.get("/v1/jobs?limit=0", headers=AUTH).json()["error"]["field"] == "limit"
        assert c.get("/v1/jobs?status=nope", headers=AUTH).json()["error"]["field"] == "status"
        for raw in (b'{"prompt": "hi", "metadata": {"x": NaN}}', b'{"prompt": "hi", "metadata": {"x": Infinity}}'):
            r = c.post("/v1/jobs", content=raw, headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 400
            assert "not a JSON number" in r.json()["error"]["message"]
        for number in (b"1e999", b"-1e999", b"1" + b"0" * 400 + b".0"):  # overflow to infinity: stored as null before
            raw = b'{"prompt": "hi", "metadata": {"x": ' + number + b"}}"
            r = c.post("/v1/jobs", content=raw, headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert "too large to represent" in r.json()["error"]["message"], r.text
        assert c.get("/v1/jobs", headers=AUTH).json()["jobs"] == []  # none of them stored
        r = c.post("/v1/jobs", json={"prompt": "hi", "cache": "no"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "cache"
        r = c.post("/v1/jobs", content=b"[1]", headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "(body)"
        r = c.post("/v1/jobs", content=b"hi", headers={**AUTH, "content-type": "text/plain"})
        assert r.status_code == 415
        assert r.json()["error"]["field"] == "Content-Type"


def test_the_schema_and_the_server_agree_on_an_empty_prompt_and_on_since(live):
    """schemathesis found the schema accepting `{"prompt": ""}` and `since=0000-00-00`, which the server
    refuses; and a well-formed day the schema allows (over a year back) was refused too."""
    import jsonschema

    _app, url = live()
    with httpx.Client(base_url=url) as c:
        spec = c.get("/openapi.json").json()
        prompt = spec["components"]["schemas"]["JobRequest"]["properties"]["prompt"]
        for bad in ("", "   "):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, prompt)
            assert c.post("/v1/jobs", json={"prompt": bad}, headers=AUTH).status_code == 422
        since = next(p for p in spec["paths"]["/v1/usage"]["get"]["parameters"] if p["name"] == "since")["schema"]
        checker = jsonschema.FormatChecker()
        for bad in ("0000-00-00", "2026-02-30", "yesterday"):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, since, format_checker=checker)
            assert c.get(f"/v1/usage?since={bad}", headers=AUTH).status_code == 422
        for good in ("1999-01-01", "2030-12-31"):  # a valid day: the report starts where the ledger does
            jsonschema.validate(good, since, format_checker=checker)
            assert c.get(f"/v1/usage?since={good}", headers=AUTH).status_code == 200


def test_405_says_what_is_allowed_and_trace_is_not_served(live):
    _app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.request("TRACE", "/healthz")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET"
        r = c.delete("/v1/jobs", headers=AUTH)
        assert r.status_code == 405
        assert r.headers["allow"] == "POST, GET"


def test_the_host_header_never_reaches_status_urls(live):
    _app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "hi"}, headers={**AUTH, "host": "evil.example"})
    assert r.status_code == 202
    assert r.json()["status_url"].startswith(f"{url}/v1/jobs/")
    assert "evil" not in r.headers["location"]


def test_public_url_sets_status_urls(live):
    _app, url = live({"server": {"public_url": "https://jobs.example.com/"}})
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "hi"}, headers=AUTH)
    assert r.headers["location"] == r.json()["status_url"] == f"https://jobs.example.com/v1/jobs/{r.json()['job_id']}"


def test_stored_records_are_type_checked_but_not_rebounded_on_every_read(tmp_path):
    """Bounds are checked where a request enters; a record the store wrote (here one past today's metadata
    bound, as an older version may have written it) still reads back, and a wrongly typed one still fails."""
    from core.embedded.stores import SqliteJobStore
    from core.models import Job

    store = SqliteJobStore(tmp_path / "jobs.db", storage_thread=False)
    with pytest.raises(ValueError, match="at most 8"):
        JobRequest(prompt="hi", metadata=nested(12))
    request = JobRequest.model_construct(**{**JobRequest(prompt="hi").__dict__, "metadata": {"blob": "x" * 20_000}})
    job = Job(
        id="j-old", tenant="acme", request=request, request_hash="h", trace_id="0" * 32, created_at=1.0, updated_at=1.0
    )
    store.create(job)
    assert store.get("j-old").request.metadata == {"blob": "x" * 20_000}
    with store.db.tx() as c:
        c.execute("UPDATE jobs SET data = json_set(data, '$.request.cache', 'no') WHERE id = 'j-old'")
    with pytest.raises(ValueError, match="cache"):
        store.get("j-old")
