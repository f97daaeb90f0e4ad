"""A queue wrapper that behaves like a hostile at-least-once platform: duplicate sends and early redeliveries.

Wraps any JobQueue. `duplicate_rate` sends a second copy of a message; `redeliver_rate` makes a
received message visible again at once, so another worker receives it while the first still runs
(what SQS does when a visibility timeout is too short). Seeded, so soak runs repeat.
"""

from __future__ import annotations

import random
from typing import Any

from core.ports import Delivery, PullQueue


class ChaosQueue:
    def __init__(
        self, inner: PullQueue, *, duplicate_rate: float = 0.0, redeliver_rate: float = 0.0, seed: int = 7
    ) -> None:
        self.inner = inner
        self.duplicate_rate = duplicate_rate
        self.redeliver_rate = redeliver_rate
        self.rng = random.Random(seed)
        self.duplicates_sent = 0
        self.early_redeliveries = 0

    def __getattr__(self, name: str) -> Any:  # dead-letter side, depth, listeners: the inner queue's
        return getattr(self.inner, name)

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        mid = self.inner.send(body, delay_s=delay_s)
        if self.rng.random() < self.duplicate_rate:
            self.duplicates_sent += 1
            self.inner.send(body, delay_s=delay_s)
        return mid

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        out = self.inner.receive(max_messages=max_messages, visibility_timeout_s=visibility_timeout_s)
        for d in out:
            if self.rng.random() < self.redeliver_rate:
                self.early_redeliveries += 1
                self.inner.release(d, delay_s=0.0)  # visible again while this delivery is still being processed
        return out

    def ack(self, delivery: Delivery) -> None:
        self.inner.ack(delivery)

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        self.inner.release(delivery, delay_s=delay_s)
