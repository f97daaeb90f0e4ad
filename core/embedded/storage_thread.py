"""The embedded stores' group commit: every SQLite call the event loop makes runs in a group, on the loop
while the write locks are free, on the process's storage thread while another connection holds one.

Calls that arrive in one turn of the loop are taken together: one `BEGIN IMMEDIATE` per database and one
`COMMIT` for the whole group (group commit), each call's own transaction nested as a savepoint (or, for a
call that is one statement, that statement, which undoes only itself) so one failing call never undoes
another. The loop only ever *tries* the locks (on connections whose `busy_timeout` is 0): when another
process (a second `alto serve` on the data dir) holds one, the untouched group goes to the storage thread,
which waits for it there while the loop goes on running jobs. A call's result is handed back only after its
group committed, so a compare-and-set that said True is durable. Running uncontended groups on the loop
saves each call a hand-off between threads; with both threads busy, every SQLite statement (it drops the
GIL) became a GIL hand-off too: 0.10-0.16 ms more CPU per job on the thread, measured in-process.
Checkpoints, which fsync, run on the storage thread only (`request_checkpoint`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
GROUP_MAX = 64  # calls per commit: bounds how long one group holds the write lock (~a few ms)
CHECKPOINT_BYTES = 1000 * 4096  # a checkpoint once a log is this long (SQLite's automatic one: 1,000 pages)
CHECKPOINT_CHECK_COMMITS = 16  # how often (in commits made off the thread) the logs' lengths are looked at

_local = threading.local()


class Group:
    """The connections a group has opened a transaction on, committed together at the group's end."""

    def __init__(self) -> None:
        self.open: dict[str, Any] = {}  # by file: sqlite3 connections with BEGIN IMMEDIATE issued on this thread
        self.after: list[Callable[[], None]] = []  # run once the group committed, outside its locks
        # writes a store merges until the group ends (its own keys and values), and what writes them then
        self.deferred: dict[Any, Any] = {}
        self.before_commit: list[Callable[[], None]] = []

    def commit(self) -> None:
        """Write what was deferred, then commit every file; either raising leaves the caller to roll back."""
        for write in self.before_commit:
            write()
        for conn in self.open.values():
            conn.execute("COMMIT")

    def rollback(self) -> None:
        for conn in self.open.values():
            try:
                conn.execute("ROLLBACK")
            except Exception:
                pass


class Files:
    """What a group needs of the database files; `core.embedded.sqlite` (which imports this module) sets it."""

    try_begin: Callable[[], dict[str, Any] | None] = staticmethod(lambda: {})  # open connections; None: a lock is held
    log_bytes: Callable[[], int] = staticmethod(lambda: 0)  # the longest write-ahead log's length now
    checkpoint: Callable[[], None] = staticmethod(lambda: None)  # checkpoint every grouped file, from this thread


