"""`make demo`: ingest the bundled docs, start the local service, submit jobs over HTTP, print answers.

Everything runs on the embedded default (SQLite queue and stores, offline provider) under
.alto-data/demo, with no account and no network. The service is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALTO = str(Path(sys.executable).with_name("alto"))
KEY = "demo-key"
QUESTIONS = [
    "What happens when a job's attempt budget is exhausted?",
    "How large can an SQS message be, and what happens to bigger ones?",
    "Which errors are never retried?",
    "What is the capital of France?",
]


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def main() -> int:
    data_dir = ROOT / ".alto-data" / "demo"
    env = {**os.environ, "ALTO_DATA_DIR": str(data_dir), "ALTO_API_KEYS": f"demo={KEY}", "ALTO_CONFIG": ""}
    env.pop("ALTO_CONFIG")
    print(f"== ingesting samples/docs into collection 'docs' (data in {data_dir})")
    index = data_dir / "index.db"
    if index.exists() and b"keyword_models" not in index.read_bytes()[:200_000]:
        index.unlink()  # written by an older version: the index holds only derived data, so rebuild it
    subprocess.run(
        [ALTO, "ingest", str(ROOT / "samples" / "docs"), "--collection", "docs", "--tenant", "demo", "--quiet"],
        env=env,
        check=True,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = open(data_dir / "service.log", "w")
    print(f"== starting the local service on {base} (JSON logs in {data_dir / 'service.log'})")
    server = subprocess.Popen([ALTO, "serve", "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the service did not start; see", data_dir / "service.log")
                    return 1
                time.sleep(0.1)
        jobs = []
        for q in QUESTIONS:
            status, body, _headers = call("POST", f"{base}/v1/jobs", {"prompt": q, "collection": "docs"})
            print(f"== POST /v1/jobs -> {status} {body['job_id']}  ({q})")
            jobs.append((q, body["status_url"]))
        for q, url in jobs:
            deadline = time.monotonic() + 30
            while True:
                _, view, _ = call("GET", url)
                if view["status"] in ("succeeded", "failed", "dead_lettered") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            print(f"\nQ: {q}\nA: {view.get('result')}")
            for c in view.get("citations", []):
                print(f"   [{c['id']}] {c['source']}")
            u = view["usage"]
            print(
                f"   ({view['status']}; {u['input_tokens']} in / {u['output_tokens']} out tokens; "
                f"trace {view['trace_id']})"
            )
            if p := view.get("prompt"):
                print(
                    f"   prompt {p['template']}: {p['input_tokens']} tokens = system {p['system_tokens']} + template "
                    f"{p['template_tokens']} + question {p['question_tokens']} + context {p['context_tokens']} "
                    f"(budget {p['context_budget']:,}); chunks {', '.join(c['id'] for c in p['chunks']) or 'none'}"
                )
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        print("\n== service stopped")


if __name__ == "__main__":
    sys.exit(main())
