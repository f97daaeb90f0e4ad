"""The local runtime: async worker loops over a pull queue (the embedded one), supervised next to the API
(`alto serve` runs both in one process), and one job run inline (`alto ask`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from core.bootstrap import App
from core.entrypoints.asgi import asgi_app
from core.entrypoints.consumer import run_delivery
from core.entrypoints.http import api_for
from core.errors import ConfigError
from core.jobs.offload import offload
from core.jobs.outcome import Outcome
from core.logs import log_event
from core.models import Job, QueueMessage
from core.ports import DeadLetterFeed, Delivery, PullQueue, SendNotifier
from core.process_tuning import apply_once

DEADLINE_MARGIN_S = 5.0
DEAD_LETTER_CHECK_S = 0.5
CRASHES_TOLERATED = 5  # a worker loop that crashes this often in a minute stops the service (a supervisor sees it)


def _pull_queue(app: App) -> PullQueue:
    if not isinstance(app.queue, PullQueue):
        raise ConfigError(
            f"the local worker loop polls its queue, and {type(app.queue).__name__} is push-only; "
            "run workers on the platform's trigger instead"
        )
    return app.queue


def warm(app: App) -> None:
    """Ready a long-lived worker process: provider clients and tokenizers built now, then the process tuned."""
    app.providers.warm()
    from core.tokenizers import warm as warm_tokenizers  # here: an API-only process never loads the BPE

    warm_tokenizers({m.tokenizer for m in app.settings.models.values()})  # a server lives long: build it now
    apply_once(app.settings.process)  # after the warm-up: the provider clients are frozen with the rest


class WorkerPool:
    """N jobs in flight from the embedded queue; also hands dead-lettered messages to the service."""

    def __init__(self, app: App, *, concurrency: int, on_outcome: Any = None) -> None:
        self.app = app
        self.concurrency = concurrency
        self.on_outcome = on_outcome  # optional hook(delivery, outcome): metrics, tests, benchmarks
        self.wakeup = asyncio.Event()
        self._freed = asyncio.Event()  # set as each job's task ends: a slot is free
        self._tasks: set[asyncio.Task[Any]] = set()
        self._store_io = offload(app.store)
        self._queue_io = offload(app.queue)

    def notify(self) -> None:
        self.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        queue = _pull_queue(self.app)
        vt = self.app.settings.queue.visibility_timeout_s
        poll = self.app.settings.queue.poll_interval_s
        last_dead_check = 0.0
        dead_letters = queue if isinstance(queue, DeadLetterFeed) else None  # a Protocol check: ~10 us, once
        warm(self.app)
        while not stop.is_set():
            now = time.monotonic()
            if dead_letters is not None and now - last_dead_check > DEAD_LETTER_CHECK_S:
                last_dead_check = now
                await self._dead_letters(dead_letters)
            free = self.concurrency - len(self._tasks)
            if free <= 0:  # an event, not asyncio.wait: that hooks and unhooks every task in flight each time
                self._freed.clear()
                await self._freed.wait()
                continue
            try:
                deliveries = await self._queue_io(queue.receive, max_messages=min(free, 10))
            except Exception as e:  # a locked or unreachable queue: wait and poll again, never die
                log_event("worker.receive_failed", logging.ERROR, error=repr(e)[:500])
                await asyncio.sleep(poll)
                continue
            if not deliveries:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=poll)
                except TimeoutError:
                    pass
                continue
            # leave time to report before the message becomes visible again: 5 s, or a fifth of a short timeout
            deadline = time.time() + vt - min(DEADLINE_MARGIN_S, vt * 0.2)
            for d in deliveries:
                t = asyncio.create_task(
                    self._run(d, deadline) if self.on_outcome is not None else self._deliver(d, deadline)
                )
                self._tasks.add(t)
                t.add_done_callback(self._ended)
        await self.drain()

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._freed.set()

    async def _dead_letters(self, queue: DeadLetterFeed) -> None:
        """Mark the jobs of dead-lettered messages; one that can't be marked never stops the loop."""
        for d in await self._queue_io(queue.take_dead_letters):
            try:
                await self._store_io(self.app.service.dead_letter, d)
            except Exception as e:
                log_event("dlq.mark_failed", logging.ERROR, message_id=d.message_id, error=repr(e)[:500])

    def _deliver(self, delivery: Delivery, deadline: float) -> Coroutine[Any, Any, Outcome]:
        """The delivery's own coroutine as the task (no wrapper: each of the job's awaits resumes one frame fewer)."""
        return run_delivery(
            self.app.service,
            self.app.queue,
            delivery,
            deadline=deadline,
            retry_delay_s=self.app.settings.governance.backoff_base_s,
        )

    async def _run(self, delivery: Delivery, deadline: float) -> None:
        outcome = await self._deliver(delivery, deadline)
        self.on_outcome(delivery, outcome)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Let in-flight jobs finish; whatever doesn't is redelivered after its visibility timeout."""
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for t in pending:
                t.cancel()
        await asyncio.to_thread(self.app.service.metrics.flush)


