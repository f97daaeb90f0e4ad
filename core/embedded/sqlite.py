"""Shared SQLite plumbing: one connection per thread, WAL, and short immediate transactions.

Inside a group (`core.embedded.storage_thread`, on the loop or the storage thread) a transaction joins
it: the group's one `BEGIN IMMEDIATE` per database, this call's work as a savepoint (a one-statement
`write` needs none), the group's one `COMMIT`. Time spent waiting for the write lock is counted per kind
of thread, so a benchmark can show that the waiting happens off the event loop. The grouped files are checkpointed by the storage thread
only: a checkpoint fsyncs, and an automatic one runs inside whichever commit crosses the threshold.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.embedded import storage_thread as grouping
from core.embedded.storage_thread import Group, active_group, on_storage_thread

LOCK_WAIT_S = {"storage_thread": 0.0, "other": 0.0}  # seconds spent in BEGIN IMMEDIATE, this process
BUSY_TIMEOUT_MS = 30_000
CHECKPOINT_WAIT_MS = 200  # writers wait behind a TRUNCATE checkpoint; it waits no longer than this for readers


class SqliteDb:
    def __init__(self, path: Path | str, schema: str, *, grouped: bool = False) -> None:
        """`grouped`: the storage thread's groups lock this file too (the job, state and queue stores)."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if grouped:
            _paths.add(self.path)
        self.conn().executescript(schema)  # executescript manages its own transaction

    def conn(self) -> sqlite3.Connection:
        """The connection this thread's calls use: the running group's, once it has begun on the file (its
        reads must see its writes), else the thread's own."""
        group = active_group()
        if group is not None and (c := group.open.get(self.path)) is not None:
            return c
        return SqliteDb.connect(self.path)

    def close(self) -> None:
        """Close this thread's connections to the file (the next call opens a fresh one)."""
        conns = getattr(_threads, "conns", {})
        for key in (self.path, (self.path, NOWAIT)):
            if (c := conns.pop(key, None)) is not None:
                c.close()

    @staticmethod
    def connect(path: str, *, nowait: bool = False) -> sqlite3.Connection:
        """This thread's connection to the file, shared by every store on it (the job and state stores
        share jobs.db: a group's one transaction on the file must be seen by both). `nowait`: the loop's
        second connection, for its groups, whose busy timeout is 0: a lock held elsewhere fails at once
        (set once here, not around each try: two PRAGMAs per file per group were 11 us per job)."""
        conns = getattr(_threads, "conns", None)
        if conns is None:
            conns = _threads.conns = {}
        key: str | tuple[str, str] = (path, NOWAIT) if nowait else path
        c = conns.get(key)
        if c is None:
            c = conns[key] = _open(path, 0 if nowait else BUSY_TIMEOUT_MS)
        return c

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """One write statement, atomic by itself: in a group it runs in the group's transaction with no
        savepoint (a statement that fails undoes only itself, so it can never undo another call), outside
        one it is its own IMMEDIATE transaction. The cheap path for every call that is one statement."""
        if (group := self._group()) is not None:
            return self._joined(group).execute(sql, params)
        with self.tx() as c:
            return c.execute(sql, params)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so read-modify-write is atomic."""
        if (group := self._group()) is not None:
            c = self._joined(group)
            with _savepoint(c):
                yield c
            return
        c = self.conn()
        _begin(c, "other")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")
            if self.path in _paths and not on_storage_thread():
                grouping.storage_thread().request_checkpoint()

    def grouped(self) -> tuple[Group, sqlite3.Connection] | None:
        """The running group and its connection to this file (its transaction begun), if a group runs."""
        if (group := self._group()) is None:
            return None
        return group, self._joined(group)

    def _group(self) -> Group | None:
        """The group this thread is running, if this file takes part in groups."""
        group = active_group()
        return group if group is not None and self.path in _paths else None

    def _joined(self, group: Group) -> sqlite3.Connection:
        """The group's connection to this file, its transactions begun on first use (on the thread)."""
        if not group.open:
            group.open = _begin_all()
        c = group.open.get(self.path)
        if c is None:  # a store first opened while the group ran: its file joins the group now
            c = group.open[self.path] = SqliteDb.connect(self.path)
            _begin(c, _where())
        return c


