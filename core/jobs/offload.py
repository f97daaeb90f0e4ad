"""The one offload rule for store calls on the processing path.

A port that declares itself `core.ports.Remote` (DynamoDB, Firestore, Table Storage: milliseconds a
call) is called in a thread, so the records of one batch overlap their writes instead of queueing on
the event loop. An embedded port that is `core.ports.Grouped` (SQLite) joins the group of its loop's
turn, committed as one (on the loop while the write locks are free; on the process's storage thread while
another process holds one, so that lock is waited for there, never on the loop). Anything else (in-memory test fakes) is called inline.
Every job-store, state-store and queue call the worker makes goes through one.
"""

from __future__ import annotations

import weakref
from typing import Any, Awaitable, Callable, TypeVar

from core.ports import Grouped, Remote, StorageRunner

T = TypeVar("T")


class Offload:
    def __init__(self, port: object) -> None:
        self.remote = isinstance(port, Remote)
        self.runner: StorageRunner | None = port.storage if not self.remote and isinstance(port, Grouped) else None

    def same_way(self, other: "Offload") -> bool:
        """Whether the two ports' calls are made alike (one group, one thread, inline), so calls to both can
        be one offloaded call."""
        return self.runner is other.runner and self.remote == other.remote

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        """An awaitable of `fn`'s result. Not a coroutine itself: a store call's result resumes its caller's
        chain of coroutines directly, one frame fewer on every one of a job's store calls."""
        if self.runner is not None:
            return self.runner.run(fn, *args, **kwargs)
        if self.remote:
            import asyncio  # here, not at the top: the submit path imports this module and never offloads

            return asyncio.to_thread(fn, *args, **kwargs)
        return _inline(fn, *args, **kwargs)


async def _inline(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)  # runs when awaited (the runner queues its call at once, to_thread when awaited)


_offloads: "weakref.WeakKeyDictionary[object, Offload]" = weakref.WeakKeyDictionary()


def offload(port: object) -> Offload:
    """The port's Offload, made once (the protocol checks behind it cost microseconds each time)."""
    try:
        return _offloads[port]
    except KeyError:
        made = _offloads[port] = Offload(port)
        return made
    except TypeError:  # not weak-referenceable: no cache
        return Offload(port)