class WorkersFailed(RuntimeError):
    """The worker loops kept crashing and the service stopped: the process must exit non-zero."""


class LocalService:
    """API plus worker loops sharing one process; its ASGI lifespan starts and stops the workers."""

    def __init__(self, app: App, *, workers: int) -> None:
        self.app = app
        self.stop = asyncio.Event()
        self.pools = [WorkerPool(app, concurrency=app.settings.server.concurrency) for _ in range(workers)]
        self.running: set[WorkerPool] = set()
        self.failed: str | None = None  # why the workers stopped for good: the process then exits non-zero
        self.on_failed: Callable[[], None] = lambda: None
        self.backoff_s: Callable[[int], float] = lambda crashes: min(2.0**crashes, 30.0)
        self.tasks: list[asyncio.Task[Any]] = []
        metrics_text = None
        if app.settings.observability.prometheus:
            from core.observability.wiring import prometheus_registry

            metrics_text = prometheus_registry().text
        self.asgi = asgi_app(
            api_for(app),
            on_startup=self.start,
            on_shutdown=self.shutdown,
            metrics_text=metrics_text,
            health=self.health if self.pools else None,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        """ok while at least one worker loop runs; 503, saying why, while none does."""
        if self.running:
            return 200, {"status": "ok", "workers": len(self.running)}
        return 503, {
            "status": "unavailable",
            "workers": 0,
            "error": self.failed or "no worker loop is running (starting, or restarting after a crash)",
        }

    async def _supervise(self, pool: WorkerPool) -> None:
        """Run one worker loop for good: a crash is logged and the loop restarted with backoff; crashing
        `CRASHES_TOLERATED` times in a minute stops the service, so that its supervisor sees the exit."""
        crashes: list[float] = []
        while not self.stop.is_set():
            self.running.add(pool)
            try:
                await pool.run(self.stop)
                return
            except Exception as e:
                self.running.discard(pool)
                now = time.monotonic()
                crashes = [t for t in crashes if now - t < 60] + [now]
                log_event("worker.crashed", logging.CRITICAL, error=repr(e)[:500], crashes_in_a_minute=len(crashes))
                if len(crashes) >= CRASHES_TOLERATED:
                    self.failed = f"a worker loop crashed {len(crashes)} times in a minute, last with {e!r}"[:500]
                    log_event("worker.gave_up", logging.CRITICAL, error=self.failed)
                    self.stop.set()
                    self.on_failed()
                    return
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=self.backoff_s(len(crashes)))
                except TimeoutError:
                    pass
            finally:
                self.running.discard(pool)

    async def start(self) -> None:
        self.stop = asyncio.Event()
        wire_wakeups(self.app, self.pools)
        self.tasks = [asyncio.create_task(self._supervise(p)) for p in self.pools]
        if self.pools:
            self.tasks.append(asyncio.create_task(self._reconcile_loop()))
            self.tasks.append(asyncio.create_task(self._batch_loop()))
        log_event("runtime.started", workers=len(self.pools), data_dir=str(self.app.data_dir))

    async def _reconcile_loop(self) -> None:
        """Periodically re-send messages lost between a stored job and its queue (core.jobs.operator)."""
        interval = self.app.settings.governance.reconcile_interval_s
        io = offload(self.app.store)
        while not self.stop.is_set():
            try:
                await io(self.app.service.reconcile)
            except Exception as e:  # a store hiccup: try again next interval
                log_event("reconcile.failed", logging.ERROR, error=repr(e)[:500])
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def _batch_loop(self) -> None:
        """The batch lane's flush and poll, every `batch.poll_s`."""
        while not self.stop.is_set():
            try:
                await self.app.service.batch_tick()
            except Exception as e:  # a provider or store hiccup: the next tick tries again
                log_event("batch.tick_failed", logging.ERROR, error=repr(e)[:500])
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=self.app.settings.batch.poll_s)
            except TimeoutError:
                pass

    async def shutdown(self) -> None:
        self.stop.set()
        for p in self.pools:
            p.notify()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        unwire_wakeups(self.app)
        await self.app.providers.aclose()
        log_event("runtime.stopped", workers=len(self.pools))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says it is serving (a port in use is an error, not a
    traceback; port 0 gets a free port, which `sock.getsockname()` then names)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror}; stop what uses it, or pick another "
            "port with --port (0 for any free one)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(app: App, *, sock: socket.socket | None, workers: int) -> None:
    """API + worker loops in one process (or, with no socket, workers only), stopped cleanly by SIGINT/SIGTERM."""
    workers_only = sock is None
    local = LocalService(app, workers=workers)
    if workers_only:
        import signal

        loop = asyncio.get_running_loop()
        await local.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, local.stop.set)
        await local.stop.wait()
        await local.shutdown()
    else:
        import uvicorn

        config = uvicorn.Config(local.asgi, log_level="warning", lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        local.on_failed = lambda: setattr(server, "should_exit", True)  # no workers left: the API stops too
        assert sock is not None  # an API to serve: it was given its socket
        await server.serve(sockets=[sock])
    if local.failed:
        raise WorkersFailed(local.failed)


def wire_wakeups(app: App, pools: list[WorkerPool]) -> None:
    """Same-process submits wake idle workers at once instead of waiting for the next poll."""
    if not isinstance(app.queue, SendNotifier):  # a queue without send notifications: workers poll
        return
    loop = asyncio.get_running_loop()
    thread = threading.get_ident()

    def wake(p: WorkerPool) -> None:
        # the loop's own thread sets the event directly: call_soon_threadsafe writes to the loop's
        # self-pipe (a syscall and a wake-up) on every submit
        if threading.get_ident() == thread:
            p.notify()
        else:
            loop.call_soon_threadsafe(p.notify)

    for p in pools:
        app.queue.listeners.append(functools.partial(wake, p))


def unwire_wakeups(app: App) -> None:
    if isinstance(app.queue, SendNotifier):
        app.queue.listeners.clear()


async def run_inline(app: App, job_id: str, *, timeout_s: float, say: Any = None) -> Job | None:
    """Process one job in this process until it is terminal or `timeout_s` passes (`alto ask`): only that
    job, never other tenants' queued work. Its queue message stays for a worker, which finds it done;
    a worker that got there first holds the lease, and this follows the job to its end (or the lease's)."""
    job = app.store.get(job_id)
    if job is None:
        return None
    delivery = Delivery(message_id=f"inline-{job_id}", body=QueueMessage.for_job(job).model_dump_json())
    give_up = time.monotonic() + timeout_s
    try:
        while (left := give_up - time.monotonic()) > 0:
            outcome = await app.service.process(
                delivery, deadline=time.time() + min(left, app.settings.governance.lease_s)
            )
            job = app.store.get(job_id)
            if job is None or job.status.terminal:
                return job
            wait = min(max(0.05, outcome.delay_s), max(0.0, give_up - time.monotonic()))
            if say is not None and wait >= 1:
                held = "waiting: " if outcome.action == "defer" else ""
                say(
                    f"{held}{outcome.detail or job.status.value}; watching it, and trying again in {wait:.0f} s "
                    "unless it ends sooner"
                )
            if (ended := await _follow(app, job_id, wait)) is not None:
                return ended  # another worker (`alto serve` on this data folder) finished it meanwhile
        return app.store.get(job_id)
    finally:
        await app.providers.aclose()


async def _follow(app: App, job_id: str, wait_s: float, *, every_s: float = 0.2) -> Job | None:
    """Watch a job another worker holds for up to `wait_s`: the job once it ends, None if it has not. Without
    this, `alto ask` next to `alto serve` slept out the whole lease after the server's worker won the claim."""
    until = time.monotonic() + wait_s
    while (left := until - time.monotonic()) > 0:
        await asyncio.sleep(min(every_s, left))
        job = app.store.get(job_id)
        if job is None or job.status.terminal:
            return job
    return None


async def run_until_done(
    app: App, job_ids: list[str], *, timeout_s: float = 120.0, concurrency: int = 16, pools: int = 1
) -> None:
    """Run worker pools in this process until the given jobs are terminal (used by `alto ask`)."""
    stop = asyncio.Event()
    workers = [WorkerPool(app, concurrency=concurrency) for _ in range(pools)]
    wire_wakeups(app, workers)
    tasks = [asyncio.create_task(p.run(stop)) for p in workers]
    deadline = time.monotonic() + timeout_s
    try:
        pending = set(job_ids)
        while pending and time.monotonic() < deadline:
            pending = {j for j in pending if not (job := app.store.get(j)) or not job.status.terminal}
            if pending:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        for p in workers:
            p.notify()
        await asyncio.gather(*tasks)
        unwire_wakeups(app)
        await app.providers.aclose()
