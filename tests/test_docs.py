"""The documentation as users read it: the site builds with `mkdocs build --strict`, every shell example in
the README and the docs runs as written (against the offline provider, in a scratch folder, one shell per
page), and every configuration example is a configuration `alto config check` accepts.

A shell block whose title says it needs a cloud account, installs packages or is one of the README's two
commands can't run here: it is parsed by bash, every `alto` command in it by alto's own parser, and every
repository path it names must exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
NOT_RUN = (
    "needs a",
    "installs packages",
    "the two commands",
    "runs the demo",
    "runs the test suite",
    "runs a benchmark",
)
HISTORY = re.compile(r"\b(this stop|previous stop|the stop before|earlier stops?|last stop|stop's)\b", re.I)


class Block(NamedTuple):
    page: Path
    line: int
    lang: str
    title: str
    body: str


def blocks(page: Path) -> Iterator[Block]:
    text = page.read_text()
    for m in FENCE.finditer(text):
        title = re.search(r'title="([^"]*)"', m.group(2))
        yield Block(page, text[: m.start()].count("\n") + 1, m.group(1), title.group(1) if title else "", m.group(3))


def runnable(b: Block) -> bool:
    return b.lang == "sh" and not any(b.title.startswith(t) for t in NOT_RUN)


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---------------------------------------------------------------- the site


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    r = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    site = tmp_path / "site"
    config = (site / "reference" / "configuration" / "index.html").read_text()
    assert "max_attempts" in config
    assert "operators" in config  # generated from the models
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "/v1/jobs" in api
    assert "next_cursor" in api
    assert (site / "reference" / "openapi.json").exists()


# ---------------------------------------------------------------- shell examples


@pytest.mark.parametrize("page", [p for p in PAGES if any(runnable(b) for b in blocks(p))], ids=_name)
def test_shell_examples_run_as_written(page, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("samples", ".venv", "infra"):  # what the examples name, as in a clone (they never write there)
        (work / name).symlink_to(ROOT / name)
    script = ["set -euo pipefail", "trap 'rc=$?; jobs -p | xargs -r kill 2>/dev/null; wait 2>/dev/null; exit $rc' EXIT"]
    for b in blocks(page):
        if runnable(b):
            script += [f"echo '>>> {_name(page)}:{b.line}' >&2", b.body]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTO_", "ANTHROPIC_", "OPENAI_"))}
    env.update(
        HOME=str(tmp_path / "home"),
        PATH=f"{ROOT / '.venv' / 'bin'}:{env['PATH']}",
        ALTO_DATA_DIR=str(tmp_path / "data"),
    )
    r = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True, timeout=240
    )
    where = re.findall(r">>> (\S+)", r.stderr)
    assert r.returncode == 0, (
        f"the example at {where[-1] if where else '?'} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    )
    assert "Traceback" not in r.stderr, r.stderr[-4000:]


def _not_run() -> list[Block]:
    return [b for p in PAGES for b in blocks(p) if b.lang == "sh" and not runnable(b)]


@pytest.mark.parametrize("block", _not_run(), ids=lambda b: f"{_name(b.page)}:{b.line}")
def test_examples_that_need_an_account_parse_and_name_real_things(block):
    from core.entrypoints.cli import build_parser

    r = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for command in _alto_commands(block.body):
        try:
            build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"{_name(block.page)}:{block.line}: `alto {' '.join(command)}` is not a valid command")
    for path in re.findall(r"(?:^|\s)\.?/?((?:infra|scripts|samples|core|adapters)/[\w./-]+)", block.body):
        assert (ROOT / path).exists(), f"{_name(block.page)}:{block.line} names {path}, which does not exist"


def _alto_commands(body: str) -> Iterator[list[str]]:
    for line in body.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line.split(" #")[0]):
            words = shlex.split(part, comments=True) if part.strip() else []
            if words and words[0] == "alto":
                yield words[1:]


# ---------------------------------------------------------------- configuration examples


def _configs() -> list[Block]:
    return [b for p in PAGES for b in blocks(p) if b.lang == "yaml" and b.title == "altostratus.yaml"]


@pytest.mark.parametrize("block", _configs(), ids=lambda b: f"{_name(b.page)}:{b.line}")
def test_configuration_examples_are_valid(block, tmp_path):
    from core.config.load import load_settings

    path = tmp_path / "altostratus.yaml"
    path.write_text(block.body)
    assert isinstance(yaml.safe_load(block.body), dict)
    load_settings(path, env={"ALTO_DATA_DIR": str(tmp_path / "data")})


# ---------------------------------------------------------------- words


def test_pages_are_written_for_users():
    """No development-history vocabulary: a figure says the command and machine it came from, not when."""
    found = [
        f"{_name(p)}:{n}: {line.strip()}"
        for p in PAGES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    first = next(b for b in blocks(ROOT / "README.md"))
    assert first.body.split("\n")[0].startswith("make demo")
    assert first.body.split("\n")[1].startswith("make test")
    assert "## Use a real model" in lines
    assert any(line.startswith("## A five-minute tour") for line in lines)


def test_the_docs_command_is_documented():
    assert shutil.which("bash")
    makefile = (ROOT / "Makefile").read_text()
    assert "mkdocs build --strict" in makefile
