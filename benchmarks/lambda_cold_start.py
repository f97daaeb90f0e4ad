"""Lambda bundle: size, contents and cold import time, measured from the unzipped artifact.

Packages with `npx osls package` (or takes `--zip`), unzips it, and times imports in fresh python3.12
processes with bytecode writes off (Lambda's code folder is read-only), boto3/botocore coming from a
separate folder as the Lambda runtime provides them:

- submit path: `import adapters.aws.handlers` plus the botocore modules its clients are made with
  (adapters/aws/clients.py uses botocore directly, not boto3) against a bare
  `import boto3; from pydantic import BaseModel` run the same way from the same folder, and against
  `import botocore.session, botocore.config; from pydantic import BaseModel` (the same SDK layer as
  ours, so the ratio is what our code and pydantic's field machinery add);
- worker path: the handlers plus the job-processing side (full settings, routing, assembly,
  governance), the Anthropic provider, the tokenizer and botocore, against a bare `import anthropic, boto3`
  from an ordinary python3.12 venv with cached bytecode.

- to first reply: a fresh python3.12 process from the bundle that imports the worker, submits one job
  to the embedded stores, processes it against the fake Messages API (real HTTP) and has its reply
  saved: the cold start a worker's first job sees end to end, tokenizer and provider client included.

Prints one JSON line. Targets: zip <= 10 MB; submit_ratio and worker_ratio <= 1.15.

    python benchmarks/lambda_cold_start.py [--zip .serverless/altostratus.zip] [--runs 15]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3<2.1")

# the api function: its handler module plus the SDK it creates its DynamoDB and SQS clients with on the first
# request (adapters/aws/clients.py: botocore, which the Lambda runtime provides as it does boto3)
SUBMIT = "import botocore.session, botocore.config, adapters.aws.handlers"
SUBMIT_BASE = "import boto3; from pydantic import BaseModel"
SUBMIT_SDK_BASE = "import botocore.session, botocore.config; from pydantic import BaseModel"  # same SDK layer as ours
# the worker function by the end of its first batch: the job-processing side (full settings, routing,
# assembly, governance), the Anthropic provider and SDK, the tokenizer
WORKER = (
    "import botocore.session, botocore.config, adapters.aws.handlers, adapters.aws.sqs, core.entrypoints.consumer, "
    "core.config.worker, core.routing, core.assembly, core.governance.ratelimit, core.governance.breaker, "
    "core.governance.cache, core.providers.anthropic, anthropic; from core.tokenizers import counter"
)
WORKER_BASE = "import anthropic, boto3"
# from process start to the first job's reply saved (embedded stores in a temporary dir, fake provider)
FIRST_REPLY = """
import asyncio, sys, tempfile
from core.bootstrap import bootstrap
from core.config.worker import Settings
from core.secrets import EnvSecrets
from core.entrypoints.local import run_inline
from core.models import JobRequest
settings = Settings.model_validate({"data_dir": tempfile.mkdtemp(), "logging": {"level": "ERROR"},
    "providers": {"fake": {"type": "anthropic", "api_key": "env:K", "base_url": sys.argv[1]}},
    "models": {"m": {"provider": "fake", "model_id": "claude-haiku-4-5", "input_per_mtok": 1, "output_per_mtok": 5}},
    "routing": {"default": {"model": "m", "max_tokens": 64}}})
