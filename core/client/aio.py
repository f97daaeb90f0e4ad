"""`AsyncClient`: `Client`'s calls for asyncio code. Each call runs the blocking client in a worker thread, so the
event loop never waits on the network and the package needs no async HTTP library; a stream's events cross from
its thread through a queue as they arrive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from core.client.events import StreamEvent
from core.client.sync import Client
from core.job_request import JobRequest
from core.views import JobView, SubmitResponse, ThreadErased, ThreadView


class AsyncClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        self.sync = Client(url, api_key, **options)

    async def submit(
        self, request: JobRequest | dict[str, Any] | None = None, *, idempotency_key: str | None = None, **fields: Any
    ) -> SubmitResponse:
        return await asyncio.to_thread(self.sync.submit, request, idempotency_key=idempotency_key, **fields)

    async def get(self, job_id: str) -> JobView:
        return await asyncio.to_thread(self.sync.get, job_id)

    async def wait(self, job_id: str, *, timeout_s: float = 300.0) -> JobView:
        return await asyncio.to_thread(self.sync.wait, job_id, timeout_s=timeout_s)

    async def cancel(self, job_id: str) -> JobView:
        return await asyncio.to_thread(self.sync.cancel, job_id)

    async def replay(self, job_id: str) -> JobView:
        return await asyncio.to_thread(self.sync.replay, job_id)

    async def thread(self, thread_id: str) -> ThreadView:
        return await asyncio.to_thread(self.sync.thread, thread_id)

    async def erase_thread(self, thread_id: str) -> ThreadErased:
        return await asyncio.to_thread(self.sync.erase_thread, thread_id)

    async def stream(self, job_id: str, *, timeout_s: float = 300.0) -> AsyncIterator[StreamEvent]:
        """`Client.stream`'s events as they arrive. Leaving the loop early stops the reading thread at its next
        event (it holds one connection until then)."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue[Any]()
        stop = threading.Event()

        def pump() -> None:
            try:
                for event in self.sync.stream(job_id, timeout_s=timeout_s):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop.is_set():
                        return
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as e:  # handed to the awaiting side, raised there
                loop.call_soon_threadsafe(queue.put_nowait, e)

        reader = loop.run_in_executor(None, pump)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            if reader.done():
                await reader
