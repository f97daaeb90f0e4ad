"""The completion callback: POST the job view to `callback_url` once the job is terminal.

Sent after the result is stored, so a slow or failing endpoint never puts the result at risk; the
outcome (status or error) is recorded on the job. Sent from a thread: urllib blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from typing import Callable

from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.logs import log_event
from core.models import Job, JobView

TIMEOUT_S = 10.0


class Callbacks:
    def __init__(self, ledger: Ledger, *, store_io: Offload, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.store_io = store_io
        self.clock = clock

    async def send(self, job: Job) -> None:
        url = job.request.callback_url or ""
        body = JobView.of(job).model_dump_json().encode()
        req = urllib.request.Request(
            url, data=body, method="POST",
            headers={"content-type": "application/json", "x-alto-job-id": job.id, "x-alto-trace-id": job.trace_id},
        )
        record: dict[str, object] = {"url": url, "at": self.clock()}
        try:
            record["status"] = await asyncio.to_thread(_post, req)
        except Exception as e:
            record["error"] = str(e)[:500]
            log_event("job.callback_failed", logging.WARNING, error=record["error"])
        try:
            await self.store_io(self.ledger.record_callback, job.id, record)
        except Exception as e:  # the result is stored; only the record of its callback is missing
            log_event("job.callback_record_failed", logging.WARNING, error=str(e)[:300])


def _post(req: urllib.request.Request) -> int:
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 (scheme validated at submit)
        return int(resp.status)
