"""`alto serve` through its entry point: a real process, real HTTP, clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import SAMPLES, serve_until_healthy, wait_terminal


def test_serve_answers_jobs_and_stops_cleanly(tmp_path):
    alto = str(Path(sys.executable).with_name("alto"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    env.update(ALTO_DATA_DIR=str(tmp_path / "data"), ALTO_API_KEYS="acme=k1")
    subprocess.run(
        [alto, "ingest", str(SAMPLES), "--collection", "docs", "--tenant", "acme"],
        env=env,
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    proc, url, _health = serve_until_healthy(alto, env, tmp_path, workers=2)
    try:
        h = {"Authorization": "Bearer k1"}
        with httpx.Client(base_url=url) as c:
            r = c.post("/v1/jobs", json={"prompt": "Which errors are never retried?", "collection": "docs"}, headers=h)
            assert r.status_code == 202
            view = wait_terminal(c, r.json()["status_url"], h)
        assert view["status"] == "succeeded"
        assert view["citations"][0]["id"] == "retries-md#1"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    # structured logs: one trace id from submit to result, and no key material
    lines = [ln for ln in err.splitlines() if ln.startswith("{")]
    import json

    events = [json.loads(ln) for ln in lines]
    trace = {e["event"]: e.get("trace_id") for e in events}
    assert trace["job.submitted"] == trace["job.succeeded"] == view["trace_id"]
    assert events[-1]["event"] == "runtime.stopped"  # workers drained before exit
    assert "k1" not in " ".join(str(e.get("fields", "")) for e in events)
    assert "Bearer" not in err
