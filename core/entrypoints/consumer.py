"""The queue consumer: process a delivery and apply its Outcome to the queue, the one mapping every
runtime shares (the local worker loop, the Lambda batch, the Pub/Sub and Service Bus triggers).

`ack` deletes the message; `retry` hands it back after a delay (a delivery that counts toward the
queue's dead-letter threshold); `defer` sends a fresh delayed copy *before* deleting this one, so
waiting for a rate-limit slot or an open circuit never counts toward the DLQ. Cloud runtimes pass a
queue whose `ack` and `release` record what to report to the platform (Lambda's batch item failures,
Pub/Sub's ack or raise, Service Bus's complete or abandon).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from core.event_loops import EventLoop, new_loop
from core.jobs.offload import offload
from core.jobs.outcome import Outcome
from core.jobs.worker_service import WorkerService
from core.logs import log_event
from core.ports import Delivery, JobQueue


async def run_delivery(
    service: WorkerService, queue: JobQueue, delivery: Delivery, *, deadline: float, retry_delay_s: float = 1.0
) -> Outcome:
    """Process one delivery and apply the outcome to `queue`. Never raises for a job-level problem."""
    try:
        outcome = await service.process(delivery, deadline=deadline)
    except Exception as e:  # a bug or a store outage: never lose the message, let it be redelivered
        log_event("worker.crash", logging.ERROR, error=repr(e)[:500], message_id=delivery.message_id)
        outcome = Outcome("retry", delay_s=retry_delay_s, detail="worker error")
    await offload(queue)(_apply, queue, delivery, outcome)
    return outcome


def _apply(queue: JobQueue, delivery: Delivery, outcome: Outcome) -> None:
    """The outcome applied to the message (one call, so an embedded queue does it in one group)."""
    if outcome.action == "ack":
        queue.ack(delivery)
    elif outcome.action == "defer":
        queue.send(delivery.body, delay_s=outcome.delay_s)  # fresh receive count; sent before the ack
        queue.ack(delivery)
    else:
        queue.release(delivery, delay_s=outcome.delay_s)


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop(wanted: EventLoop = "auto") -> asyncio.AbstractEventLoop:
    """The process's event loop (the kind `wanted` picks, when it is made), running in its own daemon thread.

    One loop per process (per Lambda container, per Cloud Functions or Azure Functions instance):
    the provider's async client and its connection pool are bound to it, so it must outlive single
    invocations; and a thread of its own lets invocations arriving on several host threads share it
    safely (run_until_complete from two threads at once would fail).
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = new_loop(wanted)
            threading.Thread(target=loop.run_forever, name="alto-event-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_batch(
    service: WorkerService, queue: JobQueue, deliveries: list[Delivery], *, deadline: float, retry_delay_s: float = 1.0
) -> list[Outcome]:
    """Process deliveries concurrently on the process's loop and wait for them; two copies of one
    message run once (the first carries the job and is redelivered if it fails, so the copy is done).
    Exceptions a queue raises to have a message redelivered propagate to the caller."""
    first: dict[str, Delivery] = {}
    for d in deliveries:
        first.setdefault(d.body, d)

    async def run_all() -> list[Outcome]:
        try:
            return list(
                await asyncio.gather(
                    *(
                        run_delivery(service, queue, d, deadline=deadline, retry_delay_s=retry_delay_s)
                        for d in first.values()
                    )
                )
            )
        finally:  # the platform may freeze the process once the invocation returns
            await asyncio.to_thread(service.metrics.flush)

    return asyncio.run_coroutine_threadsafe(run_all(), event_loop(service.settings.process.event_loop)).result()


async def ascheduled(service: WorkerService, *, older_than_s: float | None = None) -> dict[str, int]:
    """What each cloud's reconcile schedule runs: re-send lost messages, then the batch lane's tick (send due
    batches, apply finished ones), on the loop the caller's jobs run on: the provider clients are bound to it
    (a host that runs async functions on its own loop, as Azure Functions does, calls this one)."""
    counts = await asyncio.to_thread(service.reconcile, older_than_s=older_than_s)
    ticked = await service.batch_tick()
    return {**counts, **{f"batch_{k}": v for k, v in ticked.items()}}


def scheduled(service: WorkerService, *, older_than_s: float | None = None) -> dict[str, int]:
    """`ascheduled` on the process's loop (`event_loop`), where `run_batch` runs the jobs: for synchronous
    entry points (Lambda, Cloud Functions)."""
    loop = event_loop(service.settings.process.event_loop)
    return asyncio.run_coroutine_threadsafe(ascheduled(service, older_than_s=older_than_s), loop).result()
