"""The garbage collector's settings reach a worker process when it starts taking jobs, never at import.

Each case runs in a fresh interpreter: the settings are process-wide and applied once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import asyncio, gc, json, sys
from core.bootstrap import bootstrap
from core.config.worker import Settings
from core.entrypoints.local import run_until_done
from core.models import JobRequest

at_import = (gc.get_threshold()[0], gc.get_freeze_count())
app = bootstrap(Settings.model_validate({"data_dir": sys.argv[1], **json.loads(sys.argv[2])}))
job, _ = app.service.submit("t", JobRequest(prompt="a question"))
asyncio.run(run_until_done(app, [job.id], timeout_s=30))
print(json.dumps({"status": app.store.get(job.id).status.value, "at_import": at_import,
                  "threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}))
"""


def worker_gc(tmp_path: Path, config: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def interpreter_default() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_a_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often(tmp_path):
    got = worker_gc(tmp_path, {"logging": {"level": "WARNING"}})
    assert got["status"] == "succeeded"
    assert got["at_import"] == [interpreter_default(), 0]  # importing the framework changes nothing
    assert got["threshold"] == 10_000
    assert got["frozen"] > 10_000  # the SDKs and schemas, out of every scan


def test_the_settings_turn_it_off(tmp_path):
    got = worker_gc(
        tmp_path, {"logging": {"level": "WARNING"}, "process": {"gc_freeze": False, "gc_young_threshold": 0}}
    )
    assert got["status"] == "succeeded"
    assert got["threshold"] == interpreter_default()
    assert got["frozen"] == 0