app = bootstrap(settings, secrets=EnvSecrets({"K": "test-key"}))
job, _ = app.service.submit("bench", JobRequest(prompt="What is the refund window for annual plans?"))
done = asyncio.run(run_inline(app, job.id, timeout_s=30))
assert done is not None and done.status.value == "succeeded", done
"""


def python312() -> str | None:
    """The Lambda runtime's Python: $ALTO_LAMBDA_PYTHON, python3.12 on PATH, or a pyenv install."""
    candidates = [
        os.environ.get("ALTO_LAMBDA_PYTHON"),
        shutil.which("python3.12"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for c in candidates:
        if (
            c
            and subprocess.run(
                [c, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"], capture_output=True
            ).returncode
            == 0
        ):
            return c
    return None


def package(py: str) -> Path:
    env = {**os.environ, "ALTO_LAMBDA_PYTHON": py, "AWS_ACCESS_KEY_ID": "fake", "AWS_SECRET_ACCESS_KEY": "fake"}
    env.pop("AWS_PROFILE", None)
    subprocess.run(
        ["npx", "--no-install", "osls", "package", "--stage", "bench"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return ROOT / ".serverless" / "altostratus.zip"


def _once(py: str, code: str, path: list[Path], *args: str) -> float:
    """Seconds spent running `code` (imports, or FIRST_REPLY), in a fresh process with bytecode writes off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(map(str, path)), PYTHONNOUSERSITE="1")
    flags = ["-S"] if path else []  # from a folder: no site-packages at all, as on Lambda
    probe = f"import time; t = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    r = subprocess.run(
        [py, *flags, "-c", probe, *args], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if r.returncode != 0:
        raise RuntimeError(f"import failed: {code}\n{r.stderr[-2000:]}")
    return float(r.stdout.strip().splitlines()[-1])


def _first_reply(py: str, path: list[Path], runs: int) -> float:
    """Median seconds from a fresh worker process's start to its first job's saved reply."""
    import sys

    sys.path.insert(0, str(ROOT))
    from core.testing.fake_anthropic import spawn

    fake, url = spawn("--latency", "0.05")
    try:
        return statistics.median(_once(py, FIRST_REPLY, path, url) for _ in range(runs))
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def compare(*cases: tuple[str, str, list[Path]], runs: int) -> list[float]:
    """Medians of interleaved runs (ours, base, ours, base...): drift on a shared machine hits all alike."""
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(runs):
        for case, t in zip(cases, times, strict=True):
            t.append(_once(*case))
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", help="an already packaged artifact (default: run npx osls package)")
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args(argv)
    py = python312()
    if py is None:
        print(json.dumps({"skipped": "no python3.12 (the Lambda runtime) found; set ALTO_LAMBDA_PYTHON"}))
        return {}
    artifact = Path(args.zip) if args.zip else package(py)
    with tempfile.TemporaryDirectory(prefix="alto-lambda-") as tmp:
        code, runtime, venv = Path(tmp, "task"), Path(tmp, "runtime"), Path(tmp, "venv")
        with zipfile.ZipFile(artifact) as z:
            names = z.namelist()
            z.extractall(code)
        pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--target", str(runtime), *RUNTIME_PACKAGES], check=True)  # with bytecode, as Lambda's
        subprocess.run([py, "-m", "venv", str(venv)], check=True)
        vpy = str(venv / "bin" / "python")
        subprocess.run(
            [
                vpy,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "anthropic==2.12.0",
                *RUNTIME_PACKAGES,
            ],
            check=True,
        )
        subprocess.run([vpy, "-c", WORKER_BASE], check=True)  # an ordinary venv: bytecode cached by now
        path = [code, runtime]
        submit, submit_base, sdk_base = compare(
            (py, SUBMIT, path), (py, SUBMIT_BASE, path), (py, SUBMIT_SDK_BASE, path), runs=args.runs
        )
        worker, worker_base = compare((py, WORKER, path), (vpy, WORKER_BASE, []), runs=args.runs)
        first_reply = _first_reply(py, path, args.runs)
    line = {
        "zip_bytes": artifact.stat().st_size,
        "files": len(names),
        "boto3_inside": any(n.startswith(("boto3/", "botocore/")) for n in names),
        "submit_import_s": round(submit, 3),
        "submit_baseline_s": round(submit_base, 3),
        "submit_ratio": round(submit / submit_base, 3),
        "submit_vs_botocore_base_ratio": round(submit / sdk_base, 3),
        "worker_import_s": round(worker, 3),
        "worker_baseline_s": round(worker_base, 3),
        "worker_ratio": round(worker / worker_base, 3),
        "worker_to_first_reply_s": round(first_reply, 3),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
