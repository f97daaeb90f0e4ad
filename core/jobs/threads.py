"""Threads: a tenant's conversation kept by the service, so that a client sends only its new turn.

A thread is one state record, `thread:{tenant}:{id}`: its epoch (a new one after an erase), the last turn number
handed out, the number settled through, the jobs still to settle, and the succeeded jobs whose turns are its
history, in order. The turns themselves stay in those jobs' records (the request's turns, then the reply), so the
record stays small on every store. A job takes the next number at submit and runs only once every earlier one is
settled: it waits, spending no attempt, while one is unfinished, whatever order the queue delivers them in.
Settling is lazy and idempotent: whoever finds an earlier job terminal settles it (a success adds its turns, any
other end adds nothing), so a worker killed between a job's end and its settling loses no turn and adds none twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from core.conversation import Turn
from core.errors import InputError
from core.governance.state import mutate
from core.models import Job, JobRequest, JobStatus, ThreadRef
from core.ports import JobStore, StateRecord, StateStore

MAX_EXCHANGES = 400  # jobs kept as a thread's history: its record stays under every store's value limit
ORPHAN_S = 120.0  # a number whose job was never stored (its submit failed after taking it) is skipped after this
THREAD_TTL_S = 30 * 86400  # as long as the jobs it points to are kept
ERASED = "[erased with its thread]"


Sealing = Callable[[str | None, str], str]  # (the thread's sealed table or None, its epoch) -> the table sealed anew


class Wait(NamedTuple):
    reason: str


def key(tenant: str, thread_id: str) -> str:
    return f"thread:{tenant}:{thread_id}"


def turns_of(job: Job) -> list[Turn]:
    """The turns a succeeded job adds to its thread: its own (the prompt, or its messages), then the reply."""
    request = job.request
    own = [m.turn() for m in request.messages] if request.messages else [Turn("user", request.prompt)]
    reply = job.reply
    calls = tuple(reply.tool_calls) if reply is not None else ()
    return [*own, Turn("assistant", job.result_text or "", calls)]


class Threads:
    def __init__(self, state: StateStore, store: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.store = store
        self.clock = clock

    def open(self, tenant: str, request: JobRequest, job_id: str, *, sealing: Sealing | None = None) -> ThreadRef:
        """The next turn number of the request's thread, for a job about to be stored (the thread made if new).
        `sealing` adds the job's redacted values to the thread's sealed table (so every turn restores them)."""
        assert request.thread_id is not None

        def take(rec: StateRecord | None) -> tuple[dict[str, Any], ThreadRef]:
            fresh: dict[str, Any] = {"epoch": uuid.uuid4().hex[:12], "seq": 0, "done": 0}
            v: dict[str, Any] = dict(rec.value) if rec is not None else fresh
            if len(v.get("kept", [])) + len(v.get("pending", {})) >= MAX_EXCHANGES:
                raise InputError(
                    f"thread {request.thread_id!r} holds {MAX_EXCHANGES} exchanges, the most one thread keeps: start "
                    "a new thread (or erase this one with DELETE /v1/threads/ID)",
                    field="thread_id",
                )
            seq = int(v["seq"]) + 1
            v["seq"], v["pending"] = seq, {**v.get("pending", {}), str(seq): [job_id, self.clock()]}
            if sealing is not None:
                v["sealed"] = sealing(v.get("sealed"), str(v["epoch"]))
            return v, ThreadRef(id=request.thread_id or "", epoch=v["epoch"], seq=seq)

        return mutate(self.state, key(tenant, request.thread_id), take, ttl_s=THREAD_TTL_S)

    def history(self, job: Job) -> tuple[Turn, ...] | Wait | str:
        """The thread's turns before this job, once every earlier job is settled; a Wait while one is not; a
        message (the job can't run) when the thread was erased since it was submitted."""
        ref = job.thread
        assert ref is not None
        rec = self.state.get(key(job.tenant, ref.id))
        if rec is None or rec.value["epoch"] != ref.epoch:
            return f"thread {ref.id!r} was erased after this job was submitted; submit it again to start a new one"
        if int(rec.value["done"]) >= ref.seq:  # it ended once (a replay): later turns may already follow it
            return (
                f"this job's turn of thread {ref.id!r} ended already and later turns may follow it: submit its "
                "prompt again as a new turn of the thread instead of replaying it"
            )
        if int(rec.value["done"]) < ref.seq - 1:
            blocked = self.settle(job.tenant, ref, upto=ref.seq - 1)
            if blocked is not None:
                return blocked
            rec = self.state.get(key(job.tenant, ref.id))
            assert rec is not None
        return self._turns(rec)

    def _turns(self, rec: StateRecord) -> tuple[Turn, ...]:
        """The turns of the thread's kept jobs, in order (a job past its retention is gone, and with it its turns)."""
        turns: list[Turn] = []
        for job_id in rec.value.get("kept", []):
            kept = self.store.get(job_id)
            if kept is not None and kept.status is JobStatus.succeeded:
                turns += turns_of(kept)
        return tuple(turns)

    def settle(self, tenant: str, ref: ThreadRef, *, upto: int) -> Wait | None:
        """Settle every number through `upto` whose job has ended; a Wait naming the first that hasn't."""
        rec = self.state.get(key(tenant, ref.id))
        if rec is None or rec.value["epoch"] != ref.epoch:
            return None
        ends: dict[int, str | None] = {}  # number -> the job id to keep (None: keep nothing)
        for seq in range(int(rec.value["done"]) + 1, upto + 1):
            entry = rec.value.get("pending", {}).get(str(seq))
            outcome = self._ended(seq, entry, ref)
            if isinstance(outcome, Wait):
                self._apply(tenant, ref, ends)
                return outcome
            ends[seq] = outcome
        self._apply(tenant, ref, ends)
        return None

    def _ended(self, seq: int, entry: list[Any] | None, ref: ThreadRef) -> str | Wait | None:
        if entry is None:
            return None  # settled by another worker meanwhile
        job_id, opened_at = entry
        job = self.store.get(job_id)
        if job is None:
            if self.clock() - float(opened_at) > ORPHAN_S:
                return None
            return Wait(f"thread {ref.id}: waiting for turn {seq} to be stored")
        if job.thread is None or job.thread.seq != seq or job.thread.epoch != ref.epoch:
            return None  # the number went to a submit that found its job already stored (an idempotent retry)
        if not job.status.terminal:
            return Wait(f"thread {ref.id}: waiting for job {job_id} (turn {seq}) to finish")
        return job_id if job.status is JobStatus.succeeded else None

    def _apply(self, tenant: str, ref: ThreadRef, ends: dict[int, str | None]) -> None:
        """Record the settled numbers in order, each once, whoever else is settling them too."""
        if not ends:
            return

        def move(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            if rec is None or rec.value["epoch"] != ref.epoch:
                return None, None
            v = dict(rec.value)
            pending, kept, done = dict(v.get("pending", {})), list(v.get("kept", [])), int(v["done"])
            for seq in sorted(ends):
                if seq != done + 1:
                    continue  # already settled (or not next): nothing changes
                if (kept_id := ends[seq]) is not None:
                    kept.append(kept_id)
                pending.pop(str(seq), None)
                done = seq
            if done == int(v["done"]):
                return None, None
            v.update(pending=pending, kept=kept, done=done)
            return v, None

        mutate(self.state, key(tenant, ref.id), move, ttl_s=THREAD_TTL_S)

    def ended(self, job: Job) -> None:
        """A thread job just ended here: settle its number now, so that the next one need not look it up."""
        if job.thread is not None and job.status.terminal:
            self.settle(job.tenant, job.thread, upto=job.thread.seq)

    def summarized(self, tenant: str, ref: ThreadRef, job_id: str) -> None:
        """Note a summary job of the thread, so that erasing the thread blanks its transcript too."""

        def note(rec: StateRecord | None) -> tuple[dict[str, Any] | None, None]:
            if rec is None or rec.value["epoch"] != ref.epoch or job_id in rec.value.get("summaries", []):
                return None, None
            return {**rec.value, "summaries": [*rec.value.get("summaries", []), job_id]}, None

        mutate(self.state, key(tenant, ref.id), note, ttl_s=THREAD_TTL_S)

    def sealed(self, tenant: str, thread_id: str) -> tuple[str, str] | None:
        """The thread's sealed table of redacted values and the epoch it is bound to, if it has one."""
        rec = self.state.get(key(tenant, thread_id))
        if rec is None or not rec.value.get("sealed"):
            return None
        return str(rec.value["sealed"]), str(rec.value["epoch"])

    def view(self, tenant: str, thread_id: str) -> dict[str, Any] | None:
        rec = self.state.get(key(tenant, thread_id))
        if rec is None or (rec.value.get("erased_at") and not rec.value.get("kept") and not rec.value.get("pending")):
            return None
        return {
            "thread_id": thread_id,
            "turns": list(self._turns(rec)),
            "jobs": list(rec.value.get("kept", [])),
            "pending": [v[0] for _, v in sorted(rec.value.get("pending", {}).items(), key=lambda kv: int(kv[0]))],
        }

    def erase(self, tenant: str, thread_id: str) -> list[str] | None:
        """Forget the thread and blank its jobs' turns (their prompts, messages and replies); the ids of the jobs
        blanked, or None when there is no such thread. A job of it still queued is refused when it comes up."""
        rec = self.state.get(key(tenant, thread_id))
        if rec is None:
            return None
        pending = (v[0] for v in rec.value.get("pending", {}).values())
        ids = [*rec.value.get("kept", []), *pending, *rec.value.get("summaries", [])]
        if not ids and rec.value.get("erased_at"):
            return None

        def forget(_: StateRecord | None) -> tuple[dict[str, Any], None]:
            # a new epoch rather than a delete: an update is what every role that erases may do, and a job of the
            # old epoch still queued finds it and is refused
            return {"epoch": uuid.uuid4().hex[:12], "seq": 0, "done": 0, "erased_at": self.clock()}, None

        mutate(self.state, key(tenant, thread_id), forget, ttl_s=THREAD_TTL_S)
        for job_id in ids:
            self._blank(job_id)
        return ids

    def _blank(self, job_id: str) -> None:
        for _ in range(5):  # a worker's write may land in between: read again and blank again
            job = self.store.get(job_id)
            if job is None:
                return
            job.request = job.request.model_copy(update={"prompt": ERASED, "messages": None, "system": None})
            job.result_text, job.citations = None, []
            if job.reply is not None:
                job.reply = job.reply.model_copy(update={"text": "", "tool_calls": []})
            if job.safety is not None:  # the redacted values go with the turns (the findings hold none)
                job.safety = job.safety.model_copy(update={"sealed": None})
            if self.store.update(job, expected_version=job.version):
                return
