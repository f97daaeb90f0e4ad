"""The HTTP API through real HTTP against the local service (API + workers in one process)."""

from __future__ import annotations

import httpx
import pytest

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, SAMPLES, anthropic_config, wait_terminal

ACME = {"Authorization": f"Bearer {KEYS['acme']}"}
BETA = {"Authorization": f"Bearer {KEYS['beta']}"}


def test_offline_job_end_to_end_with_citations(live):
    app, url = live()
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    with httpx.Client(base_url=url) as c:
        r = c.post(
            "/v1/jobs",
            json={"prompt": "What happens when the attempt budget is exhausted?", "collection": "docs"},
            headers=ACME,
        )
        assert r.status_code == 202
        body = r.json()
        assert body["status"] == "queued"
        assert body["job_id"].startswith("job_")
        assert r.headers["location"] == body["status_url"] == f"{url}/v1/jobs/{body['job_id']}"
        view = wait_terminal(c, body["status_url"], ACME)
    assert view["status"] == "succeeded", view
    assert "dead-lettered" in view["result"]
    assert view["citations"]
    assert all(cit["valid"] for cit in view["citations"])
    assert view["citations"][0]["id"].startswith("retries-md#")
    assert view["route"]["provider"] == "offline"
    assert view["usage"]["input_tokens"] > 0
    assert view["attempts"][0]["outcome"] == "succeeded"
    assert len(view["trace_id"]) == 32


def test_anthropic_job_end_to_end_on_fake_server(live, fake_anthropic):
    fake, fake_url = fake_anthropic
    app, url = live(anthropic_config(fake_url))
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "How do retries back off?", "collection": "docs"}, headers=ACME)
        view = wait_terminal(c, r.json()["status_url"], ACME)
    assert view["status"] == "succeeded", view
    assert view["result"].startswith("Fake answer about: How do retries back off?")
    assert view["route"] == {
        "provider": "fake",
        "model": "fake-sonnet",
        "model_id": "claude-haiku-4-5",
        "reason": "default route",
        "rule": "default",
    }
    u = view["usage"]
    assert u["cost_usd"] == pytest.approx((u["input_tokens"] * 3.0 + u["output_tokens"] * 15.0) / 1e6)
    assert view["citations"]
    assert all(c["valid"] for c in view["citations"])
    assert fake.stats["calls"] == 1


def test_default_collection_of_tenant_is_used(live):
    app, url = live({"tenants": {"acme": {"default_collection": "docs"}}})
    app.library.ingest(SAMPLES, tenant="acme", collection="docs")
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "How large can an SQS message be?"}, headers=ACME)
        view = wait_terminal(c, r.json()["status_url"], ACME)
    assert "256 KB" in view["result"]
    assert view["citations"]


def test_idempotency_key_same_body_same_job_different_body_422(live):
    app, url = live()
    with httpx.Client(base_url=url) as c:
        h = {**ACME, "Idempotency-Key": "order-42"}
        first = c.post("/v1/jobs", json={"prompt": "hello there"}, headers=h)
        again = c.post("/v1/jobs", json={"prompt": "hello there"}, headers=h)
        other = c.post("/v1/jobs", json={"prompt": "something else"}, headers=h)
        other_tenant = c.post(
            "/v1/jobs", json={"prompt": "hello there"}, headers={**BETA, "Idempotency-Key": "order-42"}
        )
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert other_tenant.json()["job_id"] != first.json()["job_id"]  # keys are scoped per tenant
    assert len(app.store.list(tenant="acme")) == 1


