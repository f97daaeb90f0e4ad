"""The completion callback as its own queued delivery: once a job is terminal (succeeded, failed or
dead-lettered) its callback is armed by the ledger and a `kind: callback` message is queued; the
delivery POSTs the job view, signed, to a target the policy allows, and either records it delivered,
or defers itself with backoff until `callbacks.max_tries` is used up. It never holds up the job: the
result is stored before the callback is even queued, and its outcome shows in the job view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from core.config.api import ApiSettings
from core.jobs.callback_record import pending_callback, record_try
from core.jobs.ledger import Ledger
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome
from core.jobs.submit import queue_callback
from core.logs import log_event
from core.models import CallbackState, Job, QueueMessage
from core.ports import Secrets, SendQueue
from core.webhooks import signing
from core.webhooks.sender import post
from core.webhooks.targets import Policy

LEASE_MARGIN_S = 2.0  # the outcome is written and the message settled after the POST (at most a quarter of it)


class Callbacks:
    def __init__(
        self,
        settings: ApiSettings,
        ledger: Ledger,
        queue: SendQueue,
        secrets: Secrets,
        *,
        store_io: Offload,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = settings.callbacks
        self.ledger = ledger
        self.queue = queue
        self.secrets = secrets
        self.policy = Policy(settings.callbacks.allow, nat64_prefixes=settings.callbacks.nat64_prefixes)
        self.store_io = store_io
        self.clock = clock

    def enqueue(self, job: Job, delay_s: float = 0.0) -> None:
        """Queue the delivery of an armed callback (a job that just became terminal)."""
        queue_callback(self.queue, job, delay_s)

    async def deliver(self, msg: QueueMessage, *, deadline: float | None = None) -> Outcome:
        """POST the job's view once, within `callbacks.timeout_s` and inside the delivery's own `deadline` (the
        message's lease or the invocation's end), so the queue never hands the same event to a second worker
        while this one is still sending it."""
        left = self.config.timeout_s
        if deadline is not None:
            window = deadline - self.clock()
            left = min(left, window - min(LEASE_MARGIN_S, window * 0.25))
        if left < 0.2:
            return Outcome("defer", delay_s=1.0, detail="too little of the delivery's lease left to call back")
        job = await self.store_io(self.ledger.load, msg.job_id)
        cb = pending_callback(job, msg.callback_id) if job is not None else None
        if job is None or cb is None:
            return Outcome("ack", detail="no pending callback")
        view = job.callback_views.get(cb.id)
        if view is None and job.status.value != cb.event:  # moved on since, unrecorded: nothing true to send
            return Outcome("ack", detail="the job moved on from the state this callback reports")
        body = (view or self.ledger.views(job).model_dump_json()).encode()
        headers = {
            "content-type": "application/json",
            "x-alto-job-id": job.id,
            "x-alto-trace-id": job.trace_id,
            **signing.headers(self._secret(job.tenant), cb.id, int(self.clock()), body),
        }
        sent = await asyncio.to_thread(post, cb.url, body, headers, policy=self.policy, timeout_s=left)
        refused = sent.error is not None and sent.error.startswith("refused")
        updated = await self.store_io(
            record_try,
            self.ledger,
            job.id,
            status_code=sent.status_code,
            error=sent.error,
            max_tries=self.config.max_tries,
            give_up=refused,
            callback_id=cb.id,
        )
        state = _same(updated, cb.id)
        if state is None or state.state != "pending":
            level = logging.INFO if sent.ok else logging.WARNING
            log_event(
                "job.callback_" + (state.state if state else "settled"),
                level,
                status_code=sent.status_code,
                error=sent.error,
                tries=state.tries if state else None,
            )
            return Outcome("ack", detail=f"callback {state.state if state else 'settled'}")
        delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (state.tries - 1))
        log_event("job.callback_retry", logging.WARNING, error=sent.error, tries=state.tries, delay_s=delay)
        return Outcome("defer", delay_s=delay, detail="callback retry")

    def _secret(self, tenant: str) -> str | None:
        cfg = self.settings.tenants.get(tenant)
        return self.secrets.resolve(cfg.webhook_secret) if cfg is not None and cfg.webhook_secret else None


def _same(job: Job | None, callback_id: str) -> CallbackState | None:
    """The callback `callback_id` after its try was recorded (an earlier one that settled has left the job,
    so it reads as settled)."""
    if job is None:
        return None
    if job.callback is not None and job.callback.id == callback_id:
        return job.callback
    return next((cb for cb in job.earlier_callbacks if cb.id == callback_id), None)
