"""What follows a job's terminal write, in one place: the outcome counted, the metrics reported, the callback
queued, a workflow child counted into its parent, a thread's turn settled, and for an answered job its audit
record.

The ledger's write says whether it ended the job (`Wrote.ended`); the stage that made that write runs
`after` once, in the same storage call, so with the embedded stores the ending, its count and its
callback's message commit together. Every runtime's pipeline, operator and API use this one stage.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.governance.outcomes import OutcomeLedger
from core.jobs.ledger import Wrote
from core.jobs.submit import queue_callback, send_job
from core.logs import log_event
from core.models import Job
from core.observability.metrics import Metrics, job_record
from core.ports import Access, SendQueue

if TYPE_CHECKING:
    from core.jobs.threads import Threads
    from core.observability.audit import AuditLog
    from core.workflows.steps import WorkflowSteps


class Aftermath:
    def __init__(
        self,
        outcomes: OutcomeLedger,
        metrics: Metrics,
        queue: SendQueue,
        store_access: Access,
        *,
        steps: WorkflowSteps | None = None,
        audit: AuditLog | None = None,
        threads: Threads | None = None,
    ) -> None:
        self.outcomes = outcomes
        self.metrics = metrics
        self.queue = queue  # the callback's message, a parent's wake-up
        self.store_access = store_access  # metrics are reported once the ending is durable
        self.steps = steps  # where workflows run: a child's fan-in into its parent
        self.audit_log = audit  # opt-in: what each answered job was sent, and why
        self.threads = threads  # a thread job's turn settled at once (else by the next job of its thread)

    @property
    def audits(self) -> bool:
        """Whether answered jobs get an audit record here (opt-in: `observability.audit`)."""
        return self.audit_log is not None

    def ended(self, wrote: Wrote, job: Job) -> bool:
        """Whether the write landed; if it ended the job, its aftermath has run."""
        if wrote is Wrote.ended:
            self.after(job)
        return bool(wrote)

    def after(self, job: Job) -> None:
        """Everything that follows the write that ended `job` (synchronous: runs where that write ran)."""
        self._count(job)
        queue_callback(self.queue, job)
        if job.parent is not None:
            self.fan_in(job)
        if job.thread is not None and self.threads is not None:
            try:
                self.threads.ended(job)
            except Exception as e:  # the thread's next job settles it instead
                log_event("thread.settle_failed", logging.WARNING, job_id=job.id, error=repr(e)[:300])

    def fan_in(self, child: Job) -> None:
        """Count a terminal child into its parent; wake the parent if that completed a round, or end the
        workflow (and run its aftermath) if the child's failure fails it. Safe to repeat."""
        if self.steps is None or child.parent is None:
            return
        counted = self.steps.count_child(child)
        if counted.parent is None:
            return
        if counted.ended:
            log_event("workflow.failed", logging.WARNING, job_id=counted.parent.id, child=child.id)
            self.after(counted.parent)
        elif counted.wake:
            send_job(self.queue, counted.parent)

    async def audit(self, job: Job, *, system: str, user: str) -> None:
        """The audit record of an answered job (opt-in). A blob store that fails is logged, never fatal."""
        if self.audit_log is None or not job.status.terminal:
            return
        import asyncio  # here: an API function's cold start imports this module and never audits

        try:
            await asyncio.to_thread(self.audit_log.write, job, system=system, user=user)
        except Exception as e:
            log_event("audit.write_failed", logging.ERROR, error=repr(e)[:500])

    def _count(self, job: Job) -> None:
        """The outcome ledger (in the storage group of the ending, where stores group writes), then the
        metrics once that write is durable."""
        try:
            self.outcomes.add(job)
        except Exception as e:  # a dashboard's count is never worth a job's ending: said, and the job goes on
            log_event("outcomes.unrecorded", logging.WARNING, job_id=job.id, error=repr(e)[:300])
        self.store_access.after_commit(lambda: self.metrics.job(job_record(job), job))
