"""SQLite job store (compare-and-set on a version column) and state store (conditional KV with TTL)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.embedded.sqlite import SqliteDb
from core.embedded.storage_thread import Group, active_group
from core.embedded.storage_thread import storage_thread as shared_storage_thread
from core.errors import ConflictError
from core.governance.state import add_counts, nonzero
from core.models import Job, JobStatus
from core.paging import Position
from core.ports import StateRecord
from core.records import listed_jobs, stored_job

JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL
);
"""


class SqliteJobStore:
    ordered_ids = True  # core.ports.JobStore's ordered_ids: new jobs append to the id index's last page

    def __init__(self, path: Path | str, *, storage_thread: bool = True) -> None:
        self.db = SqliteDb(path, JOBS_SCHEMA, grouped=storage_thread)
        if storage_thread:  # the worker's calls join the storage thread's groups
            self.access = shared_storage_thread()  # core.ports.Access: one storage group

    def create(self, job: Job) -> None:
        import sqlite3

        try:
            self.db.write(
                "INSERT INTO jobs (id, tenant, status, version, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.tenant, job.status.value, job.version, job.created_at, _record(job)),
            )
        except sqlite3.IntegrityError:
            raise ConflictError(f"job {job.id} already exists") from None

    def get(self, job_id: str) -> Job | None:
        row = self.db.conn().execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return stored_job(row[0]) if row else None

    def update(self, job: Job, *, expected_version: int) -> bool:
        new_version = expected_version + 1
        job.version = new_version  # serialised as written (a copy of the whole record per write costs more)
        written = False
        try:
            data = _record(job)
            cur = self.db.write(
                "UPDATE jobs SET status = ?, version = ?, data = ? WHERE id = ? AND version = ?",
                (job.status.value, new_version, data, job.id, expected_version),
            )
            written = cur.rowcount == 1
        finally:
            if not written:
                job.version = expected_version
        return written

    def list(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        updated_before: float | None = None,
        after: Position | None = None,
    ) -> list[Job]:
        sql, args = "SELECT data FROM jobs WHERE 1=1", list[Any]()
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if updated_before is not None:
            sql += " AND json_extract(data, '$.updated_at') < ?"
            args.append(updated_before)
        if updated_before is None and after is not None:  # the next page: strictly older than its last job
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [after.created_at, after.created_at, after.id]
        sql += " ORDER BY created_at ASC" if updated_before is not None else " ORDER BY created_at DESC, id DESC"
        sql += " LIMIT ?"
        args.append(limit)
        return listed_jobs([data for (data,) in self.db.conn().execute(sql, args).fetchall()])


def _record(job: Job) -> str:
    """The stored form: unset optional fields left out (read back as None), a sixth less to write per update."""
    return job.model_dump_json(exclude_none=True)


