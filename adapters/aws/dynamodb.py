"""JobStore and StateStore on DynamoDB: every change is one conditional write.

Jobs table: partition key `id`, and three keys-only indexes (serverless.yml), each written only when its
key changes and read through one consistent BatchGetItem per page, so no index holds a copy of a record
and a listing never shows a stale one:

- `by_tenant` (tenant, created_at): a tenant's listing, newest first;
- `by_tenant_status` (`tenant#status`, created_at): a tenant's listing by status;
- `by_sweep` (`status#shard`, updated_at): queued and running jobs, and cancelled ones whose call in
  flight is still to be settled (every other job drops the attribute, so the index stays small), spread
  over `SWEEP_SHARDS` keys so one status is never a hot partition; the reconciler queries every shard.

A terminal job gets `expires_at` (the table's TTL attribute) after the retention period. State table:
partition key `k`; `expires_at` is the TTL attribute, and because DynamoDB deletes expired items lazily
(within days), reads and conditions treat an expired item as absent themselves.
"""

from __future__ import annotations

import builtins
import heapq
import itertools
import json
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from core.access import THREADED
from core.errors import ConflictError
from core.models import Job, JobStatus
from core.paging import Position
from core.ports import StateRecord
from core.records import listed_jobs, stored_job

JOB_RETENTION_S = 30 * 86400
SWEEP_SHARDS = 8
SWEPT = (JobStatus.queued, JobStatus.running, JobStatus.cancelled)  # cancelled: only with a call to settle
BATCH_GET_MAX = 100  # BatchGetItem's limit per call


def _n(x: float | int) -> dict[str, str]:
    return {"N": repr(x) if isinstance(x, float) else str(x)}


def _conditional_failed(c: Any, e: Exception) -> bool:
    return isinstance(e, c.exceptions.ConditionalCheckFailedException)


def sweep_key(job_id: str, status: JobStatus, shard: int | None = None) -> str:
    """The by_sweep partition of a queued or running job: its status and a stable shard of its id."""
    return f"{status.value}#{zlib.crc32(job_id.encode()) % SWEEP_SHARDS if shard is None else shard}"


class DynamoJobStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(self, client: Callable[[], Any], table: str, *, retention_s: float = JOB_RETENTION_S) -> None:
        self._client = client
        self.table = table
        self.retention_s = retention_s

    def _item(self, job: Job) -> dict[str, Any]:
        item = {
            "id": {"S": job.id},
            "tenant": {"S": job.tenant},
            "status": {"S": job.status.value},
            "tenant_status": {"S": f"{job.tenant}#{job.status.value}"},
            "version": _n(job.version),
            "created_at": _n(job.created_at),
            "updated_at": _n(job.updated_at),
            "data": {"S": job.model_dump_json()},
        }
        if job.status in (JobStatus.queued, JobStatus.running) or job.call_in_flight_until is not None:
            item["sweep"] = {"S": sweep_key(job.id, job.status)}  # the reconciler's: stuck, or a call to settle
        if job.status.terminal:
            item["expires_at"] = _n(int((job.finished_at or job.updated_at) + self.retention_s))
        return item

    def create(self, job: Job) -> None:
        c = self._client()
        try:
            c.put_item(
                TableName=self.table,
                Item=self._item(job),
                ConditionExpression="attribute_not_exists(#id)",
                ExpressionAttributeNames={"#id": "id"},
            )
        except Exception as e:
            if _conditional_failed(c, e):
                raise ConflictError(f"job {job.id} already exists") from None
            raise

    def get(self, job_id: str) -> Job | None:
        r = self._client().get_item(TableName=self.table, Key={"id": {"S": job_id}}, ConsistentRead=True)
        item = r.get("Item")
        return stored_job(item["data"]["S"]) if item else None

    def update(self, job: Job, *, expected_version: int) -> bool:
        new = job.model_copy(update={"version": expected_version + 1})
        c = self._client()
        try:
            c.put_item(
                TableName=self.table,
                Item=self._item(new),
                ConditionExpression="#ver = :expected",
                ExpressionAttributeNames={"#ver": "version"},
                ExpressionAttributeValues={":expected": _n(expected_version)},
            )
        except Exception as e:
            if _conditional_failed(c, e):
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
        if updated_before is not None and status in SWEPT:
            ids: Iterator[str] = self._swept(status, updated_before)
        elif tenant is not None and updated_before is None:
            attr, value = ("tenant_status", f"{tenant}#{status.value}") if status is not None else ("tenant", tenant)
            ids = _newest_first(
                self._keys(
                    f"by_{attr}", attr, value, newest_first=True, bound=("<=", after.created_at) if after else None
                ),
                after,
            )
        else:
            return self._scan(limit, tenant, status, updated_before, after)
        out: builtins.list[Job] = []
        for page in _pages(ids, BATCH_GET_MAX if limit > BATCH_GET_MAX else limit):
            out.extend(j for j in self._read(page) if _wanted(j, tenant, status, updated_before))
            if len(out) >= limit:
                break
        if updated_before is not None:  # the port's order for a sweep: oldest update first
            out.sort(key=lambda j: j.updated_at)
        return out[:limit]

    def _keys(
        self,
        index: str,
        attr: str,
        value: str,
        *,
        newest_first: bool,
        bound: tuple[str, float] | None = None,
        sort: str = "created_at",
    ) -> Iterator[tuple[float, str]]:
        """(sort key, id) from one index partition, page by page, in its order; `bound` limits the sort key
        ("<" or "<=" a value) in the key condition, so DynamoDB reads only from there on."""
        names, values = {"#k": attr}, {":k": {"S": value}}
        condition = "#k = :k"
        if bound is not None:
            names["#s"], values[":bound"] = sort, _n(bound[1])
            condition += f" AND #s {bound[0]} :bound"
        for page in (
            self._client()
            .get_paginator("query")
            .paginate(
                TableName=self.table,
                IndexName=index,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ScanIndexForward=not newest_first,
            )
        ):
            for item in page.get("Items", []):
                yield float(item[sort]["N"]), item["id"]["S"]

    def _swept(self, status: JobStatus, before: float | None) -> Iterator[str]:
        """Every shard's queued (or running) jobs, oldest update first, merged."""
        shards = [
            self._keys(
                "by_sweep",
                "sweep",
                sweep_key("", status, shard),
                newest_first=False,
                bound=("<", before) if before is not None else None,
                sort="updated_at",
            )
            for shard in range(SWEEP_SHARDS)
        ]
        return (job_id for _, job_id in heapq.merge(*shards))

    def _read(self, ids: builtins.list[str]) -> builtins.list[Job]:
        """The records of `ids`, consistently and in the order given (missing ones left out)."""
        c = self._client()
        found: dict[str, str] = {}
        request = {
            self.table: {
                "Keys": [{"id": {"S": i}} for i in dict.fromkeys(ids)],
                "ConsistentRead": True,
                "ProjectionExpression": "#id, #d",
                "ExpressionAttributeNames": {"#id": "id", "#d": "data"},
            }
        }
        for attempt in range(8):
            r = c.batch_get_item(RequestItems=request)
            found.update((i["id"]["S"], i["data"]["S"]) for i in r.get("Responses", {}).get(self.table, []))
            request = r.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: back off, then ask for the rest
        return listed_jobs([found[i] for i in ids if i in found])

    def _scan(
        self,
        limit: int,
        tenant: str | None,
        status: JobStatus | None,
        updated_before: float | None,
        after: Position | None,
    ) -> builtins.list[Job]:
        """Every tenant's jobs (the operator's CLI, never an HTTP request)."""
        jobs = listed_jobs(
            [
                i["data"]["S"]
                for page in self._client().get_paginator("scan").paginate(TableName=self.table)
                for i in page.get("Items", [])
            ]
        )
        jobs = [j for j in jobs if _wanted(j, tenant, status, updated_before)]
        if updated_before is not None:
            jobs.sort(key=lambda j: j.updated_at)
        else:
            jobs = [j for j in jobs if after is None or after.after(j.created_at, j.id)]
            jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return jobs[:limit]


