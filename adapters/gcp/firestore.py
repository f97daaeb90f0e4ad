"""JobStore and StateStore on Firestore: create-if-absent and read-check-write transactions.

`jobs/{id}`: the job as JSON plus the fields queries need (tenant, status, created_at, updated_at)
and `expires_at` (a Timestamp, the TTL policy's field) once the job ends. `state/{key}`: a value,
a version and an optional `expires_at`; expired documents count as absent (TTL deletion is lazy).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from core.access import THREADED
from core.errors import ConflictError
from core.models import Job, JobStatus
from core.paging import Position
from core.ports import StateRecord
from core.records import listed_jobs, stored_job

JOB_RETENTION_S = 30 * 86400


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)


def _transactional(client: Any, fn: Callable[[Any], Any]) -> Any:
    from google.cloud import firestore

    return firestore.transactional(fn)(client.transaction())


class FirestoreJobStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(
        self, client: Callable[[], Any], collection: str = "jobs", *, retention_s: float = JOB_RETENTION_S
    ) -> None:
        self._client = client
        self.collection = collection
        self.retention_s = retention_s

    def _ref(self, job_id: str) -> Any:
        return self._client().collection(self.collection).document(job_id)

    def _doc(self, job: Job) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tenant": job.tenant,
            "status": job.status.value,
            "version": job.version,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "data": job.model_dump_json(),
        }
        if job.status.terminal:
            d["expires_at"] = _ts((job.finished_at or job.updated_at) + self.retention_s)
        return d

    def create(self, job: Job) -> None:
        from google.api_core.exceptions import AlreadyExists

        try:
            self._ref(job.id).create(self._doc(job))
        except AlreadyExists:
            raise ConflictError(f"job {job.id} already exists") from None

    def get(self, job_id: str) -> Job | None:
        snap = self._ref(job_id).get()
        return stored_job(snap.get("data")) if snap.exists else None

    def update(self, job: Job, *, expected_version: int) -> bool:
        ref = self._ref(job.id)
        new = job.model_copy(update={"version": expected_version + 1})

        def write(tx: Any) -> bool:
            snap = ref.get(transaction=tx)
            if not snap.exists or snap.get("version") != expected_version:
                return False
            tx.set(ref, self._doc(new))
            return True

        if _transactional(self._client(), write):
            job.version = expected_version + 1
            return True
        return False

    def list(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        updated_before: float | None = None,
        after: Position | None = None,
    ) -> list[Job]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        q = self._client().collection(self.collection)
        if tenant is not None:
            q = q.where(filter=FieldFilter("tenant", "==", tenant))
        if status is not None:
            q = q.where(filter=FieldFilter("status", "==", status.value))
        if updated_before is not None:  # composite indexes for these live in infra/gcp (firestore.tf)
            q = q.where(filter=FieldFilter("updated_at", "<", updated_before)).order_by("updated_at")
        else:  # ties on created_at by document id, descending: the index's implicit last field, so no new index
            q = q.order_by("created_at", direction="DESCENDING").order_by("__name__", direction="DESCENDING")
            if after is not None:
                q = q.start_after({"created_at": after.created_at, "__name__": after.id})
        return listed_jobs([s.get("data") for s in q.limit(limit).stream()])


class FirestoreStateStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(
        self, client: Callable[[], Any], collection: str = "state", *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self.collection = collection
        self.clock = clock

    def _ref(self, key: str) -> Any:
        return self._client().collection(self.collection).document(quote(key, safe=""))  # '/' splits paths

    def _live(self, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is None:
            return None
        exp = data.get("expires_at")
        return None if exp is not None and exp <= self.clock() else data

    def get(self, key: str) -> StateRecord | None:
        snap = self._ref(key).get()
        data = self._live(snap.to_dict() if snap.exists else None)
        if data is None:
            return None
        return StateRecord(value=json.loads(data["v"]), version=int(data["version"]), expires_at=data.get("expires_at"))

    def _write(
        self, key: str, value: dict[str, Any], ttl_s: float | None, ok: Callable[[dict | None, dict | None], bool]
    ) -> bool:
        ref = self._ref(key)

        def write(tx: Any) -> bool:
            snap = ref.get(transaction=tx)
            raw = snap.to_dict() if snap.exists else None
            if not ok(raw, self._live(raw)):
                return False
            doc: dict[str, Any] = {"v": json.dumps(value), "version": int((raw or {}).get("version", 0)) + 1}
            if ttl_s is not None:
                doc["expires_at"] = self.clock() + ttl_s  # epoch seconds: compared by us on every read
                doc["ttl"] = _ts(self.clock() + ttl_s)  # the TTL policy's Timestamp field
            tx.set(ref, doc)
            return True

        return bool(_transactional(self._client(), write))

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        return self._write(key, value, ttl_s, lambda raw, live: live is None)

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool:
        return self._write(
            key, value, ttl_s, lambda raw, live: live is not None and int(live["version"]) == expected_version
        )

    def delete(self, key: str) -> None:
        self._ref(key).delete()