def test_tenant_isolation_and_auth(live):
    app, url = live()
    with httpx.Client(base_url=url) as c:
        job_id = c.post("/v1/jobs", json={"prompt": "mine"}, headers=ACME).json()["job_id"]
        assert c.get(f"/v1/jobs/{job_id}", headers=BETA).status_code == 404
        assert c.get(f"/v1/jobs/{job_id}", headers=ACME).status_code == 200
        assert c.get("/v1/jobs", headers=BETA).json()["jobs"] == []
        missing = c.post("/v1/jobs", json={"prompt": "x"})
        wrong = c.post("/v1/jobs", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
        basic = c.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Basic YWNtZTphY21lLWtleQ=="})
    for r in (missing, wrong, basic):
        assert r.status_code == 401
        assert "Bearer" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert len(app.store.list()) == 1


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 422, None),
        (b'{"prompt": 42}', 422, "prompt"),
        (b'{"prompt": "   "}', 422, "prompt"),
        (b"{}", 422, "prompt"),
        (b'{"prompt": "x", "metadata": "tags"}', 422, "metadata"),
        (b'{"prompt": "x", "promt": "typo"}', 422, "promt"),
        (b'{"prompt": "x", "callback_url": "ftp://example"}', 422, "callback_url"),
        (b'{"prompt": "x", "collection": "nope"}', 422, "collection"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(live, body, status, field):
    app, url = live()
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", content=body, headers={**ACME, "content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    if field:
        assert err["field"] == field
        assert field in err["message"]
    assert app.store.list() == []
    assert app.queue.depth()["queued"] == 0


def test_unsupported_media_type_and_unknown_routes(live):
    _, url = live()
    with httpx.Client(base_url=url) as c:
        assert (
            c.post("/v1/jobs", content=b"prompt=x", headers={**ACME, "content-type": "text/plain"}).status_code == 415
        )
        assert c.get("/v2/nothing", headers=ACME).status_code == 404
        assert c.delete("/v1/jobs", headers=ACME).status_code == 405
        assert c.get("/healthz").json() == {"status": "ok", "workers": 1}


def test_openapi_documents_the_routes(live):
    _, url = live()
    spec = httpx.get(f"{url}/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz"} <= set(spec["paths"])
    req = spec["components"]["schemas"]["JobRequest"]
    assert set(req["properties"]) == {
        "prompt",
        "task",
        "context_query",
        "collection",
        "metadata",
        "callback_url",
        "cache",
        "workflow",
        "inputs",
        "max_tokens",
        "stream",
        "lane",
        "messages",
        "system",
        "response_format",
        "tools",
        "tool_choice",
        "thread_id",
    }
    assert "required" not in req
    assert "workflow" in req["properties"]  # prompt, messages, or workflow and inputs
    assert [alt["required"] for alt in req["oneOf"]] == [["prompt"], ["messages"], ["workflow", "inputs"]]
    assert "202" in spec["paths"]["/v1/jobs"]["post"]["responses"]


def test_traceparent_is_continued(live):
    _, url = live()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with httpx.Client(base_url=url) as c:
        r = c.post("/v1/jobs", json={"prompt": "x"}, headers={**ACME, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
        view = wait_terminal(c, r.json()["status_url"], ACME)
    assert r.headers["x-trace-id"] == trace
    assert view["trace_id"] == trace


def test_callback_url_receives_the_job_view(live):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    hook = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        app, url = live({"callbacks": {"allow": ["127.0.0.1"]}})  # loopback is refused unless allowed
        with httpx.Client(base_url=url) as c:
            r = c.post(
                "/v1/jobs",
                json={"prompt": "x", "callback_url": f"http://127.0.0.1:{hook.server_port}/done"},
                headers=ACME,
            )
            job_id = r.json()["job_id"]
            wait_terminal(c, r.json()["status_url"], ACME)
            import time

            deadline = time.monotonic() + 5
            while app.store.get(job_id).callback.state == "pending" and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        hook.shutdown()
    assert got
    assert got[0]["job_id"] == job_id
    assert got[0]["status"] == "succeeded"
    assert app.store.get(job_id).callback.status_code == 204


def test_listing_pages_with_a_cursor_stable_under_concurrent_submits(live):
    """Before: `GET /v1/jobs` stopped at 200 with no way to see the rest."""
    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        first = [c.post("/v1/jobs", json={"prompt": f"question {n}"}).json()["job_id"] for n in range(7)]
        seen, cursor, pages = [], None, 0
        while True:
            r = c.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [j["job_id"] for j in body["jobs"]]
            pages += 1
            c.post("/v1/jobs", json={"prompt": f"submitted while paging {pages}"})  # newer: never on a later page
            if (cursor := body["next_cursor"]) is None:
                break
        assert seen == first[::-1]
        assert pages == 3
        bad = c.get("/v1/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "cursor"
        assert "next_cursor" in bad.json()["error"]["message"]


def test_a_workflows_children_page_in_step_order(live):
    from tests.test_workflows import document

    _app, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        parent = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": document(5, 2500)}}).json()
        assert wait_terminal(c, parent["status_url"], ACME)["status"] == "succeeded"
        everything = [
            j["job_id"] for j in c.get("/v1/jobs", params={"parent": parent["job_id"], "limit": 200}).json()["jobs"]
        ]
        seen, cursor = [], None
        while True:
            body = c.get(
                "/v1/jobs", params={"parent": parent["job_id"], "limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [j["job_id"] for j in body["jobs"]]
            if (cursor := body["next_cursor"]) is None:
                break
        assert len(everything) == 6
        assert seen == everything  # five parts and the summary, in step order
        listing = c.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
        wrong = c.get("/v1/jobs", params={"parent": parent["job_id"], "cursor": listing})
        assert wrong.status_code == 422
        assert "children" in wrong.json()["error"]["message"]


def test_an_operator_key_reads_and_acts_on_every_tenant_and_submits_nothing(live):
    _, url = live(env={"ALTO_OPERATOR_KEYS": "ops-key"})
    ops = {"Authorization": "Bearer ops-key"}
    with httpx.Client(base_url=url) as c:
        mine = c.post("/v1/jobs", json={"prompt": "acme's"}, headers=ACME).json()["job_id"]
        theirs = c.post("/v1/jobs", json={"prompt": "beta's"}, headers=BETA).json()["job_id"]
        assert wait_terminal(c, f"/v1/jobs/{theirs}", BETA)["status"] == "succeeded"
        assert {j["job_id"] for j in c.get("/v1/jobs", headers=ops).json()["jobs"]} == {mine, theirs}
        assert [j["job_id"] for j in c.get("/v1/jobs", params={"tenant": "beta"}, headers=ops).json()["jobs"]] == [
            theirs
        ]
        assert c.get(f"/v1/jobs/{theirs}", headers=ops).json()["tenant"] == "beta"
        assert c.get("/v1/me", headers=ops).json() == {"tenant": None, "operator": True, "tenants": ["acme", "beta"]}
        assert c.get("/v1/me", headers=ACME).json() == {"tenant": "acme", "operator": False, "tenants": ["acme"]}
        refused = c.post("/v1/jobs", json={"prompt": "x"}, headers=ops)
        assert refused.status_code == 403
        assert "tenant's key" in refused.json()["error"]["message"]
        peek = c.get("/v1/jobs", params={"tenant": "beta"}, headers=ACME)
        assert peek.status_code == 403
        assert peek.json()["error"]["code"] == "forbidden"
        by_tenant = c.get("/v1/usage", params={"group_by": "tenant"}, headers=ops).json()["rows"]
        assert {r["tenant"] for r in by_tenant} >= {"beta"}
        assert c.get("/v1/usage", params={"group_by": "tenant"}, headers=ACME).status_code == 422


def test_listing_filters_narrow_while_paging(live):
    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        ids = {}
        for n in range(6):
            task = "billing" if n % 2 else "support"
            ids[n] = c.post(
                "/v1/jobs",
                json={"prompt": f"question {n} about refunds" if n % 3 == 0 else f"question {n}", "task": task},
            ).json()["job_id"]

        def every(**params) -> list[str]:
            seen, cursor = [], None
            while True:
                body = c.get("/v1/jobs", params={"limit": 1, **params, **({"cursor": cursor} if cursor else {})}).json()
                seen += [j["job_id"] for j in body["jobs"]]
                if (cursor := body["next_cursor"]) is None:
                    return seen

        assert every(task="billing") == [ids[5], ids[3], ids[1]]
        assert every(q="REFUNDS") == [ids[3], ids[0]]
        middle = c.get(f"/v1/jobs/{ids[2]}").json()["created_at"]
        assert every(since=str(middle)) == [ids[5], ids[4], ids[3], ids[2]]
        assert every(until=str(middle)) == [ids[1], ids[0]]
        assert every(task="billing", since=str(middle)) == [ids[5], ids[3]]
        for bad in ({"since": "yesterday"}, {"top_level": "maybe"}, {"q": "x" * 201}, {"until": "nan"}):
            r = c.get("/v1/jobs", params=bad)
            assert r.status_code == 422, bad
            assert r.json()["error"]["field"] == next(iter(bad)), bad


def test_top_level_leaves_workflow_steps_out(live):
    from tests.test_workflows import document

    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        parent = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": document(3, 2500)}}).json()
        assert wait_terminal(c, parent["status_url"], ACME)["status"] == "succeeded"
        plain = c.post("/v1/jobs", json={"prompt": "a plain question"}).json()["job_id"]
        everything = c.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
        top = c.get("/v1/jobs", params={"limit": 200, "top_level": "true"}).json()["jobs"]
    assert len(everything) == 6
    assert [j["job_id"] for j in top] == [plain, parent["job_id"]]


def test_outcomes_count_endings_with_latency_percentiles(live):
    fake = FakeAnthropic(FaultPlan(script=["ok", "400", "ok"], latency_s=0.2))
    with ServerThread(fake) as srv:
        _, url = live(anthropic_config(srv.url, max_attempts=1))
        with httpx.Client(base_url=url, headers=ACME) as c:
            for n in range(3):
                job = c.post("/v1/jobs", json={"prompt": f"question {n}", "task": "support"}).json()
                wait_terminal(c, job["status_url"], ACME)
            report = c.get("/v1/outcomes", params={"group_by": "status,task"}).json()
            by_day = c.get("/v1/outcomes").json()
    rows = {(r["status"], r["task"]): r for r in report["rows"]}
    assert rows[("succeeded", "support")]["jobs"] == 2
    assert rows[("failed", "support")]["jobs"] == 1
    ok = rows[("succeeded", "support")]
    assert 0.2 <= ok["mean_latency_s"] < 5
    assert 0 < ok["p50_latency_s"] <= ok["p90_latency_s"] <= ok["p99_latency_s"] <= 0.5
    assert [r["jobs"] for r in by_day["rows"]] == [3]
    assert by_day["group_by"] == ["day"]
