"""The consumer queue (`core.ports.JobQueue`) on Service Bus (claim-check to Blob Storage over 256 KB).

The API enqueues through its Service Bus output binding: during an HTTP invocation `send` collects
the message and the function hands it to the binding. Delayed sends (deferrals) and sends outside
an HTTP invocation (the reconciler) go through the Service Bus SDK's sender with a scheduled
enqueue time. A retry with a delay schedules a copy that carries the delivery count and completes
this delivery (Service Bus can't abandon with a delay); once that count reaches maxDeliveryCount,
or with no delay, the function raises, Service Bus abandons, redelivers and dead-letters as it does.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable
from typing import Any

from core.claimcheck import check_in, check_out
from core.errors import Redeliver
from core.ports import BlobStore, Delivery

SERVICE_BUS_MAX_BYTES = 256 * 1024
CARRIED = "alto_deliveries"  # deliveries of earlier copies of this message

_outbox: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("alto_outbox", default=None)


class ServiceBusQueue:
    def __init__(
        self,
        sender: Callable[[], Any],
        blobs: BlobStore,
        *,
        max_delivery_count: int,
        limit_bytes: int = SERVICE_BUS_MAX_BYTES,
    ) -> None:
        self._sender = sender  # azure.servicebus ServiceBusSender (or anything with send_/schedule_messages)
        self.blobs = blobs
        self.max_delivery_count = max_delivery_count
        self.limit_bytes = limit_bytes

    # ---------------------------------------------------------------- the HTTP function's output binding

    def collect(self) -> contextvars.Token:
        """Start collecting this invocation's messages for the output binding."""
        return _outbox.set([])

    def collected(self, token: contextvars.Token) -> list[str]:
        messages = _outbox.get() or []
        _outbox.reset(token)
        return messages

    # ---------------------------------------------------------------- JobQueue

    def send(self, body: str, *, delay_s: float = 0.0, properties: dict[str, Any] | None = None) -> str:
        body = check_in(body, self.blobs, limit_bytes=self.limit_bytes)
        outbox = _outbox.get()
        if outbox is not None and delay_s <= 0 and not properties:
            outbox.append(body)
            return f"binding:{len(outbox)}"
        from azure.servicebus import ServiceBusMessage

        # the SDK types keys and values as a union ours (str to str) fits but mypy can't see
        msg = ServiceBusMessage(body, application_properties=properties or None)  # type: ignore[arg-type]
        if delay_s > 0:
            when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay_s)
            return str(self._sender().schedule_messages(msg, when)[0])
        self._sender().send_messages(msg)
        return "sent"

    def delivery(self, message_id: str, body: bytes | str, delivery_count: int, properties: dict[str, Any]) -> Delivery:
        text = check_out(body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body, self.blobs)
        earlier = int(properties.get(CARRIED, 0) or 0)
        return Delivery(
            message_id=message_id,
            body=text,
            receive_count=earlier + max(1, delivery_count),
            attributes=dict(properties),
        )

    def ack(self, delivery: Delivery) -> None:
        pass  # the function returns and the host completes the message

    def scheduled_copy(self, delivery: Delivery, delay_s: float) -> bool:
        """Hand `delivery` back after `delay_s` as a scheduled copy that carries its delivery count (Service Bus
        can't abandon with a delay); False when there is no delay to keep or no delivery left to spend."""
        if delay_s >= 1 and delivery.receive_count < self.max_delivery_count:
            self.send(delivery.body, delay_s=delay_s, properties={CARRIED: delivery.receive_count})
            return True
        return False

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        if self.scheduled_copy(delivery, delay_s):
            return  # this delivery completes; the scheduled copy carries the count on
        # raised out of the worker function: Service Bus abandons the message and redelivers it
        raise Redeliver(f"redeliver message {delivery.message_id} (delivery {delivery.receive_count})", delay_s=delay_s)
