"""In-memory job and state stores: the port contracts with no I/O, for fast unit tests of the
lifecycle stages. Records round-trip through JSON, as in every real store, so a caller never shares
an object with the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from core.errors import ConflictError
from core.models import Job, JobStatus
from core.paging import Position
from core.ports import StateRecord
from core.records import listed_jobs, stored_job


class MemoryJobStore:
    def __init__(self) -> None:
        self._rows: dict[str, str] = {}
        self._lock = threading.Lock()

    def create(self, job: Job) -> None:
        with self._lock:
            if job.id in self._rows:
                raise ConflictError(f"job {job.id} exists")
            self._rows[job.id] = job.model_dump_json()

    def get(self, job_id: str) -> Job | None:
        row = self._rows.get(job_id)
        return stored_job(row) if row is not None else None

    def update(self, job: Job, *, expected_version: int) -> bool:
        with self._lock:
            current = self.get(job.id)
            if current is None or current.version != expected_version:
                return False
            self._rows[job.id] = job.model_copy(update={"version": expected_version + 1}).model_dump_json()
        job.version = expected_version + 1
        return True

    def list(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        updated_before: float | None = None,
        after: Position | None = None,
    ) -> list[Job]:
        jobs = [
            j
            for j in listed_jobs(list(self._rows.values()))
            if (tenant is None or j.tenant == tenant) and (status is None or j.status is status)
        ]
        if updated_before is not None:
            return sorted((j for j in jobs if j.updated_at < updated_before), key=lambda j: j.updated_at)[:limit]
        jobs = [j for j in jobs if after is None or after.after(j.created_at, j.id)]
        return sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)[:limit]


class MemoryStateStore:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._rows: dict[str, StateRecord] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, key: str) -> StateRecord | None:
        rec = self._rows.get(key)
        if rec is None or (rec.expires_at is not None and rec.expires_at <= self.clock()):
            return None
        return StateRecord(dict(rec.value), rec.version, rec.expires_at)

    def _expiry(self, ttl_s: float | None) -> float | None:
        return self.clock() + ttl_s if ttl_s is not None else None

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        with self._lock:
            if self.get(key) is not None:
                return False
            old = self._rows.get(key)  # an expired record's version goes on counting, as in SQLite
            self._rows[key] = StateRecord(dict(value), (old.version + 1) if old else 1, self._expiry(ttl_s))
            return True

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool:
        with self._lock:
            current = self.get(key)
            if current is None or current.version != expected_version:
                return False
            self._rows[key] = StateRecord(dict(value), expected_version + 1, self._expiry(ttl_s))
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._rows.pop(key, None)
