"""schemathesis over /openapi.json against the live local service: bounded examples per operation, no
5xx, every response conforming to the spec (status, content type, headers, schema), and every
schema-violating request refused. Positive-data acceptance is left out on purpose: a schema-valid
body can still be refused for what only the server knows (an Idempotency-Key reused with another
body, a callback target the SSRF policy refuses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KEYS

# every warning but missing_test_data: generated job ids are 404 by design (a job id is a secret-length random
# token), and the stateful phase reaches GET and DELETE of real jobs through the links from POST
WARNINGS = (
    "missing_auth,base_url_mismatch,validation_mismatch,missing_deserializer,unused_openapi_auth,"
    "unsupported_regex,method_not_allowed,unresolvable_reference"
)
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection"
)


def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(live, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.fail("schemathesis is a dev dependency: reinstall with `make test`")
    _app, url = live()
    out = subprocess.run(
        [
            cli,
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--warnings",
            WARNINGS,
            "--header",
            f"Authorization: Bearer {KEYS['acme']}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # its .schemathesis/ cache stays out of the tree
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout
