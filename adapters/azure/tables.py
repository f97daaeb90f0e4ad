"""JobStore and StateStore on Table Storage: conditional insert and ETag-matched updates.

Jobs: PartitionKey `job-NN`, one of 64 shards of the job id, RowKey the job id: every read is a point read,
writes spread over 64 partitions instead of queueing on one (a partition serves about 2,000 entities a
second), and the reconciler's and listings' filters run server-side over the `job-` partition range. The
job's JSON is split over 30,000-character properties, the most a Table string holds. State: PartitionKey
`state-NN` (the same sharding of the key), RowKey the key encoded (Table keys can't hold '/', '\\', '#' or
'?'). Expired state rows count as absent. Table Storage has no TTL of its own: `purge_expired` deletes what
has expired (ended jobs past their retention, expired state), a batch per reconcile run.
"""

from __future__ import annotations

import json
import time
import zlib
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
SHARDS = 64


def partition(kind: str, key: str) -> str:
    """The partition an entity of `kind` ("job" or "state") lives in: a stable shard of its key."""
    return f"{kind}-{zlib.crc32(key.encode()) % SHARDS:02d}"


def _key(key: str) -> str:
    return quote(key, safe="").replace("%", "~")  # '%' is allowed but '/' etc. aren't; keep it reversible


def _split(text: str) -> dict[str, str | int]:
    parts = [text[i : i + 30_000] for i in range(0, len(text), 30_000)] or [""]
    return {f"data{i}": p for i, p in enumerate(parts)} | {"parts": len(parts)}


def _join(entity: dict[str, Any]) -> str:
    return "".join(entity[f"data{i}"] for i in range(int(entity["parts"])))


def purge_expired(client: Any, now: float, limit: int) -> int:
    """Delete up to `limit` entities whose `expires_at` has passed; how many. A racing writer's newer entity
    (its ETag changed) is left alone."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    gone = 0
    for e in client.query_entities(
        "expires_at lt @now",
        parameters={"now": now},
        results_per_page=limit,
        select=["PartitionKey", "RowKey", "expires_at"],
    ):
        try:
            client.delete_entity(
                e["PartitionKey"], e["RowKey"], etag=e.metadata["etag"], match_condition=MatchConditions.IfNotModified
            )
            gone += 1
        except HttpResponseError as err:
            if err.status_code not in (404, 412):
                raise
        if gone >= limit:
            break
    return gone


class TableJobStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(self, client: Callable[[], Any], *, retention_s: float = JOB_RETENTION_S) -> None:
        self._client = client  # a TableClient for the jobs table
        self.retention_s = retention_s

    def _entity(self, job: Job) -> dict[str, Any]:
        e: dict[str, Any] = {
            "PartitionKey": partition("job", job.id),
            "RowKey": job.id,
            "tenant": job.tenant,
            "status": job.status.value,
            "version": job.version,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            **_split(job.model_dump_json()),
        }
        if job.status.terminal:
            e["expires_at"] = (job.finished_at or job.updated_at) + self.retention_s
        return e

    def purge_expired(self, now: float, limit: int = 1000) -> int:
        return purge_expired(self._client(), now, limit)

    def create(self, job: Job) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client().create_entity(self._entity(job))
        except ResourceExistsError:
            raise ConflictError(f"job {job.id} already exists") from None

    def _read(self, job_id: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._client().get_entity(partition("job", job_id), job_id)
        except ResourceNotFoundError:
            return None

    def get(self, job_id: str) -> Job | None:
        e = self._read(job_id)
        return stored_job(_join(e)) if e is not None else None

    def update(self, job: Job, *, expected_version: int) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.data.tables import UpdateMode

        current = self._read(job.id)
        if current is None or int(current["version"]) != expected_version:
            return False
        new = job.model_copy(update={"version": expected_version + 1})
        try:  # the ETag makes read-check-write one conditional write: a racing writer changes it
            self._client().update_entity(
                self._entity(new),
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as e:
            if e.status_code == 412:
                return False
            raise
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
        clauses, params = ["PartitionKey ge 'job-' and PartitionKey lt 'job.'"], dict[str, Any]()  # every shard
        if tenant is not None:
            clauses.append("tenant eq @tenant")
            params["tenant"] = tenant
        if status is not None:
            clauses.append("status eq @status")
            params["status"] = status.value
        if updated_before is not None:
            clauses.append("updated_at lt @before")
            params["before"] = updated_before
        elif after is not None:  # the next page: the filter reads from the position on, ties settled below
            clauses.append("created_at le @at")
            params["at"] = after.created_at
        jobs = listed_jobs([_join(e) for e in self._client().query_entities(" and ".join(clauses), parameters=params)])
        if updated_before is not None:
            jobs.sort(key=lambda j: j.updated_at)
        else:
            jobs = [j for j in jobs if after is None or after.after(j.created_at, j.id)]
            jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[:limit]


class TableStateStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(self, client: Callable[[], Any], *, clock: Callable[[], float] = time.time) -> None:
        self._client = client  # a TableClient for the state table
        self.clock = clock

    def purge_expired(self, now: float, limit: int = 1000) -> int:
        return purge_expired(self._client(), now, limit)

    def _read(self, key: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._client().get_entity(partition("state", key), _key(key))
        except ResourceNotFoundError:
            return None

    def _live(self, e: Any) -> bool:
        return e is not None and (e.get("expires_at") is None or e["expires_at"] > self.clock())

    def get(self, key: str) -> StateRecord | None:
        e = self._read(key)
        if not self._live(e):
            return None
        return StateRecord(value=json.loads(e["v"]), version=int(e["version"]), expires_at=e.get("expires_at"))

    def _entity(self, key: str, value: dict[str, Any], version: int, ttl_s: float | None) -> dict[str, Any]:
        e: dict[str, Any] = {
            "PartitionKey": partition("state", key),
            "RowKey": _key(key),
            "v": json.dumps(value),
            "version": version,
        }
        if ttl_s is not None:
            e["expires_at"] = self.clock() + ttl_s
        return e

    def _replace(self, current: Any, entity: dict[str, Any]) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.data.tables import UpdateMode

        try:
            self._client().update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as e:
            if e.status_code == 412:
                return False
            raise
        return True

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        from azure.core.exceptions import ResourceExistsError

        current = self._read(key)
        if current is None:
            try:
                self._client().create_entity(self._entity(key, value, 1, ttl_s))
                return True
            except ResourceExistsError:
                return False
        if self._live(current):
            return False
        return self._replace(current, self._entity(key, value, int(current["version"]) + 1, ttl_s))

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool:
        current = self._read(key)
        if not self._live(current) or int(current["version"]) != expected_version:
            return False
        return self._replace(current, self._entity(key, value, expected_version + 1, ttl_s))

    def delete(self, key: str) -> None:
        self._client().delete_entity(partition("state", key), _key(key))
