"""Shared SQLite plumbing: one connection per thread, WAL, and short immediate transactions.

On the storage thread (`core.embedded.storage_thread`) a transaction joins the running group: the
group's one `BEGIN IMMEDIATE` per database, this call's work as a savepoint, the group's one `COMMIT`.
Time spent waiting for the write lock is counted per kind of thread, so a benchmark can show that the
waiting happens off the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.embedded.storage_thread import active_group

LOCK_WAIT_S = {"storage_thread": 0.0, "other": 0.0}  # seconds spent in BEGIN IMMEDIATE, this process


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
        return SqliteDb.connect(self.path)

    def close(self) -> None:
        """Close this thread's connection to the file (the next call opens a fresh one)."""
        c = getattr(_threads, "conns", {}).pop(self.path, None)
        if c is not None:
            c.close()

    @staticmethod
    def connect(path: str) -> sqlite3.Connection:
        """This thread's connection to the file, shared by every store on it (the job and state stores
        share jobs.db: a group's one transaction on the file must be seen by both)."""
        conns = getattr(_threads, "conns", None)
        if conns is None:
            conns = _threads.conns = {}
        c = conns.get(path)
        if c is None:
            c = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
            conns[path] = c
        return c

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so read-modify-write is atomic."""
        c = self.conn()
        group = active_group()
        if group is not None and self.path in _paths:
            if not group.open:
                group.open = _begin_all()
            with _savepoint(c):
                yield c
            return
        _begin(c, "other")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")


_threads = threading.local()
_paths: set[str] = set()  # the database files of this process's grouped stores


def _begin_all() -> list[sqlite3.Connection]:
    """A group's transactions: every database of the process, locked in one order (by path). A group
    may touch the job and the queue databases in either order; two processes each holding one and
    waiting for the other would deadlock, so a group takes both, always in the same order."""
    conns = []
    for path in sorted(_paths):
        c = SqliteDb.connect(path)
        _begin(c, "storage_thread")
        conns.append(c)
    return conns


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
