"""`process.event_loop`: jobs run on uvloop when it is installed (or asked for), on asyncio's loop when asked
for, and a uvloop that is asked for but missing is named with its fix before anything is stored."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from core import event_loops
from core.entrypoints.local import run_inline
from core.models import JobRequest


@pytest.mark.parametrize("wanted", ["uvloop", "asyncio", "auto"])
def test_a_job_runs_end_to_end_on_the_loop_it_is_given(make_app, wanted):
    app = make_app({"process": {"event_loop": wanted}})
    job, _ = app.service.submit("acme", JobRequest(prompt="How big can an SQS message be?"))

    async def main() -> tuple[str, object]:
        kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        return kind, await run_inline(app, job.id, timeout_s=30)

    kind, done = event_loops.run(main(), app.settings.process.event_loop)
    assert kind == ("asyncio" if wanted == "asyncio" else "uvloop")  # `make test` installs the uvloop extra
    assert event_loops.chosen(wanted) == kind
    assert done.status.value == "succeeded"
    assert done.provider_calls == 1


CLI = "import sys; sys.modules['uvloop'] = None; from core.entrypoints.cli import main; sys.exit(main())"


def _alto_without_uvloop(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTO_")}
    env["ALTO_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def test_uvloop_asked_for_but_missing_is_named_with_its_fix_and_auto_falls_back(tmp_path):
    strict, auto = tmp_path / "strict.yaml", tmp_path / "auto.yaml"
    strict.write_text("process: {event_loop: uvloop}\n")
    auto.write_text("process: {event_loop: auto}\n")
    p = _alto_without_uvloop(["--config", str(strict), "ask", "hello", "--json"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "process.event_loop is uvloop" in p.stderr
    assert "pip install 'altostratus[uvloop]'" in p.stderr
    listed = _alto_without_uvloop(["--config", str(auto), "jobs", "list", "--json"], tmp_path)
    assert json.loads(listed.stdout) == []  # refused before the submit: nothing stored
    ran = _alto_without_uvloop(["--config", str(auto), "ask", "hello", "--json"], tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout)["status"] == "succeeded", ran.stderr[-2000:]