class SqliteStateStore:
    def __init__(
        self, path: Path | str, *, clock: Callable[[], float] = time.time, storage_thread: bool = True
    ) -> None:
        self.db = SqliteDb(path, JOBS_SCHEMA, grouped=storage_thread)
        self.clock = clock
        if storage_thread:
            self.access = shared_storage_thread()  # core.ports.Access: one storage group

    def get(self, key: str) -> StateRecord | None:
        self._flush_counts(key)
        row = self.db.conn().execute("SELECT value, version, expires_at FROM state WHERE key = ?", (key,)).fetchone()
        if row is None or (row[2] is not None and row[2] <= self.clock()):
            return None
        return StateRecord(value=json.loads(row[0]), version=row[1], expires_at=row[2])

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        self._flush_counts(key)
        now = self.clock()
        expires = now + ttl_s if ttl_s is not None else None
        cur = self.db.write(
            "INSERT INTO state (key, value, version, expires_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = state.version + 1, "
            "expires_at = excluded.expires_at WHERE state.expires_at IS NOT NULL AND state.expires_at <= ?",
            (key, json.dumps(value), expires, now),
        )
        return cur.rowcount == 1

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool:
        self._flush_counts(key)
        now = self.clock()
        expires = now + ttl_s if ttl_s is not None else None
        # the value is serialised with the lock held, not before taking it: a read-modify-write loop loses
        # when another writer lands between its read and its write, and a big value's dump (a budget's
        # holds) widened that window so much that two racing processes lost 20 tries in a row
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE state SET value = ?, version = version + 1, expires_at = ? "
                "WHERE key = ? AND version = ? AND (expires_at IS NULL OR expires_at > ?)",
                (json.dumps(value), expires, key, expected_version, now),
            )
            return cur.rowcount == 1

    def delete(self, key: str) -> None:
        self._flush_counts(key)
        self.db.write("DELETE FROM state WHERE key = ?", (key,))

    def add_counts(self, key: str, group: str, deltas: dict[str, int | float], *, ttl_s: float | None = None) -> None:
        """One upsert: the sums are made by SQLite's JSON functions, so there is nothing to read first and
        no version to lose (core.ports.CountingState). In a group, the counts of every call to one
        (key, group) are summed here and written once, when the group commits (a group holds the write
        lock anyway): a busy loop's turn finishes several jobs, and each upsert walks the record's JSON."""
        if '"' in group or "\\" in group:  # not expressible in an SQLite JSON path: the generic way, whose get
            return add_counts(self, key, group, deltas, ttl_s=ttl_s)  # writes this record's pending counts first
        deltas = nonzero(deltas)  # each path costs the upsert two JSON walks of the record
        if not deltas:
            return
        if (joined := self.db.grouped()) is None:
            self.db.write(*self._upsert(key, group, deltas, ttl_s))
            return
        pending = self._pending(*joined)
        if (row := pending.get((key, group))) is None:
            pending[(key, group)] = (dict(deltas), ttl_s)
            return
        sums = row[0]
        for f, d in deltas.items():
            sums[f] = sums.get(f, 0) + d
        pending[(key, group)] = (sums, ttl_s)

    def _pending(self, g: Group, conn: Any) -> dict[tuple[str, str], tuple[dict[str, int | float], float | None]]:
        """This file's counts waiting for the group's commit, their write registered on first use."""
        pending = g.deferred.get(("counts", self.db.path))
        if pending is None:
            pending = g.deferred[("counts", self.db.path)] = {}
            g.before_commit.append(lambda: self._write_counts(conn, pending))
        return pending

    def _flush_counts(self, key: str) -> None:
        """Write the counts the running group holds for `key` now: a read or another write of that record in
        the same group must see them. (A file with counts pending has joined the group.)"""
        g = active_group()
        if g is None or not (pending := g.deferred.get(("counts", self.db.path))):
            return
        if any(k == key for k, _ in pending):
            self._write_counts(g.open[self.db.path], pending)

    def _write_counts(
        self, conn: Any, pending: dict[tuple[str, str], tuple[dict[str, int | float], float | None]]
    ) -> None:
        for (key, group), (sums, ttl_s) in pending.items():
            conn.execute(*self._upsert(key, group, sums, ttl_s))
        pending.clear()

    def _upsert(
        self, key: str, group: str, deltas: dict[str, int | float], ttl_s: float | None
    ) -> tuple[str, tuple[Any, ...]]:
        """The statement adding `deltas` to the record's group, and its arguments."""
        now = self.clock()
        fresh = json.dumps(
            {"groups": {group: {f: (round(v, 10) if isinstance(v, float) else v) for f, v in deltas.items()}}}
        )
        args: list[Any] = [key, fresh, now + ttl_s if ttl_s is not None else None, now]
        for f, d in deltas.items():
            path = f'$.groups."{group}".{f}'
            args += [path, path, d]
        return _add_counts_sql(tuple(isinstance(d, float) for d in deltas.values())), tuple(args)


@functools.lru_cache(maxsize=256)
def _add_counts_sql(floats: tuple[bool, ...]) -> str:
    """The upsert of `add_counts` for deltas of these types (True: a float), whose (path, path, delta)
    follow the first four arguments: integers summed as integers, floats rounded as the generic path does."""
    total = "coalesce(json_extract(state.value, ?), 0) + ?"
    sets = [f"?, {'round(' + total + ', 10)' if f else total}" for f in floats]
    return (
        "INSERT INTO state (key, value, version, expires_at) VALUES (?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET "
        "value = CASE WHEN state.expires_at IS NOT NULL AND state.expires_at <= ?4 THEN excluded.value "
        f"ELSE json_set(state.value, {', '.join(sets)}) END, "
        "version = state.version + 1, expires_at = excluded.expires_at"
    )
