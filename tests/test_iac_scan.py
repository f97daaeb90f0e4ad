"""checkov (the IaC scanner) over every deployment: the packaged CloudFormation template, the Terraform and the
Bicep. No check may fail; a check that does not apply is skipped beside its resource, with the reason
(CloudFormation `Metadata.checkov.skip`, a `#checkov:skip=ID:reason` comment in HCL and Bicep).

checkov runs from its own virtualenv (`make test` installs it in .venv-tools; its pins conflict with the
project's own test stack), found there or on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require_tool


def checkov() -> str:
    found = ROOT / ".venv-tools" / "bin" / "checkov"
    return (
        str(found) if found.exists() else (shutil.which("checkov") or require_tool("checkov", "make test installs it"))
    )


def scan(*args: str) -> dict[str, Any]:
    r = subprocess.run(
        [checkov(), *args, "-o", "json", "--quiet", "--compact"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert r.stdout.strip(), r.stderr[-3000:]
    out = json.loads(r.stdout)
    reports = out if isinstance(out, list) else [out]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for rep in reports
        for c in rep.get("results", {}).get("failed_checks", [])
    ]
    summary = {
        k: sum(rep.get("summary", {}).get(k, 0) for rep in reports)
        for k in ("passed", "failed", "skipped", "parsing_errors")
    }
    assert summary["parsing_errors"] == 0, summary
    assert not failed, "checkov findings (fix them, or skip beside the resource with the reason):\n" + "\n".join(failed)
    for rep in reports:
        for c in rep.get("results", {}).get("skipped_checks", []):
            assert (c.get("suppress_comment") or "").strip(), (
                f"{c['check_id']} on {c['resource']} is skipped with no reason"
            )
    print(f"\ncheckov {' '.join(args)}: {summary}")
    return summary


def test_the_packaged_cloudformation_template(aws_packaged):
    """The full stack as osls deploys it (the create-stack template is its deployment bucket alone)."""
    summary = scan(
        "-f",
        str(Path(aws_packaged["dir"]) / "cloudformation-template-update-stack.json"),
        "--framework",
        "cloudformation",
    )
    assert summary["passed"] > 50


def test_the_terraform():
    assert scan("-d", "infra/gcp", "--framework", "terraform")["passed"] > 10


def test_the_bicep():
    assert scan("-f", "infra/azure/main.bicep", "--framework", "bicep")["passed"] > 15


@pytest.mark.parametrize("path", ["infra/gcp/main.tf", "infra/azure/main.bicep"])
def test_skips_in_source_say_why(path):
    for line in (ROOT / path).read_text().splitlines():
        if "checkov:skip=" in line:
            _, _, rest = line.partition("checkov:skip=")
            check, _, reason = rest.partition(":")
            assert check.strip(), f"{path}: a skip needs its reason: {line.strip()}"
            assert len(reason.strip()) > 20, f"{path}: a skip needs its reason: {line.strip()}"
