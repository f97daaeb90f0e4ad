"""The one offload rule for store calls on the processing path: each port is called the way it declares.

Its `core.ports.Access` says how (`core.access`): a remote store (DynamoDB, Firestore, Table Storage:
milliseconds a call) in a thread, so the records of one batch overlap their writes instead of queueing on
the event loop; the embedded stores in the group of the loop's turn, committed as one (on the loop while
the write locks are free; on the process's storage thread while another process holds one, so that lock is
waited for there, never on the loop); anything else (in-memory test fakes) inline. Every job-store,
state-store and queue call the worker makes goes through one.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.access import access_of, joint
from core.ports import Access

T = TypeVar("T")


class Offload:
    def __init__(self, port: object, *, access: Access | None = None) -> None:
        self.access = access if access is not None else access_of(port)

    def with_(self, other: Offload) -> Offload:
        """One offload for calls that touch both ports together (one group for the embedded stores)."""
        return Offload(None, access=joint(self, other))  # each offload declares its port's access

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        """An awaitable of `fn`'s result. Not a coroutine itself: a store call's result resumes its caller's
        chain of coroutines directly, one frame fewer on every one of a job's store calls."""
        return self.access.run(fn, *args, **kwargs)


_offloads: weakref.WeakKeyDictionary[object, Offload] = weakref.WeakKeyDictionary()


def offload(port: object) -> Offload:
    """The port's Offload, made once."""
    try:
        return _offloads[port]
    except KeyError:
        made = _offloads[port] = Offload(port)
        return made
    except TypeError:  # not weak-referenceable: no cache
        return Offload(port)