_threads = threading.local()
_paths: set[str] = set()  # the database files of this process's grouped stores
NOWAIT = "nowait"


def _open(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    c = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    if path in _paths and not on_storage_thread():
        c.execute("PRAGMA wal_autocheckpoint=0")  # the storage thread checkpoints (it fsyncs)
    return c


def _begin_all() -> dict[str, sqlite3.Connection]:
    """A group's transactions: every database of the process, locked in one order (by path). A group
    may touch the job and the queue databases in either order; two processes each holding one and
    waiting for the other would deadlock, so a group takes both, always in the same order."""
    conns = {}
    for path in _live_paths():
        c = SqliteDb.connect(path)
        _begin(c, _where())
        conns[path] = c
    return conns


def _where() -> str:
    return "storage_thread" if on_storage_thread() else "other"


def _live_paths() -> list[str]:
    """The grouped files, in lock order, less any deleted since (a test's data dir): no one writes to a file
    that is gone, and opening one would fail every group of the process."""
    for path in [p for p in _paths if not os.path.exists(p)]:
        _paths.discard(path)
    return sorted(_paths)


@contextmanager
def _busy_timeout(c: sqlite3.Connection, ms: int) -> Iterator[None]:
    """This connection's busy timeout set to `ms` for a statement or two, then back to the usual."""
    c.execute(f"PRAGMA busy_timeout={ms}")
    try:
        yield
    finally:
        c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _try_begin_all() -> dict[str, sqlite3.Connection] | None:
    """A group's transactions on the loop: as `_begin_all`, but on the loop's `nowait` connections, so a
    lock held elsewhere is never waited for: what was begun is rolled back and None returned."""
    conns: dict[str, sqlite3.Connection] = {}
    for path in _live_paths():
        c = SqliteDb.connect(path, nowait=True)
        try:
            _begin(c, "other")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            for begun in conns.values():
                begun.execute("ROLLBACK")
            return None
        conns[path] = c
    return conns


def _checkpoint_all() -> None:
    """Copy each grouped file's write-ahead log back into it and empty the log (the storage thread's).
    TRUNCATE, not PASSIVE: with writers that never pause, a passive checkpoint always trails the newest
    page, so the log would never start over and would grow without bound (measured: 25k pages and
    growing); and an emptied log's length is what `_log_bytes` reads. It holds off writers while it
    runs: the loop's groups meet a held lock and come to this thread."""
    for path in _live_paths():
        c = SqliteDb.connect(path)
        with _busy_timeout(c, CHECKPOINT_WAIT_MS):  # a reader in the way: go on as PASSIVE soon
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _log_bytes() -> int:
    longest = 0
    for path in list(_paths):  # a copy: another thread may drop a deleted file meanwhile
        try:
            longest = max(longest, os.stat(path + "-wal").st_size)
        except OSError:  # no log yet, or the file is gone
            pass
    return longest


grouping.Files.try_begin = staticmethod(_try_begin_all)
grouping.Files.checkpoint = staticmethod(_checkpoint_all)
grouping.Files.log_bytes = staticmethod(_log_bytes)


def _begin(c: sqlite3.Connection, where: str) -> None:
    t = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    LOCK_WAIT_S[where] += time.perf_counter() - t


@contextmanager
def _savepoint(c: sqlite3.Connection) -> Iterator[None]:
    c.execute("SAVEPOINT call")
    try:
        yield
    except BaseException:
        c.execute("ROLLBACK TO call")
        c.execute("RELEASE call")
        raise
    else:
        c.execute("RELEASE call")
