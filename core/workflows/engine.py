"""The workflow engine: advancing a parent job, and counting its children in as they finish.

A parent's delivery runs `advance`: begin (queued -> running with its steps), then for the current step
open a round (create its children with deterministic ids, one compare-and-set on the parent, one queue
message per child), heal a running round (children a crash left uncreated or uncounted), or settle it
(the next reduce level, the next step, or the result). Children are ordinary jobs on the same queue under
the same governance; each one that ends is counted into its parent by its aftermath (`core.jobs.aftermath`),
and the write that completes a round wakes the parent with one message. Every step is safe to repeat: a redelivered parent
message re-runs `advance`, which finds the round already open and changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from core.config.worker import Settings
from core.config.workflows import WorkflowConfig, resolve
from core.errors import InputError, NoRoute
from core.jobs.aftermath import Aftermath
from core.jobs.ledger import REPLAYABLE, Ledger
from core.jobs.offload import Offload
from core.jobs.outcome import Outcome, raced
from core.jobs.submit import send_job
from core.logs import log_event
from core.models import ChildOf, Job, JobRequest, JobStatus
from core.ports import BlobStore, SendQueue
from core.routing import Router
from core.safety.layer import Safety
from core.workflows.max_calls import MaxCalls
from core.workflows.plan import Planner, round_ids
from core.workflows.steps import WorkflowSteps, child_id


class Workflows:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        steps: WorkflowSteps,
        queue: SendQueue,
        blobs: BlobStore,
        router: Router,
        aftermath: Aftermath,
        calls: MaxCalls,
        *,
        store_io: Offload,
        safety: Safety | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.steps = steps
        self.planner = Planner(settings, router, blobs, ledger.load)
        self.queue = queue
        self.aftermath = aftermath  # a parent's ending (its callback), a child's fan-in
        self.calls = calls  # a replay gives the workflow its max_calls again
        self.store_io = store_io
        self.safety = safety  # a step's prompt is screened as a submitted job's is
        self.clock = clock

    async def advance(self, parent: Job) -> Outcome:
        return await self.store_io(self._advance, parent)

    def orphaned(self, child: Job) -> bool:
        """A child not started yet whose workflow ended (cancelled, failed): it never starts."""
        if child.parent is None or child.status is not JobStatus.queued or child.provider_calls:
            return False
        parent = self.ledger.load(child.parent.parent_id)
        if parent is not None and not parent.status.terminal:
            return False
        try:
            cancelled = self.ledger.cancel(child.id)
        except InputError:  # it ended meanwhile
            return True
        self.aftermath.after(cancelled)
        return True

    def replay(self, parent: Job) -> Job:
        """Replay a failed workflow from the step it stopped in: its failed children get a fresh budget
        (the succeeded ones are kept, never paid again), the call budget starts over, the parent is queued."""
        assert parent.workflow is not None
        s = parent.workflow.steps[parent.workflow.current]
        redo = {
            c
            for c in round_ids(parent.id, parent.workflow.current, s.round, s.nodes)
            if (child := self.ledger.load(c)) is not None and child.status in REPLAYABLE
        }
        self.calls.reset(parent.id)
        reopened = self.steps.reopen(parent.id, redo)
        for cid in sorted(redo):
            send_job(self.queue, self.ledger.replay(cid))
        send_job(self.queue, reopened)
        log_event("workflow.replayed", job_id=parent.id, children=len(redo))
        return reopened

    # ------------------------------------------------------------------ advancing the parent

    def _advance(self, parent: Job) -> Outcome:
        found = resolve(
            self.settings.workflows, parent.workflow.name if parent.workflow else str(parent.request.workflow)
        )
        if found is None:
            return self._fail(
                parent,
                f"workflow '{parent.request.workflow}' is not configured on this worker; deploy "
                "the same config to the API and the workers, then `alto dlq replay` it",
            )
        name, config = found
        if parent.workflow is None and not self.steps.begin(parent, name, config):
            return raced()
        try:
            for _ in range(2 * len(config.steps) + 1):  # each pass opens a round (and returns) or settles a step
                outcome = self._step(parent, config)
                if outcome is not None:
                    return outcome
        except (InputError, NoRoute) as e:
            return self._fail(parent, str(e))
        except ValidationError as e:
            return self._fail(parent, f"a step's child request is not valid: {e.errors()[0]['msg']}")
        return raced("workflow kept changing")

    def _step(self, parent: Job, config: WorkflowConfig) -> Outcome | None:
        assert parent.workflow is not None
        k = parent.workflow.current
        s, sc = parent.workflow.steps[k], config.steps[k]
        if s.status == "pending":
            return self._open(parent, config, k, 0, [])
        if s.status == "running":
            return self._heal(parent, config, k)
        ok = [c for c in round_ids(parent.id, k, s.round, s.nodes) if s.done.get(c) == JobStatus.succeeded.value]
        if not ok:
            return self._fail(
                parent,
                f"step '{s.id}': no child succeeded ({len(s.gaps)} skipped: {s.gaps[0] if s.gaps else 'none'})",
                k,
            )
        if sc.reduce is not None and len(ok) > 1:
            return self._open(parent, config, k, s.round + 1, ok)
        return self._close_step(parent, config, k, ok)

    def _close_step(self, parent: Job, config: WorkflowConfig, k: int, outputs: list[str]) -> Outcome | None:
        if not self.steps.close_step(parent, k, outputs):
            return raced()
        log_event("workflow.step_succeeded", step=config.steps[k].id, outputs=len(outputs))
        if k + 1 < len(config.steps):
            return None
        text = self.planner.output(parent, config, config.steps[k].id)
        if not self.aftermath.ended(self.steps.succeed(parent, text), parent):
            return raced()
        log_event(
            "job.succeeded",
            workflow=parent.workflow.name if parent.workflow else None,
            calls=parent.usage.calls,
            cost_usd=parent.usage.cost_usd,
            latency_ms=round(((parent.finished_at or self.clock()) - parent.created_at) * 1000, 1),
        )
        return Outcome("ack", status=JobStatus.succeeded)

    def _open(self, parent: Job, config: WorkflowConfig, k: int, round_: int, over: list[str]) -> Outcome | None:
        sc = config.steps[k]
        if sc.reduce is not None:
            over = self.planner.reduce_inputs(parent, config, k, round_, over)
            if len(over) == 1:  # nothing to combine: the one input is the step's output, with no call
                return self._close_step(parent, config, k, over)
        prompts = self.planner.prompts(parent, config, k, over)
        stream = _streams(parent, config, k, prompts)
        children = [self._child(parent, config, k, round_, n, p, stream=stream) for n, p in enumerate(prompts)]
        for child in children:
            self.ledger.create(child)  # False: created by an earlier try of this same round
        record = self.safety.gathered(parent, children) if self.safety is not None else None
        if not self.steps.open_round(parent, k, round_, len(children), over, record):
            return raced()
        for child in children:
            send_job(self.queue, child)
        log_event("workflow.round_opened", step=sc.id, round=round_, children=len(children))
        return Outcome("ack", status=JobStatus.running, detail=f"step {sc.id}: {len(children)} child job(s) queued")

    def _heal(self, parent: Job, config: WorkflowConfig, k: int) -> Outcome:
        """A running round seen again (a duplicate or reconciled parent message): create the children a
        crash left uncreated, count the finished ones a crash left uncounted."""
        assert parent.workflow is not None
        s = parent.workflow.steps[k]
        ids = round_ids(parent.id, k, s.round, s.nodes)
        missing = []
        for n, cid in enumerate(ids):
            child = self.ledger.load(cid)
            if child is None:
                missing.append(n)
            elif child.status.terminal and cid not in s.done:
                self.aftermath.fan_in(child)
        if missing:
            prompts = self.planner.prompts(parent, config, k, s.inputs)
            stream = _streams(parent, config, k, prompts)
            for n in missing:
                child = self._child(parent, config, k, s.round, n, prompts[n], stream=stream)
                if self.ledger.create(child):
                    send_job(self.queue, child)
        return Outcome(
            "ack", status=JobStatus.running, detail=f"step {s.id}: waiting for {s.nodes - len(s.done)} child(ren)"
        )

    def _child(
        self, parent: Job, config: WorkflowConfig, k: int, round_: int, node: int, prompt: str, *, stream: bool = False
    ) -> Job:
        sc = config.steps[k]
        assert parent.workflow is not None
        request = JobRequest(
            prompt=prompt,
            task=sc.task or parent.request.task,
            collection=sc.collection,
            max_tokens=sc.max_tokens,
            cache=parent.request.cache,
            stream=stream,
            metadata={"workflow": parent.workflow.name, "step": sc.id},
        )
        cid, record = child_id(parent.id, k, round_, node), None
        if self.safety is not None:  # InputError for a block: the workflow fails naming the rule
            request, record = self.safety.step(parent, request, cid)
        now = self.clock()
        return Job(
            id=cid,
            tenant=parent.tenant,
            request=request,
            request_hash=request.fingerprint(),
            trace_id=parent.trace_id,
            created_at=now,
            updated_at=now,
            parent=ChildOf(parent_id=parent.id, step=k, round=round_, node=node, max_calls=config.max_calls),
            safety=record,
        )

    def _fail(self, parent: Job, message: str, step: int | None = None) -> Outcome:
        if not self.aftermath.ended(self.steps.fail(parent, message, step), parent):
            return raced()
        log_event(
            "job.failed",
            logging.WARNING,
            workflow=parent.workflow.name if parent.workflow else None,
            reason=message[:300],
        )
        return Outcome("ack", status=JobStatus.failed, detail=message)


def _streams(parent: Job, config: WorkflowConfig, step: int, prompts: list[str]) -> bool:
    """A streaming workflow streams the one call whose text is its result: the last step's, when it is one."""
    return parent.request.stream and step == len(config.steps) - 1 and len(prompts) == 1
