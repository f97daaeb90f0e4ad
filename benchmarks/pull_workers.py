"""Drain a queue of N jobs through 1, 2 and 4 `alto worker` processes, on moto's SQS (with DynamoDB and S3) and on
the Pub/Sub emulator (with Firestore and a fake Cloud Storage), against the fake provider (50 ms a call), next to the
function-style handler on the same queue and the same number of processes: a Lambda SQS event source (batches of
ten, one invocation at a time per process, deletes after the batch) and a Pub/Sub push function instance
(infra/gcp's worker concurrency, 16 deliveries at once). Prints jobs/s, the scaling ratio to 1 process and pull/function.

    python benchmarks/pull_workers.py --jobs 400
Stores and queues are local stand-ins: their speed is not the cloud's, so read the ratios, not the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pull_rigs import AwsRig, GcpRig, Rig, gcp_emulators, pull_config  # noqa: E402


def calls(url: str) -> int:
    with urllib.request.urlopen(url + "/_stats") as r:
        return int(json.loads(r.read())["stats"].get("calls", 0))


def function_style(cloud: str) -> None:
    """One "function instance": the platform's delivery loop around the cloud's own worker handler code."""
    stop = False

    def stopping(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    step = _lambda_batch if cloud == "aws" else _push_one
    while not stop:
        step()


def _lambda_batch() -> None:
    """What the SQS event source does: receive up to ten, invoke the worker handler, delete all but its failures."""
    from adapters.aws import handlers

    queue = handlers.get_app().queue
    client = queue._client()  # type: ignore[attr-defined]
    got = client.receive_message(
        QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
    ).get("Messages", [])
    if not got:
        return
    records = [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
         "attributes": m.get("Attributes", {})}
        for m in got
    ]  # fmt: skip
    failed = {f["itemIdentifier"] for f in handlers.worker({"Records": records}, _Context())["batchItemFailures"]}
    done = [
        {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
        for i, r in enumerate(records)
        if r["messageId"] not in failed
    ]
    if done:
        client.delete_message_batch(QueueUrl=queue.url, Entries=done)


PUSH_CONCURRENCY = 16  # infra/gcp/variables.tf worker_concurrency


def _push_one() -> None:
    """What a push subscription does for a gen2 function instance at infra/gcp's concurrency: up to 16 deliveries
    at once through the worker function's own path (run_batch), each acked or nacked."""
    from adapters.gcp import clients
    from adapters.gcp.app import get_app
    from core.entrypoints.consumer import run_batch

    app = get_app()
    sub = f"projects/{os.environ['ALTO_GCP_PROJECT']}/subscriptions/{os.environ['ALTO_SUBSCRIPTION']}"
    request = {"subscription": sub, "max_messages": PUSH_CONCURRENCY}
    got = clients.subscriber().pull(request=request, timeout=5).received_messages
    if not got:
        return
    deliveries = [
        app.queue.delivery(r.message.message_id, r.message.data, dict(r.message.attributes), r.delivery_attempt)  # type: ignore[attr-defined]
        for r in got
    ]
    ack_ids = [r.ack_id for r in got]
    try:
        run_batch(app.service, app.queue, deliveries, deadline=time.time() + 60)
        clients.subscriber().acknowledge(request={"subscription": sub, "ack_ids": ack_ids})
    except Exception:  # a retry: the push subscription would redeliver these
        clients.subscriber().modify_ack_deadline(
            request={"subscription": sub, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
        )


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """User plus system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def drain(rig: Rig, url: str, jobs: int, processes: int, mode: str) -> tuple[float, float]:
    """(jobs/s, worker CPU ms a job) while draining: N jobs queued first, then `processes` workers started; timed
    from the provider's first call to its Nth (process start-up left out for both kinds: a Lambda's cold start and a
    container's are paid differently, and the comparison is of the steady drain)."""
    rig.submit([f"bench {i}" for i in range(jobs)])
    before = calls(url)
    argv = [sys.executable, str(Path(__file__).resolve()), "--function-style", rig.cloud]
    started = time.monotonic()
    procs = [
        rig.start_worker()[0] if mode == "pull" else subprocess.Popen(argv, env=rig.env, cwd=ROOT)
        for _ in range(processes)
    ]
    first, cpu_at_first = None, 0.0
    try:
        while (done := calls(url) - before) < jobs:
            if first is None and done:
                first, cpu_at_first = time.monotonic(), cpu_s(procs)
            if time.monotonic() - started > 600:
                raise SystemExit(f"{mode} x{processes} on {rig.cloud} did not drain {jobs} jobs in 600 s")
            time.sleep(0.02)
        elapsed, cpu = time.monotonic() - (first or started), cpu_s(procs) - cpu_at_first
        return (jobs - 1) / elapsed, 1000 * cpu / (jobs - 1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from moto.server import ThreadedMotoServer

    from core.testing.fake_anthropic import ServerThread, spawn
    from core.testing.servers import free_port
    from tests.fakes.gcs import FakeGcs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every call otherwise
    tmp = Path(tempfile.mkdtemp(prefix="alto-pull-bench-"))
    results: dict[str, Any] = {"jobs": args.jobs, "latency_s": args.latency}
    with ExitStack() as stack:
        fake, url = spawn("--latency", str(args.latency))
        stack.callback(fake.terminate)
        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        makers = {"aws": lambda d: AwsRig(d, f"http://127.0.0.1:{port}")}
        if "gcp" in args.clouds:
            hosts = stack.enter_context(gcp_emulators(tmp, Path(args.gcloud_sdk)))
            os.environ.update(hosts)  # the rigs' own admin clients find the emulators there
            gcs = stack.enter_context(ServerThread(FakeGcs()))
            makers["gcp"] = lambda d: GcpRig(d, hosts, gcs.url)
        for cloud in args.clouds:
            results[cloud] = {}
            for mode in ("pull", "function"):
                rates, cpu = {}, {}
                for n in args.procs:
                    rig = makers[cloud](Path(tempfile.mkdtemp(dir=tmp)))
                    rig.configure({**pull_config(url, visibility_s=30, concurrency=args.concurrency),
                                   "logging": {"level": "ERROR"}})  # fmt: skip
                    with _environ(rig.env):
                        rate, ms = drain(rig, url, args.jobs, n, mode)
                    rates[n], cpu[n] = round(rate, 1), round(ms, 2)
                results[cloud][mode] = rates
                results[cloud][f"{mode}_cpu_ms_per_job"] = cpu
            pull, function = results[cloud]["pull"], results[cloud]["function"]
            results[cloud]["pull_scaling"] = {n: round(pull[n] / pull[args.procs[0]], 2) for n in args.procs}
            results[cloud]["pull_vs_function"] = {n: round(pull[n] / function[n], 2) for n in args.procs}
            report(cloud, results[cloud])  # as each cloud ends: a long run shows what it has
    return results


class _environ:
    """The rig's environment in this process too: the in-process app's clients read their endpoints from it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.saved = env, dict(os.environ)

    def __enter__(self) -> None:
        os.environ.update(self.env)

    def __exit__(self, *_: Any) -> None:
        os.environ.clear()
        os.environ.update(self.saved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=400)
    p.add_argument("--procs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    # ten, as a Lambda batch: the local stand-ins saturate near 30 jobs/s here, and more in flight only queues on them
    p.add_argument("--concurrency", type=int, default=10, help="jobs in flight per pull worker")
    p.add_argument("--latency", type=float, default=0.05, help="the fake provider's seconds per call")
    p.add_argument("--clouds", type=lambda s: s.split(","), default=["aws", "gcp"])
    p.add_argument("--gcloud-sdk", default="/usr/lib/google-cloud-sdk")
    p.add_argument("--function-style", choices=["aws", "gcp"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.function_style:
        return function_style(args.function_style)
    print(json.dumps(run(args)))


def report(cloud: str, r: dict[str, Any]) -> None:
    print(f"{cloud}: jobs/s by processes  pull {r['pull']}  function-style {r['function']}", file=sys.stderr)
    print(f"{cloud}: pull scaling {r['pull_scaling']}  pull/function {r['pull_vs_function']}", file=sys.stderr)
    print(
        f"{cloud}: worker CPU ms a job  pull {r['pull_cpu_ms_per_job']}  function-style {r['function_cpu_ms_per_job']}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
