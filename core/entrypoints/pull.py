"""`alto worker`: a long-running worker that pulls deliveries from its cloud's queue (SQS, a Pub/Sub pull
subscription, a Service Bus receiver), runs each through the delivery path every runtime shares
(`core.entrypoints.consumer.run_delivery`), keeps each message's lease alive while its job runs, and drains on
SIGTERM.

The drain is bounded by construction: a delivery's deadline is `pull.job_deadline_s` after it was received, and
no attempt starts that could end later, so a termination grace of `job_deadline_s + drain_margin_s` lets every
job in flight finish; deliveries received after the signal are handed back at once, unstarted. A job that still
runs at the drain's end (a bug, a hung call) is cancelled and its message handed back: its attempt is recorded
`lost` by the next delivery, never billed twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from core.bootstrap import App
from core.config.pull import PullConfig
from core.entrypoints.consumer import run_delivery
from core.jobs.offload import offload
from core.logs import log_event
from core.ports import ClosingQueue, Delivery, LeasedQueue, PullQueue

State = Literal["starting", "ready", "draining", "stopped"]
MAX_RECEIVE = 10  # SQS's and our batch ceiling for one receive


class PullWorker:
    """Up to `pull.concurrency` jobs in flight from `app.queue`, their leases renewed by one keeper."""

    def __init__(self, app: App, queue: PullQueue, config: PullConfig) -> None:
        self.app = app
        self.queue = queue
        self.config = config
        self.state: State = "starting"
        self.inflight: dict[asyncio.Task[Any], tuple[Delivery, float]] = {}  # task -> (delivery, deadline)
        self.counts = dict.fromkeys(("received", "handed_back", "leases_renewed", "lease_lost", "receive_errors"), 0)
        self.last_turn = time.monotonic()  # the loop's last pass: liveness
        self._freed = asyncio.Event()
        self._io = offload(queue)  # a cloud queue's calls cross the network: its access runs them in threads
        # a long poll holds its thread for up to `wait_s`: a thread of its own, never one the jobs' calls wait for
        self._receiver = ThreadPoolExecutor(1, thread_name_prefix="alto-receive")
        vt = app.settings.queue.visibility_timeout_s
        self.lease_s = vt
        self.extend_every_s = config.extend_every_s or max(1.0, vt / 3)

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and run until `stop`, then drain."""
        from core.entrypoints.local import warm

        warm(self.app)  # on the loop: the provider clients bind to it
        keeper = asyncio.create_task(self._keep_leases()) if isinstance(self.queue, LeasedQueue) else None
        self.state = "ready"
        log_event("worker.pulling", concurrency=self.config.concurrency, queue=type(self.queue).__name__)
        try:
            await self._pull(stop)
        finally:
            self.state = "draining"
            await self._drain()
            if keeper is not None:
                keeper.cancel()
            if isinstance(self.queue, ClosingQueue):
                await asyncio.to_thread(self.queue.close)
            await asyncio.to_thread(self.app.service.metrics.flush)
            self._receiver.shutdown(wait=False)
            self.state = "stopped"

    async def _pull(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                self.last_turn = time.monotonic()
                free = self.config.concurrency - len(self.inflight)
                if free <= 0:
                    self._freed.clear()
                    freed = asyncio.ensure_future(self._freed.wait())
                    await asyncio.wait({stopping, freed}, return_when=asyncio.FIRST_COMPLETED)
                    freed.cancel()
                    continue
                receiving = asyncio.ensure_future(self._receive(min(free, MAX_RECEIVE)))
                await asyncio.wait({stopping, receiving}, return_when=asyncio.FIRST_COMPLETED)
                deliveries = await receiving  # a long poll ends within `wait_s`, well inside the drain margin
                if stop.is_set():
                    await self._hand_back(deliveries)
                    break
                for d in deliveries:
                    self._start(d)
        finally:
            stopping.cancel()

    async def _receive(self, n: int) -> list[Delivery]:
        try:
            receive = functools.partial(self.queue.receive, max_messages=n)
            got: list[Delivery] = await asyncio.get_running_loop().run_in_executor(self._receiver, receive)
        except Exception as e:  # an unreachable queue or a refused call: wait, try again, never die
            self.counts["receive_errors"] += 1
            log_event("worker.receive_failed", logging.ERROR, error=repr(e)[:500])
            await asyncio.sleep(min(5.0, self.app.settings.queue.poll_interval_s * 10))
            return []
        self.counts["received"] += len(got)
        return got

    def _start(self, delivery: Delivery) -> None:
        deadline = time.time() + self.config.job_deadline_s
        task = asyncio.ensure_future(
            run_delivery(
                self.app.service,
                self.queue,
                delivery,
                deadline=deadline,
                retry_delay_s=self.app.settings.governance.backoff_base_s,
            )
        )
        self.inflight[task] = (delivery, deadline)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.inflight.pop(task, None)
        self._freed.set()

    async def _keep_leases(self) -> None:
        """Every `extend_every_s`, renew the lease of each delivery still running within its deadline."""
        assert isinstance(self.queue, LeasedQueue)
        while True:
            await asyncio.sleep(self.extend_every_s)
            now = time.time()
            held = [d for d, deadline in self.inflight.values() if deadline > now]
            if not held:
                continue
            try:
                lost = await self._io(self.queue.extend, held, self.lease_s)
            except Exception as e:  # the next turn tries again; a lease that runs out only costs a redelivery
                log_event("worker.extend_failed", logging.WARNING, error=repr(e)[:500], messages=len(held))
                continue
            self.counts["leases_renewed"] += len(held) - len(lost)
            if lost:  # redelivered meanwhile: the job's own lease keeps the copy from running it twice
                self.counts["lease_lost"] += len(lost)
                log_event("worker.lease_lost", logging.WARNING, messages=[d.message_id for d in lost][:10])

    async def _hand_back(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            try:
                await self._io(self.queue.release, d, delay_s=0)
                self.counts["handed_back"] += 1
            except Exception as e:  # its lease runs out and the queue redelivers it anyway
                log_event("worker.hand_back_failed", logging.WARNING, message_id=d.message_id, error=repr(e)[:300])

    async def _drain(self) -> None:
        """Let the jobs in flight finish by their deadlines (plus the margin); hand back any still running."""
        if not self.inflight:
            return
        log_event("worker.draining", inflight=len(self.inflight))
        latest = max(deadline for _, deadline in self.inflight.values())
        budget = max(0.0, latest - time.time()) + self.config.drain_margin_s / 2
        _done, pending = await asyncio.wait(set(self.inflight), timeout=budget)
        stuck = [self.inflight[t][0] for t in pending if t in self.inflight]
        for t in pending:
            t.cancel()
        await self._hand_back(stuck)
        if stuck:
            log_event("worker.drain_cut", logging.ERROR, handed_back=len(stuck))

    def health(self) -> tuple[int, dict[str, Any]]:
        """Liveness: the loop turned recently (a receive waits `wait_s` at most), or it is draining as asked."""
        quiet = time.monotonic() - self.last_turn
        limit = self.config.wait_s + self.config.job_deadline_s  # a full worker waits for a slot, at most a job
        ok = self.state in ("starting", "draining") or quiet < limit
        return (200 if ok else 503), {
            "status": "ok" if ok else "stalled",
            "state": self.state,
            "quiet_s": round(quiet, 1),
        }

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """Ready once warmed up and receiving; not while starting or draining."""
        body = {"state": self.state, "inflight": len(self.inflight), **self.counts}
        return (200 if self.state == "ready" else 503), body

    def metrics_text(self) -> str:
        lines = [
            "# TYPE alto_worker_inflight gauge",
            f"alto_worker_inflight {len(self.inflight)}",
            "# TYPE alto_worker_ready gauge",
            f"alto_worker_ready {int(self.state == 'ready')}",
        ]
        for name, value in self.counts.items():
            lines += [f"# TYPE alto_worker_{name}_total counter", f"alto_worker_{name}_total {value}"]
        return "\n".join(lines) + "\n"


async def serve_worker(app: App, queue: PullQueue, config: PullConfig) -> PullWorker:
    """Run a PullWorker and its probes until SIGTERM or SIGINT, then drain; returns the stopped worker."""
    import signal

    from core.entrypoints.probes import Probes

    worker = PullWorker(app, queue, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # every job's store and queue calls run in threads: enough for all of them at once (the default is cores + 4)
    loop.set_default_executor(ThreadPoolExecutor(config.concurrency + 8, thread_name_prefix="alto-io"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = worker.metrics_text
    if app.settings.observability.prometheus:
        from core.observability.wiring import prometheus_registry

        registry = prometheus_registry()
        metrics = lambda: registry.text() + worker.metrics_text()  # noqa: E731
    probes = Probes({"/healthz": worker.health, "/readyz": worker.readiness}, metrics=metrics)
    await probes.start(config.host, config.port)
    log_event("worker.probes", url=f"http://{config.host}:{probes.port}")
    try:
        await worker.run(stop)
    finally:
        await probes.close()
        await app.providers.aclose()
    return worker
