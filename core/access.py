"""How a port is called, declared by the port itself: the one place the service layer learns it.

Every store and queue port may carry an `access` (`core.ports.Access`): how its calls are made from an
event loop (`run`), how several calls become one unit from synchronous code (`at_once`), and what runs once
the writes made so far are durable (`after_commit`). The service layer asks `access_of(port)` and never
which store it holds, so the embedded store keeps its grouped commits behind the port, remote stores their
threads, and a test fake with no `access` is called inline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.ports import Access

T = TypeVar("T")


class Inline:
    """A port whose calls are cheap and synchronous (in-memory fakes): called where they are made."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        return _inline(fn, *args, **kwargs)

    def at_once(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    def after_commit(self, fn: Callable[[], None]) -> None:
        fn()  # every call committed when it returned


class Threaded(Inline):
    """A port whose calls cross the network (DynamoDB, Firestore, Table Storage: milliseconds each): an
    event loop runs them in a thread, so the records of one batch overlap their writes instead of queueing."""

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        import asyncio  # here, not at the top: an API function's cold start imports this module, never runs it

        return asyncio.to_thread(fn, *args, **kwargs)


INLINE: Access = Inline()
THREADED: Access = Threaded()


def access_of(port: object) -> Access:
    """How `port` is called: what it declares, else inline."""
    declared = getattr(port, "access", None)
    return declared if declared is not None else INLINE


def joint(*ports: object) -> Access:
    """One access for calls that touch every one of `ports` together: theirs when they share one (the embedded
    stores, one storage group), else a thread, which may call anything (each port keeps its own commits)."""
    accesses = {id(a): a for a in map(access_of, ports)}
    if len(accesses) == 1:
        return next(iter(accesses.values()))
    return THREADED


async def _inline(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)  # runs when awaited (the storage group queues its call at once, a thread when awaited)
