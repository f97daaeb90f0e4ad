"""The record of a job's callback deliveries: which pending callback a message names, and one try of it
written on the job (delivered, pending with tries left, or failed)."""

from __future__ import annotations

from core.jobs.ledger import Ledger, Wrote
from core.models import CallbackState, Job


def pending_callback(job: Job, callback_id: str | None = None) -> CallbackState | None:
    """The pending callback a callback message names (the current one when it names none)."""
    for cb in ([job.callback] if job.callback is not None else []) + job.earlier_callbacks:
        if cb.state == "pending" and ((callback_id is None and cb is job.callback) or cb.id == callback_id):
            return cb
    return None


def record_try(
    ledger: Ledger,
    job_id: str,
    *,
    status_code: int | None,
    error: str | None,
    max_tries: int,
    give_up: bool = False,
    callback_id: str | None = None,
) -> Job | None:
    """Record one delivery of a pending callback (the current one, or the earlier one `callback_id` names):
    delivered, pending (tries left) or failed. An earlier callback leaves the job once settled."""
    now = ledger.clock()

    def tried(cb: CallbackState) -> CallbackState:
        tries = cb.tries + 1
        state = "delivered" if error is None else ("failed" if give_up or tries >= max_tries else "pending")
        return cb.model_copy(
            update={
                "tries": tries,
                "status_code": status_code,
                "error": error,
                "last_at": now,
                "state": state,
                "delivered_at": now if error is None else None,
            }
        )

    def change(j: Job) -> None:
        if j.callback is not None and j.callback.id == (callback_id or j.callback.id):
            j.callback = tried(j.callback)
            settled = j.callback.id if j.callback.state != "pending" else None
        else:
            earlier = [tried(cb) if cb.id == callback_id else cb for cb in j.earlier_callbacks]
            j.earlier_callbacks = [cb for cb in earlier if cb.state == "pending"]
            settled = callback_id if len(j.earlier_callbacks) < len(earlier) else None
        if settled in j.callback_views:
            j.callback_views = {k: v for k, v in j.callback_views.items() if k != settled}

    def step(job: Job | None) -> Wrote | None:
        if job is None or (pending_callback(job, callback_id)) is None:
            return None
        return ledger.write(job, job.status, change)

    return ledger.retrying(job_id, step, tries=3)
