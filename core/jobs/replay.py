"""Replay: the one path that queues a failed, dead-lettered or cancelled job again, whatever the runtime.

The HTTP API, the CLI and every cloud's operator call it, so a replay answers alike everywhere: 404 for a
job that isn't there, 409 for one that can't be replayed (not ended, a call still in flight, a workflow
where no workflow engine runs), 503 when the job was queued again but its message could not be sent.
"""

from __future__ import annotations

from collections.abc import Callable

from core.config.api import ApiSettings
from core.errors import InputError
from core.jobs.ledger import Ledger, check_replayable
from core.jobs.submit import send_or_raise
from core.logs import log_event
from core.models import Job
from core.ports import SendQueue


class Replays:
    def __init__(
        self,
        settings: ApiSettings,
        ledger: Ledger,
        queue: SendQueue,
        *,
        resume_workflow: Callable[[Job], Job] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.queue = queue
        self.resume_workflow = resume_workflow  # where workers run: a workflow resumes at the step it stopped in

    def replay(self, job_id: str, *, enqueue: bool = True) -> Job:
        """Queue the job again with a fresh attempt budget (after an operator fix). Raises NotFound,
        InputError (409: not replayable here), ConflictError (it kept changing: try again) or
        QueueUnavailable (queued again, its message not sent: the reconciler sends it)."""
        current = self.ledger.load(job_id)
        if current is not None and current.request.workflow is not None:
            if self.resume_workflow is None:
                raise InputError(
                    f"job {job_id} is a workflow: replay it where workers run (alto dlq replay), which "
                    "resumes it at the step it stopped in",
                    status=409,
                )
            if current.workflow is not None:  # begun: resume it step by step
                check_replayable(current)  # before its children are touched
                return self.resume_workflow(current)
        job = self.ledger.replay(job_id)
        if enqueue:
            self._send(job)
        log_event("job.replayed", job_id=job.id, trace_id=job.trace_id)
        return job

    def _send(self, job: Job) -> None:
        after = int(self.settings.governance.reconcile_after_s)
        send_or_raise(
            self.queue,
            job,
            lambda error: (
                f"job {job.id} is queued again but the queue rejected its message ({error}); the "
                f"reconciler will send it within {after} s (replaying it again answers 409 meanwhile)"
            ),
        )
