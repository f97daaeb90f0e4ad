"""A queue whose sends can be refused: a queue outage, switched on and off by a test."""

from __future__ import annotations

from typing import Any


class RefusingQueue:
    """The wrapped queue, with its send refused while `down` is set (everything else passes through)."""

    def __init__(self, inner: Any, *, down: bool = True) -> None:
        self.inner = inner
        self.down = down

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        if self.down:
            raise ConnectionError("queue endpoint unreachable")
        return self.inner.send(body, delay_s=delay_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