def _wanted(job: Job, tenant: str | None, status: JobStatus | None, updated_before: float | None) -> bool:
    """The index gave a candidate; its record, read consistently, decides (an index lags its table)."""
    return (
        (tenant is None or job.tenant == tenant)
        and (status is None or job.status is status)
        and (updated_before is None or job.updated_at < updated_before)
    )


def _newest_first(keys: Iterator[tuple[float, str]], after: Position | None) -> Iterator[str]:
    """Ids from an index read newest first, ties on created_at in descending id order (an index leaves their
    order open), only those strictly after `after`: the port's page order, on every page alike."""
    for _, group in itertools.groupby(keys, key=lambda k: k[0]):
        for created_at, job_id in sorted(group, key=lambda k: k[1], reverse=True):
            if after is None or after.after(created_at, job_id):
                yield job_id


def _pages(ids: Iterator[str] | Iterator[tuple[float, str]], size: int) -> Iterator[list[str]]:
    page: list[str] = []
    for entry in ids:
        page.append(entry[1] if isinstance(entry, tuple) else entry)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


class DynamoStateStore:
    access = THREADED  # network calls: the processing path runs them in a thread, off the event loop

    def __init__(self, client: Callable[[], Any], table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.table = table
        self.clock = clock

    def get(self, key: str) -> StateRecord | None:
        r = self._client().get_item(TableName=self.table, Key={"k": {"S": key}}, ConsistentRead=True)
        item = r.get("Item")
        # DynamoDB's update_item is atomic; moto's is not: under concurrent calls a CI run read an item that had its
        # key and no value yet. Such an item is not written yet, so it reads as absent.
        if not item or "v" not in item:
            return None
        expires = float(item["expires_at"]["N"]) if "expires_at" in item else None
        if expires is not None and expires <= self.clock():
            return None
        return StateRecord(value=json.loads(item["v"]["S"]), version=int(item["version"]["N"]), expires_at=expires)

    def _write(
        self, key: str, value: dict[str, Any], ttl_s: float | None, condition: str, extra: dict[str, Any]
    ) -> bool:
        now = self.clock()
        values = {":v": {"S": json.dumps(value)}, ":one": _n(1), ":zero": _n(0), ":now": _n(now), **extra}
        update = "SET #v = :v, #ver = if_not_exists(#ver, :zero) + :one"
        if ttl_s is not None:
            values[":exp"] = _n(now + ttl_s)
            update += ", #exp = :exp"
        else:
            update += " REMOVE #exp"
        c = self._client()
        try:
            c.update_item(
                TableName=self.table,
                Key={"k": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={  # DynamoDB rejects names an expression doesn't use
                    n: a
                    for n, a in (("#k", "k"), ("#v", "v"), ("#ver", "version"), ("#exp", "expires_at"))
                    if n in update or n in condition
                },
                ExpressionAttributeValues=values,
            )
        except Exception as e:
            if _conditional_failed(c, e):
                return False
            raise
        return True

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool:
        return self._write(key, value, ttl_s, "attribute_not_exists(#k) OR #exp <= :now", {})

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool:
        return self._write(
            key,
            value,
            ttl_s,
            "#ver = :expected AND (attribute_not_exists(#exp) OR #exp > :now)",
            {":expected": _n(expected_version)},
        )

    def delete(self, key: str) -> None:
        self._client().delete_item(TableName=self.table, Key={"k": {"S": key}})
