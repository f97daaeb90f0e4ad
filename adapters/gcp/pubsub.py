"""The consumer queue (`core.ports.JobQueue`) on Pub/Sub (claim-check to Cloud Storage over a configurable size).

Pub/Sub has no delayed delivery. A retry is a nack (the function raises), and the subscription's
retry policy spaces redeliveries, counting toward `max_delivery_attempts`. A deferral publishes a
fresh copy carrying a `not_before` attribute; the worker that receives it early sleeps until then
if that fits its invocation, or republishes it unchanged (no delivery attempt spent either way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.claimcheck import check_in, check_out
from core.errors import Redeliver
from core.ports import BlobStore, Delivery

PUBSUB_MAX_BYTES = 10 * 1000 * 1000


class PubSubQueue:
    def __init__(
        self,
        publisher: Callable[[], Any],
        topic_path: str,
        blobs: BlobStore,
        *,
        limit_bytes: int = PUBSUB_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publisher = publisher
        self.topic = topic_path
        self.blobs = blobs
        self.limit_bytes = limit_bytes
        self.clock = clock

    def send(self, body: str, *, delay_s: float = 0.0, not_before: float | None = None) -> str:
        data = check_in(body, self.blobs, limit_bytes=self.limit_bytes).encode()
        attrs = {}
        if not_before is None and delay_s > 0:
            not_before = self.clock() + delay_s
        if not_before is not None:
            attrs["not_before"] = f"{not_before:.3f}"
        return str(self._publisher().publish(self.topic, data, **attrs).result(timeout=30))

    def delivery(self, message_id: str, data: bytes, attributes: dict[str, str], delivery_attempt: int) -> Delivery:
        body = check_out(data.decode("utf-8", errors="replace"), self.blobs)
        return Delivery(message_id=message_id, body=body, receive_count=max(1, delivery_attempt), attributes=attributes)

    # Push delivery: the platform acks when the function returns and redelivers when it raises, so
    # receive/ack/release have nothing to call. They exist for the JobQueue contract only.
    def ack(self, delivery: Delivery) -> None:
        pass

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        # raised out of the worker function: Pub/Sub redelivers after the subscription's backoff
        raise Redeliver(
            f"redeliver message {delivery.message_id} (wanted a {delay_s:.1f} s delay; the "
            "subscription's retry policy decides)",
            delay_s=delay_s,
        )