def on_storage_thread() -> bool:
    return getattr(_local, "serving", False)


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
    """One per process: runs the loop's calls in groups (on the loop, or on its thread, started on first need,
    while a lock is held elsewhere) and resolves their futures. `on_loop=False` always uses the thread."""

    def __init__(self, *, group_max: int = GROUP_MAX, on_loop: bool = True) -> None:
        self.group_max = group_max
        self.on_loop = on_loop
        self._calls: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}  # this turn's calls, per loop
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # calls (and checkpoints) given to the thread / done by it (only it writes the second)
        self._handed_over = self._thread_ran = 0
        self._commits_off_thread = 0
        self._checkpoint_queued = False
        self.groups = 0  # how many commits, for benchmarks and tests
        self.calls = 0
        self.loop_groups = 0  # of the groups, those committed on the loop
        self.checkpoints = 0

    def idle(self) -> bool:
        """Whether everything handed to the thread (groups, checkpoints) has run: the loop tries the locks
        itself only then."""
        return self._handed_over == self._thread_ran

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """`fn` in this turn's group; await the future for its result, set once the group committed. A
        future, not a coroutine: each call's result then wakes one frame fewer of its caller's chain."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:  # the turn's first call: the group runs after the callbacks already scheduled,
            pending = self._pending[loop] = []  # so the calls the other ready tasks make now join it
            loop.call_soon(self._flush, loop)
        pending.append((fn, args, kwargs, loop, future))
        return future

    def after_commit(self, fn: Callable[[], None]) -> None:
        """`core.ports.Access.after_commit`: `fn` after the running group's commit (now outside a group)."""
        after_commit(fn)

    def at_once(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` now, on the calling thread, as one group: what it writes, on every file, commits in one
        transaction per file when it returns or raises. Its calls keep their own atomicity (a statement, or
        a savepoint), so what ran before an exception is kept, as if each call had committed alone; a commit
        that fails undoes all of it. Inside a running group `fn` just joins that one. An API submit runs so:
        the job and its message appear together, for one lock and one commit."""
        if active_group() is not None:
            return fn(*args, **kwargs)
        group = _local.group = Group()
        try:
            return fn(*args, **kwargs)
        finally:
            _local.group = None
            self._commit_group(group)

    def _commit_group(self, group: Group) -> None:
        """Commit a group (or undo it all and raise), then run its after-commit hooks; a commit made off
        this thread counts towards the next checkpoint."""
        try:
            group.commit()
        except BaseException:
            group.rollback()
            raise
        self._after(group)
        if group.open and not on_storage_thread():
            self.request_checkpoint()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending.pop(loop, [])
        for i in range(0, len(batch), self.group_max):
            group = batch[i : i + self.group_max]
            # while the thread holds or waits for the locks (a group, a checkpoint), the loop's try would fail
            # too, or win the lock from under a checkpoint waiting for it: join the thread
            tried = self.on_loop and self.idle()
            results = self._run_group(group, on_loop=True) if tried else None
            if results is None:  # a lock is held elsewhere: the thread waits for it, not the loop
                self._ensure_started()
                with self._start_lock:  # loops in other threads may hand over too
                    self._handed_over += len(group)
                for call in group:
                    self._calls.put(call)
            else:
                _resolve(
                    [(future, ok, value) for (_, _, _, _, future), (ok, value) in zip(group, results, strict=True)]
                )

    def request_checkpoint(self) -> None:
        """Count a commit made off this thread (whose connections never checkpoint); every so many of
        them, look at the logs' lengths (a stat each) and have this thread checkpoint a long one."""
        self._commits_off_thread += 1
        if self._commits_off_thread < CHECKPOINT_CHECK_COMMITS or self._checkpoint_queued:
            return
        self._commits_off_thread = 0
        if Files.log_bytes() < CHECKPOINT_BYTES:
            return
        self._checkpoint_queued = True
        self._ensure_started()
        with self._start_lock:
            self._handed_over += 1
        self._calls.put(_CHECKPOINT)

    def _checkpoint(self) -> None:
        self._checkpoint_queued = False
        try:
            Files.checkpoint()
            self.checkpoints += 1
        except Exception as e:
            from core.logs import log_event

            log_event("storage.checkpoint_failed", logging.WARNING, error=repr(e)[:300])

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._serve, name="alto-storage", daemon=True)
                    self._thread.start()

    def _serve(self) -> None:
        _local.serving = True
        while True:
            batch = [self._calls.get()]
            while len(batch) < self.group_max:
                try:
                    batch.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            if any(c is _CHECKPOINT for c in batch):  # never inside a group: it can't run within a transaction
                batch = [c for c in batch if c is not _CHECKPOINT]
                self._checkpoint()
                self._thread_ran += 1
            if batch:
                results = self._run_group(batch)  # off the loop it waits for the locks, so it always runs
                assert results is not None
                self._thread_ran += len(batch)
                self._deliver(batch, results)

    def _run_group(self, batch: list[tuple[Any, ...]], *, on_loop: bool = False) -> list[tuple[bool, Any]] | None:
        """Each call's (ok, result or exception), once the group committed. On the loop the locks are only
        tried: None means another connection holds one and nothing ran."""
        group = Group()
        if on_loop:
            try:
                opened = Files.try_begin()
            except Exception as e:
                return [(False, e)] * len(batch)
            if opened is None:
                return None
            group.open = opened
        _local.group = group
        results: list[tuple[bool, Any]] = []
        try:
            for fn, args, kwargs, _, _ in batch:
                try:
                    results.append((True, fn(*args, **kwargs)))
                except BaseException as e:
                    results.append((False, e))
        finally:
            _local.group = None
        try:
            self._commit_group(group)
        except BaseException as e:
            results = [(False, e)] * len(batch)
        self.groups += 1
        self.loop_groups += on_loop
        self.calls += len(batch)
        return results

    @staticmethod
    def _after(group: Group) -> None:
        for fn in group.after:
            try:
                fn()
            except Exception as e:
                from core.logs import log_event

                log_event("storage.after_commit_failed", logging.ERROR, error=repr(e)[:300])

    @staticmethod
    def _deliver(batch: list[tuple[Any, ...]], results: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, _, _, loop, future), (ok, value) in zip(batch, results, strict=True):
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


_CHECKPOINT: tuple[Any, ...] = ("checkpoint",)
_thread: StorageThread | None = None
_thread_lock = threading.Lock()


def storage_thread() -> StorageThread:
    """The process's storage thread (shared by every embedded store of the process)."""
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = StorageThread()
        return _thread
