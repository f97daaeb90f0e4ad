"""A thread's left-out turns summarized (`threads.fit: summary`): a job of its own, made once per span.

When a turn's history no longer fits, the assembly leaves out its oldest turns, ten at a time. With summaries on,
those turns are replaced by a summary instead: an ordinary job (task `threads.summary_task`), so it is routed,
governed and billed like any other, submitted with an idempotency key naming the thread, its epoch and the span, so
every later turn that leaves out the same span reuses it. The turn waits while it runs, spending no attempt; if it
fails, the turns are left out as without summaries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from core.config.threads import ThreadsConfig
from core.conversation import Ask, Turn
from core.errors import AltoError
from core.jobs.offload import Offload
from core.jobs.threads import Threads, Wait
from core.logs import log_event
from core.models import Job, JobRequest, JobStatus

PROMPT = (
    "Summarize the conversation below for the assistant who will continue it: the facts given, what was decided, "
    "what is still open, and anything the user asked to be remembered. Write notes, not a reply.\n\n"
)
Submit = Callable[..., Awaitable[tuple[Job, bool]]]


def transcript(turns: tuple[Turn, ...]) -> str:
    return "\n\n".join(f"{t.role.upper()}: {t.counted()}" for t in turns)


class Summaries:
    def __init__(self, config: ThreadsConfig, submit: Submit, threads: Threads, store_io: Offload) -> None:
        self.config = config
        self.submit = submit  # the service's asubmit: a summary is a job like any other
        self.threads = threads  # which notes it, so that erasing the thread blanks it too
        self.store_io = store_io

    async def replaced(self, job: Job, ask: Ask, dropped: int) -> Ask | Wait | None:
        """The ask with its first `dropped` turns replaced by their summary; a Wait while the summary is made;
        None when it could not be (the turns are then left out)."""
        ref = job.thread
        assert ref is not None
        request = JobRequest(
            prompt=PROMPT + transcript(ask.history[:dropped]),
            task=self.config.summary_task,
            max_tokens=self.config.summary_max_tokens,
            cache=False,
        )
        key = f"thread-summary:{ref.id}:{ref.epoch}:{dropped}"
        try:
            summary, created = await self.submit(job.tenant, request, idempotency_key=key)
        except AltoError as e:  # a spent budget, a queue outage: the turns are left out instead, this time
            log_event("thread.summary_refused", logging.WARNING, thread=ref.id, error=str(e)[:300])
            return None
        if created:
            await self.store_io(self.threads.summarized, job.tenant, ref, summary.id)
        if not summary.status.terminal:
            return Wait(f"thread {ref.id}: waiting for the summary of its first {dropped} turns (job {summary.id})")
        if summary.status is not JobStatus.succeeded or not summary.result_text:
            return None
        head = (
            Turn("user", f"[A summary of this conversation's first {dropped} turns]\n{summary.result_text}"),
            Turn("assistant", "Noted."),
        )
        return replace(ask, history=head + ask.history[dropped:], droppable=2 + max(0, ask.droppable - dropped))

    @staticmethod
    def wanted(config: Any, dropped: int) -> bool:
        return bool(dropped) and config.fit == "summary"
