"""Which event loop a process runs its jobs on: uvloop when installed (the `uvloop` extra), else asyncio's.

Every provider reply, store result and timer of a job is a callback the loop schedules, and asyncio's
scheduler is pure Python: ~0.1 ms of CPU a job in `benchmarks/throughput.py`, which uvloop (libuv, C)
mostly saves; uvicorn picks it the same way. The choice is `process.event_loop` (auto, uvloop, asyncio),
made once per loop, never at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Literal, TypeVar

from core.errors import ConfigError

T = TypeVar("T")
EventLoop = Literal["auto", "uvloop", "asyncio"]


def loop_factory(wanted: EventLoop = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop: uvloop's when asked for or (auto) importable, else asyncio's default."""
    if wanted == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(
                "process.event_loop is uvloop, but uvloop is not installed: "
                "pip install 'altostratus[uvloop]', or set process.event_loop: auto"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def new_loop(wanted: EventLoop = "auto") -> asyncio.AbstractEventLoop:
    return loop_factory(wanted)()


def run(main: Coroutine[object, object, T], wanted: EventLoop = "auto") -> T:
    """`asyncio.run(main)` on the loop `wanted` picks."""
    with asyncio.Runner(loop_factory=loop_factory(wanted)) as runner:
        return runner.run(main)


def chosen(wanted: EventLoop = "auto") -> str:
    """`uvloop` or `asyncio`: the loop `wanted` picks here, for logs and benchmarks."""
    return "asyncio" if loop_factory(wanted) is asyncio.new_event_loop else "uvloop"
