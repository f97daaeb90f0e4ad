"""JobStore and StateStore on DynamoDB: every change is one conditional write.

Jobs table: partition key `id`; GSIs `by_status` (status, updated_at) for the reconciler and
`by_tenant` (tenant, created_at) for listings. A terminal job gets `expires_at` (the table's TTL
attribute) after the retention period. State table: partition key `k`; `expires_at` is the TTL
attribute, and because DynamoDB deletes expired items lazily (within days), reads and conditions
treat an expired item as absent themselves.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from core.errors import ConflictError
from core.models import Job, JobStatus
from core.ports import StateRecord
from core.records import listed_jobs, stored_job

JOB_RETENTION_S = 30 * 86400


def _n(x: float | int) -> dict[str, str]:
    return {"N": repr(x) if isinstance(x, float) else str(x)}


def _conditional_failed(c: Any, e: Exception) -> bool:
    return isinstance(e, c.exceptions.ConditionalCheckFailedException)


class DynamoJobStore:
    remote = True  # network calls: the processing path runs them off the event loop (core.jobs.offload)

    def __init__(self, client: Callable[[], Any], table: str, *, retention_s: float = JOB_RETENTION_S) -> None:
        self._client = client
        self.table = table
        self.retention_s = retention_s

    def _item(self, job: Job) -> dict[str, Any]:
        item = {
            "id": {"S": job.id}, "tenant": {"S": job.tenant}, "status": {"S": job.status.value},
            "version": _n(job.version), "created_at": _n(job.created_at), "updated_at": _n(job.updated_at),
            "data": {"S": job.model_dump_json()},
        }
        if job.status.terminal:
            item["expires_at"] = _n(int((job.finished_at or job.updated_at) + self.retention_s))
        return item

    def create(self, job: Job) -> None:
        c = self._client()
        try:
            c.put_item(TableName=self.table, Item=self._item(job), ConditionExpression="attribute_not_exists(#id)",
                       ExpressionAttributeNames={"#id": "id"})
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
                TableName=self.table, Item=self._item(new), ConditionExpression="#ver = :expected",
                ExpressionAttributeNames={"#ver": "version"}, ExpressionAttributeValues={":expected": _n(expected_version)},
            )
        except Exception as e:
            if _conditional_failed(c, e):
                return False
            raise
        job.version = expected_version + 1
        return True

    def list(
        self, *, tenant: str | None = None, status: JobStatus | None = None, limit: int = 50,
        updated_before: float | None = None,
    ) -> list[Job]:
        c = self._client()
        kwargs: dict[str, Any] = {"TableName": self.table}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []
        if status is not None:
            kwargs["IndexName"] = "by_status"
            names["#s"] = "status"
            values[":s"] = {"S": status.value}
            key = "#s = :s"
            if updated_before is not None:
                values[":before"] = _n(updated_before)
                names["#upd"] = "updated_at"
                key += " AND #upd < :before"
            kwargs["KeyConditionExpression"] = key
            if tenant is not None:
                values[":t"] = {"S": tenant}
                names["#t"] = "tenant"
                filters.append("#t = :t")
        elif tenant is not None:
            kwargs["IndexName"] = "by_tenant"
            values[":t"] = {"S": tenant}
            names["#t"] = "tenant"
            kwargs["KeyConditionExpression"] = "#t = :t"
            if updated_before is not None:
                values[":before"] = _n(updated_before)
                names["#upd"] = "updated_at"
                filters.append("#upd < :before")
        else:
            return self._scan(limit, updated_before)
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if names:
            kwargs["ExpressionAttributeNames"] = names
        kwargs["ExpressionAttributeValues"] = values
        kwargs["ScanIndexForward"] = updated_before is not None  # oldest first when sweeping, else newest
        out: list[Job] = []
        for page in c.get_paginator("query").paginate(**kwargs):
            out.extend(listed_jobs([i["data"]["S"] for i in page.get("Items", [])]))
            if len(out) >= limit:
                break
        return out[:limit]

    def _scan(self, limit: int, updated_before: float | None) -> list[Job]:
        kwargs: dict[str, Any] = {"TableName": self.table}
        if updated_before is not None:
            kwargs.update(FilterExpression="#upd < :before", ExpressionAttributeNames={"#upd": "updated_at"},
                          ExpressionAttributeValues={":before": _n(updated_before)})
        jobs = listed_jobs([i["data"]["S"] for page in self._client().get_paginator("scan").paginate(**kwargs)
                            for i in page.get("Items", [])])
        jobs.sort(key=lambda j: j.created_at, reverse=updated_before is None)
        return jobs[:limit]


class DynamoStateStore:
    remote = True  # network calls: the processing path runs them off the event loop (core.jobs.offload)

    def __init__(self, client: Callable[[], Any], table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.table = table
        self.clock = clock

    def get(self, key: str) -> StateRecord | None:
        r = self._client().get_item(TableName=self.table, Key={"k": {"S": key}}, ConsistentRead=True)
        item = r.get("Item")
        if not item:
            return None
        expires = float(item["expires_at"]["N"]) if "expires_at" in item else None
        if expires is not None and expires <= self.clock():
            return None
        return StateRecord(value=json.loads(item["v"]["S"]), version=int(item["version"]["N"]), expires_at=expires)

    def _write(self, key: str, value: dict[str, Any], ttl_s: float | None, condition: str,
               extra: dict[str, Any]) -> bool:
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
                TableName=self.table, Key={"k": {"S": key}}, UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames={  # DynamoDB rejects names an expression doesn't use
                    n: a for n, a in (("#k", "k"), ("#v", "v"), ("#ver", "version"), ("#exp", "expires_at"))
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
            key, value, ttl_s, "#ver = :expected AND (attribute_not_exists(#exp) OR #exp > :now)",
            {":expected": _n(expected_version)},
        )

    def delete(self, key: str) -> None:
        self._client().delete_item(TableName=self.table, Key={"k": {"S": key}})
