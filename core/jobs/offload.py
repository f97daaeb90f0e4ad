"""The one offload rule for store calls on the processing path.

A port that declares itself `core.ports.Remote` (DynamoDB, Firestore, Table Storage: milliseconds a
call) is called in a thread, so the records of one batch overlap their writes instead of queueing on
the event loop; an embedded port (SQLite, microseconds) is called inline, where a thread hop would
cost more than the call. Every job-store and state-store call the worker makes goes through one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, TypeVar

from core.ports import Remote

T = TypeVar("T")


class Offload:
    def __init__(self, port: object) -> None:
        self.remote = isinstance(port, Remote)

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.remote:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)
