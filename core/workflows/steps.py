"""A workflow parent's named transitions, each one compare-and-set through `core.jobs.ledger.Ledger.write`.

The fan-in is `count_child`: a finished child is added to its step's `done` set in one conditional write,
so of two children finishing at the same instant exactly one write sees the round complete (and wakes the
parent), and a child redelivered after it finished finds itself counted and changes nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from core.config.workflows import WorkflowConfig
from core.errors import NotFound
from core.jobs.changes import Change
from core.jobs.ledger import Ledger, Wrote, check_replayable
from core.jobs.usage import total
from core.models import ErrorClass, Job, JobError, JobStatus, StepState, Usage, WorkflowState
from core.safety.record import SafetyRecord


class Counted(NamedTuple):
    parent: Job | None
    wake: bool  # the parent must advance: this write (or an earlier one whose wake-up may be lost) settled a round
    ended: bool  # this write ended the workflow (a child failed under `on_child_failure: fail`)


def child_id(parent_id: str, step: int, round_: int, node: int) -> str:
    """Deterministic, so creating a child twice conflicts instead of running twice."""
    return f"{parent_id}-s{step}r{round_}n{node}"


class WorkflowSteps:
    def __init__(self, ledger: Ledger, workflows: dict[str, WorkflowConfig]) -> None:
        self.ledger = ledger
        self.workflows = workflows

    def begin(self, parent: Job, name: str, config: WorkflowConfig) -> Wrote:
        state = WorkflowState(name=name, steps=[StepState(id=s.id) for s in config.steps])

        def change(j: Job) -> None:
            j.workflow = state

        return self.ledger.write(parent, JobStatus.running, change)

    def open_round(
        self, parent: Job, step: int, round_: int, nodes: int, inputs: list[str], safety: SafetyRecord | None = None
    ) -> Wrote:
        """The round's children are made; `safety`: the workflow's record with their values joined to its own (None:
        as it is)."""

        def change(j: Job) -> None:
            assert j.workflow is not None
            if safety is not None:
                j.safety = safety
            s = j.workflow.steps[step]
            s.status, s.round, s.nodes, s.done, s.inputs = "running", round_, nodes, {}, inputs
            s.rounds = [*s.rounds[:round_], nodes]
            s.total = sum(s.rounds)

        return self.ledger.write(parent, JobStatus.running, change)

    def close_step(self, parent: Job, step: int, outputs: list[str]) -> Wrote:
        """The step is done; its output is the results of `outputs` (child ids); the next one is current."""

        def change(j: Job) -> None:
            assert j.workflow is not None
            s = j.workflow.steps[step]
            s.status, s.outputs = "succeeded", outputs
            j.workflow.current = step + 1

        return self.ledger.write(parent, JobStatus.running, change)

    def succeed(self, parent: Job, text: str) -> Wrote:
        def change(j: Job) -> None:
            j.result_text, j.error, j.finished_at = text, None, self.ledger.clock()
            j.usage = workflow_usage(j)

        return self.ledger.write(parent, JobStatus.succeeded, change)

    def fail(self, parent: Job, message: str, step: int | None = None) -> Wrote:
        return self.ledger.write(parent, JobStatus.failed, _failing(message, step, self.ledger.clock()))

    def reopen(self, parent_id: str, redo: set[str]) -> Job:
        """An operator's replay of a failed or dead-lettered workflow: back to running at the step it stopped
        in, with the children in `redo` (its failed ones, replayed by the caller) taken out of the fan-in set."""

        def step(parent: Job | None) -> Wrote:
            if parent is None or parent.workflow is None:
                raise NotFound(f"workflow job {parent_id} not found")
            check_replayable(parent)

            def change(j: Job) -> None:
                assert j.workflow is not None
                s = j.workflow.steps[j.workflow.current]
                s.done = {c: st for c, st in s.done.items() if c not in redo}  # their usage stays until recounted
                s.succeeded = sum(1 for st in s.done.values() if st == JobStatus.succeeded.value)
                s.failed = len(s.done) - s.succeeded
                s.gaps = [g for g in s.gaps if g.split(" ")[0] not in redo]
                s.status = "running" if s.nodes else "pending"
                j.error, j.finished_at = None, None

            return self.ledger.write(parent, JobStatus.queued, change)

        job = self.ledger.retrying(parent_id, step)
        assert job is not None
        return job

    def count_child(self, child: Job) -> Counted:
        """Add a terminal child to its step's fan-in set (the conditional write). A child of an ended
        workflow still has its cost counted: every call of every step is in the parent's usage."""
        ref = child.parent
        assert ref is not None and child.status.terminal
        outcome = {"wake": False, "ended": False}

        def step(parent: Job | None) -> Wrote | bool | None:
            if parent is None or parent.workflow is None or ref.step >= len(parent.workflow.steps):
                return None
            s = parent.workflow.steps[ref.step]
            if child.id in s.done or s.round != ref.round or (s.status != "running" and not parent.status.terminal):
                outcome["wake"] = s.status == "settling" and not parent.status.terminal
                return None
            config = self.workflows.get(parent.workflow.name)
            policy = config.steps[ref.step].on_child_failure if config else "fail"
            if parent.status.terminal or child.status is JobStatus.succeeded or policy == "skip":
                if not self.ledger.write(parent, parent.status, _counting(child, ref.step)):
                    return False
                outcome["wake"] = s.status == "settling" and not parent.status.terminal
                return True
            message = f"step '{s.id}': child {child.id} {child.status.value}: " + (
                child.error.message if child.error else "no error recorded"
            )
            counting, failing = _counting(child, ref.step), _failing(message, ref.step, self.ledger.clock())

            def count_and_fail(j: Job) -> None:
                counting(j)
                failing(j)

            written = self.ledger.write(parent, JobStatus.failed, count_and_fail)
            outcome["ended"] = bool(written)
            return written

        parent = self.ledger.retrying(ref.parent_id, step)
        return Counted(parent, outcome["wake"], outcome["ended"])


def workflow_usage(job: Job) -> Usage:
    """The sum of every step's children: what the workflow cost."""
    assert job.workflow is not None
    return total([s.usage for s in job.workflow.steps])


def _counting(child: Job, step: int) -> Change:
    def change(j: Job) -> None:
        assert j.workflow is not None
        s = j.workflow.steps[step]
        s.done[child.id] = child.status.value
        s.billed[child.id] = child.usage  # the child's whole usage: replayed and counted again, it replaces
        s.usage = total(list(s.billed.values()))
        if child.status is JobStatus.succeeded:
            s.succeeded += 1
        else:
            s.failed += 1
            s.gaps.append(f"{child.id} {child.status.value}: {child.error.message if child.error else '?'}"[:500])
        if s.status == "running" and len(s.done) >= s.nodes and not j.status.terminal:
            s.status = "settling"
        j.usage = workflow_usage(j)

    return change


def _failing(message: str, step: int | None, now: float) -> Change:
    def change(j: Job) -> None:
        j.error, j.result_text, j.finished_at = JobError(error_class=ErrorClass.permanent, message=message), None, now
        if j.workflow is not None:
            if step is not None:
                j.workflow.steps[step].status = "failed"
            j.usage = workflow_usage(j)

    return change
