"""The operator's verbs: reconcile stranded jobs, mark what the platform dead-lettered (replay is
`core.jobs.replay`, shared with the API).

Each is safe to run from any entry point at any time: reconcile errs on the side of sending (a second
message is harmless, processing is idempotent), dead-lettering leaves terminal and leased jobs
alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.config.api import ApiSettings
from core.jobs.aftermath import Aftermath
from core.jobs.ledger import Ledger
from core.jobs.submit import send_job
from core.logs import log_event
from core.models import Job, JobStatus, QueueMessage
from core.ports import Delivery, SendQueue


class Operator:
    def __init__(
        self,
        settings: ApiSettings,
        ledger: Ledger,
        queue: SendQueue,
        *,
        aftermath: Aftermath,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.queue = queue
        self.aftermath = aftermath  # a dead-lettered job's callback, a workflow child's fan-in
        self.clock = clock

    def reconcile(self, *, older_than_s: float | None = None, limit: int = 500) -> dict[str, int]:
        """Re-send the message of every job that has been stuck long enough to have lost it.

        A job whose enqueue failed after it was stored, or whose message the platform dropped or
        dead-lettered while a worker held the lease, would otherwise wait forever.
        """
        older = self.settings.governance.reconcile_after_s if older_than_s is None else older_than_s
        now = self.clock()
        counts = {"requeued": 0, "checked": 0}
        if settled := self._bill_lost_calls(now, limit):
            counts["settled"] = settled
        for status in (JobStatus.queued, JobStatus.running):
            for job in self.ledger.store.list(status=status, updated_before=now - older, limit=limit):
                counts["checked"] += 1
                if status is JobStatus.running and job.lease_expires_at and job.lease_expires_at > now - older:
                    continue  # a live (or recently expired) lease: its worker or the queue still owns it
                if job.waiting is not None and job.waiting.until > now - older:
                    continue  # deferred, not lost: its delayed message is still due (re-sending multiplies it)
                try:
                    requeued = self._requeue(job)
                except Exception as e:  # one job the store or queue refuses must not stop the sweep
                    log_event("reconcile.job_failed", logging.ERROR, job_id=job.id, error=repr(e)[:500])
                    counts["failed"] = counts.get("failed", 0) + 1
                    continue
                counts["requeued"] += requeued
        return counts

    def _bill_lost_calls(self, now: float, limit: int) -> int:
        """Cancelled jobs whose call in flight never reported back (its worker died): the attempt is `lost`,
        at its estimated cost, so every call the provider may have billed is on its job."""
        settled = 0
        for job in self.ledger.store.list(status=JobStatus.cancelled, updated_before=now, limit=limit):
            if job.call_in_flight_until is None or job.call_in_flight_until > now:
                continue
            try:
                settled += self.ledger.bill_lost_call(job, getattr(self.settings, "models", {}))
            except Exception as e:  # one job the store refuses must not stop the sweep
                log_event("reconcile.job_failed", logging.ERROR, job_id=job.id, error=repr(e)[:500])
        return settled

    def _requeue(self, job: Job) -> int:
        if not self.ledger.touch(job):  # so the next sweep leaves it alone for `older` seconds
            return 0
        send_job(self.queue, job)
        log_event("job.reconciled", logging.WARNING, job_id=job.id, trace_id=job.trace_id, status=job.status.value)
        return 1

    def dead_letter(self, delivery: Delivery) -> Job | None:
        """A message the platform dead-lettered: mark its job, keeping the error state."""
        try:
            msg = QueueMessage.model_validate_json(delivery.body)
        except ValueError:
            log_event("dlq.bad_message", logging.ERROR, message_id=delivery.message_id, body=delivery.body[:2000])
            return None
        # a platform's dead-letter queue counts its own deliveries from 1 again: the message got there
        # after at least the configured number
        deliveries = max(delivery.receive_count, self.settings.queue.max_receives)
        reason = f"dead-lettered by the queue after {deliveries} deliveries"
        marked = self.ledger.dead_letter_by_queue(msg.job_id, reason)
        if marked is None:  # missing, terminal, or leased by a live worker: left alone
            return self.ledger.load(msg.job_id)
        log_event("job.dead_lettered", logging.ERROR, job_id=marked.id, trace_id=marked.trace_id, reason=reason)
        self.aftermath.after(marked)  # marked: this write ended it
        return marked
