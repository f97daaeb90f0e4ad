"""The jobs queue received by `alto worker --cloud azure`: a Service Bus receiver in peek-lock mode. The worker
renews each message's lock while its job runs, completes it when done, abandons it for a retry at once, hands it
back with a delay as a scheduled copy carrying its delivery count (as the trigger does), and dead-letters it itself
once that count reaches `maxDeliveryCount` (a scheduled copy starts Service Bus's own count over). The queue's
dead-letter subqueue stays the source of truth: its trigger marks the jobs, for pull and push workers alike.

The SDK's receiver is not thread-safe, and the worker calls it from several threads: every call holds one lock,
and a receive waits at most `MAX_LOCKED_WAIT_S` under it, so completions and renewals never wait long.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from adapters.azure.servicebus import ServiceBusQueue
from core.access import THREADED
from core.logs import log_event
from core.ports import Delivery

MAX_LOCKED_WAIT_S = 1.0


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class ServiceBusPull:
    access = THREADED  # network calls: an event loop runs them in threads (core.access)

    def __init__(self, queue: ServiceBusQueue, receiver: Callable[[], Any], *, wait_s: float) -> None:
        self.queue = queue  # sends (deferrals, scheduled copies) and reads claim checks
        self._receiver = receiver
        self.wait_s = min(wait_s, MAX_LOCKED_WAIT_S)
        self._lock = threading.Lock()

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        return self.queue.send(body, delay_s=delay_s)

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        with self._lock:
            messages = self._receiver().receive_messages(max_message_count=max_messages, max_wait_time=self.wait_s)
        return [d for d in map(self._delivery, messages) if d is not None]

    def _delivery(self, message: Any) -> Delivery | None:
        props = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
        try:
            d = self.queue.delivery(str(message.message_id), b"".join(message.body), message.delivery_count, props)
        except Exception as e:  # an unreadable claim check: abandoned, and dead-lettered by the count
            log_event("servicebus.unreadable", logging.ERROR, message_id=message.message_id, error=repr(e)[:300])
            self._settle("abandon_message", message)
            return None
        return d._replace(receipt=message)

    def _settle(self, verb: str, message: Any, **kwargs: Any) -> bool:
        """One settlement under the lock; a lock already lost (the message is redelivered) is logged, not raised:
        the job's own record decides what its next delivery does."""
        try:
            with self._lock:
                getattr(self._receiver(), verb)(message, **kwargs)
            return True
        except Exception as e:
            log_event("servicebus.settle_failed", logging.WARNING, verb=verb, error=repr(e)[:300])
            return False

    def ack(self, delivery: Delivery) -> None:
        self._settle("complete_message", delivery.receipt)

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        if self.queue.scheduled_copy(delivery, delay_s):
            self._settle("complete_message", delivery.receipt)
        elif delivery.receive_count >= self.queue.max_delivery_count:
            self._settle(
                "dead_letter_message",
                delivery.receipt,
                reason="MaxDeliveryCountExceeded",
                error_description=f"{delivery.receive_count} deliveries, counting the scheduled copies",
            )
        else:
            self._settle("abandon_message", delivery.receipt)

    def extend(self, deliveries: list[Delivery], seconds: float) -> list[Delivery]:
        """Renew each lock (for the queue's own lock duration, whatever `seconds` asks)."""
        return [d for d in deliveries if not self._settle("renew_message_lock", d.receipt)]

    def close(self) -> None:
        with self._lock:
            self._receiver().close()
