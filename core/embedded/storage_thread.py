"""The embedded stores' storage thread: every SQLite call the event loop makes runs here, in groups.

The loop never executes SQLite itself, so a write lock held by another process (two `alto serve`
processes on one data dir) is waited for in this thread while the loop goes on running jobs. Calls
that arrive while a group runs are taken together: one `BEGIN IMMEDIATE` per database and one `COMMIT`
for the whole group (group commit), each call's own transaction nested as a savepoint so one failing
call never undoes another. A call's result is handed back only after its group committed, so a
compare-and-set that said True is durable. Results go back to each waiting loop in one wake-up per group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
GROUP_MAX = 64  # calls per commit: bounds how long one group holds the write lock (~a few ms)

_local = threading.local()


class Group:
    """The connections a group has opened a transaction on, committed together at the group's end."""

    def __init__(self) -> None:
        self.open: list[Any] = []  # sqlite3 connections with BEGIN IMMEDIATE issued on this thread
        self.after: list[Callable[[], None]] = []  # run once the group committed, outside its locks

    def commit(self) -> None:
        for conn in self.open:
            conn.execute("COMMIT")

    def rollback(self) -> None:
        for conn in self.open:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001  nothing open on it any more: nothing to undo
                pass


def active_group() -> Group | None:
    """The group this thread is running, if any (SqliteDb.tx nests into it)."""
    return getattr(_local, "group", None)


def after_commit(fn: Callable[[], None]) -> None:
    """Run `fn` once what this thread wrote is durable: now, or after the running group's commit (and never,
    if that commit fails). Metrics use it, so reporting a job never lengthens a write lock."""
    group = active_group()
    if group is None:
        fn()
    else:
        group.after.append(fn)


class StorageThread:
    """One per process, started on first use: runs submitted calls in groups and resolves their futures."""

    def __init__(self, *, group_max: int = GROUP_MAX) -> None:
        self.group_max = group_max
        self._calls: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.groups = 0  # how many commits, for benchmarks and tests
        self.calls = 0

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ensure_started()
        self._calls.put((fn, args, kwargs, loop, future))
        return await future

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._serve, name="alto-storage", daemon=True)
                    self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = [self._calls.get()]
            while len(batch) < self.group_max:
                try:
                    batch.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            self._deliver(batch, self._run_group(batch))

    def _run_group(self, batch: list[tuple[Any, ...]]) -> list[tuple[bool, Any]]:
        group = _local.group = Group()
        results: list[tuple[bool, Any]] = []
        committed = False
        try:
            for fn, args, kwargs, _, _ in batch:
                try:
                    results.append((True, fn(*args, **kwargs)))
                except BaseException as e:  # noqa: BLE001  the caller's exception, raised in its own task
                    results.append((False, e))
            group.commit()
            committed = True
        except BaseException as e:  # noqa: BLE001  the commit failed: nothing of this group is durable
            group.rollback()
            results = [(False, e)] * len(batch)
        finally:
            _local.group = None
        if committed:
            self._after(group)
        self.groups += 1
        self.calls += len(batch)
        return results

    @staticmethod
    def _after(group: Group) -> None:
        for fn in group.after:
            try:
                fn()
            except Exception as e:  # noqa: BLE001  a reporting hook never fails the writes it follows
                from core.logs import log_event

                log_event("storage.after_commit_failed", logging.ERROR, error=repr(e)[:300])

    @staticmethod
    def _deliver(batch: list[tuple[Any, ...]], results: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, _, _, loop, future), (ok, value) in zip(batch, results):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # that loop closed while its call ran: nobody is waiting any more
                pass


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


_thread: StorageThread | None = None
_thread_lock = threading.Lock()


def storage_thread() -> StorageThread:
    """The process's storage thread (shared by every embedded store of the process)."""
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = StorageThread()
        return _thread
