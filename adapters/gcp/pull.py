"""The jobs subscription pulled by `alto worker --cloud gcp`: a streaming pull from the client library, its flow
control sized to the worker's concurrency, and its lease manager extending each held message's ack deadline while
the job runs (up to the job deadline). Ack and nack map to the queue port as for the push subscription; the
subscription's dead-letter policy stays the one that dead-letters, for pull and push alike.

A retry with a delay sets the message's ack deadline to the delay (at most Pub/Sub's 600 s) and releases it from
lease management, so it comes back after the delay and counts as a delivery attempt, as a nack does. A deferred copy
(`not_before`) that arrives early is held, not run, until its time (at most a minute, then it is republished
unchanged and this copy acknowledged, as the push worker does), spending no delivery attempt.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from adapters.gcp.pubsub import PubSubQueue
from core.access import THREADED
from core.logs import log_event
from core.ports import Delivery

MAX_ACK_DEADLINE_S = 600  # Pub/Sub's ceiling for an ack deadline
MAX_HOLD_S = 60.0  # an early deferred copy is held this long at most, then republished


class PubSubPull:
    access = THREADED  # network calls: an event loop runs them in threads (core.access)

    def __init__(
        self,
        topic: PubSubQueue,
        subscriber: Callable[[], Any],
        subscription: str,
        *,
        max_messages: int,
        max_lease_s: float,
        extension_s: float,
        wait_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic  # sends (deferrals, hops) and reads claim checks
        self._subscriber = subscriber
        self.subscription = subscription
        self.max_messages = max_messages
        self.max_lease_s = max_lease_s
        # each lease extension at most this long (Pub/Sub allows 10..600 s): a message held by a worker that died
        # comes back within it, as an SQS message does after its visibility timeout
        self.extension_s = int(min(MAX_ACK_DEADLINE_S, max(10, extension_s)))
        self.wait_s = wait_s
        self.clock = clock
        self._ready: queue.Queue[Any] = queue.Queue()
        self._held: dict[Any, threading.Timer] = {}
        self._lock = threading.Lock()
        self._future: Any = None
        self._client: Any = None

    def _start(self) -> None:
        """The streaming pull, opened on the first receive (never while the app is built)."""
        with self._lock:
            if self._future is not None:
                return
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # a namespace package

            flow = pubsub_v1.types.FlowControl(
                max_messages=self.max_messages,
                max_lease_duration=self.max_lease_s,
                max_duration_per_lease_extension=self.extension_s,
            )
            self._client = self._subscriber()
            self._future = self._client.subscribe(
                self.subscription, callback=self._arrived, flow_control=flow, await_callbacks_on_shutdown=False
            )

    def _arrived(self, message: Any) -> None:
        """The library's callback thread: queue the message for the worker loop, or hold an early deferral."""
        not_before = float(message.attributes.get("not_before") or 0)
        if not_before > self.clock():
            timer = threading.Timer(min(MAX_HOLD_S, not_before - self.clock()), self._due, (message, not_before))
            timer.daemon = True
            with self._lock:
                self._held[message] = timer
            timer.start()
            return
        self._ready.put(message)

    def _due(self, message: Any, not_before: float) -> None:
        with self._lock:
            if self._held.pop(message, None) is None:  # closed meanwhile: already handed back
                return
        if not_before - self.clock() > 0.05:  # held a minute and still early: pass it on, unchanged
            delivery = self._delivery(message)
            if delivery is not None:
                self.topic.send(delivery.body, not_before=not_before)
                message.ack()
            return
        self._ready.put(message)

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        return self.topic.send(body, delay_s=delay_s)

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        """Up to `max_messages` of what the stream delivered, waiting up to `wait_s` for the first."""
        self._start()
        try:
            taken = [self._ready.get(timeout=self.wait_s)]
        except queue.Empty:
            return []
        while len(taken) < max_messages:
            try:
                taken.append(self._ready.get_nowait())
            except queue.Empty:
                break
        return [d for d in map(self._delivery, taken) if d is not None]

    def _delivery(self, message: Any) -> Delivery | None:
        try:
            d = self.topic.delivery(
                message.message_id, message.data, dict(message.attributes), message.delivery_attempt or 1
            )
        except Exception as e:  # an unreadable claim check: redelivered, and dead-lettered by the policy
            log_event("pubsub.unreadable", logging.ERROR, message_id=message.message_id, error=repr(e)[:300])
            message.nack()
            return None
        return d._replace(receipt=message)

    def ack(self, delivery: Delivery) -> None:
        delivery.receipt.ack()

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        message = delivery.receipt
        if delay_s >= 1:  # back after the delay: its ack deadline, outside lease management
            message.modify_ack_deadline(min(MAX_ACK_DEADLINE_S, math.ceil(delay_s)))
            message.drop()
        else:
            message.nack()

    def close(self) -> None:
        """Stop the stream; what it delivered and the worker never started goes back at once."""
        with self._lock:
            future, self._future = self._future, None
            held, self._held = list(self._held.items()), {}
        for message, timer in held:
            timer.cancel()
            message.nack()
        while True:
            try:
                self._ready.get_nowait().nack()
            except queue.Empty:
                break
        if future is not None:
            future.cancel()
            try:
                future.result(timeout=30)
            except Exception:  # cancelled streams end with the cancellation
                pass
            # and the channel closed, not dropped with the process: measured on the emulator, messages a stream
            # held when its process exited with the channel open were not redelivered for minutes
            self._client.close()
