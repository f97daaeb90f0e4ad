"""The port contracts every runtime's stores keep, checked the same way against each of them
(SQLite, DynamoDB on moto, Firestore on its emulator, Table Storage on Azurite), and helpers for the
emulator processes the cloud suites start."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

from core.errors import ConflictError
from core.models import Job, JobRequest, JobStatus
from core.ports import JobStore, StateStore


def check_job_store(store: JobStore, *, prompt: str = "p", corrupt: Callable[[str], None] | None = None) -> None:
    """Create-if-absent, compare-and-set on the version, and the listings the reconciler uses; with
    `corrupt` (writes a record this version can't parse under a job id), that listings skip such a row."""
    import pytest

    now = time.time()
    job = Job(
        id="j1",
        tenant="acme",
        request=JobRequest(prompt=prompt),
        request_hash="h",
        trace_id="t",
        created_at=now,
        updated_at=now - 100,
    )
    store.create(job)
    with pytest.raises(ConflictError):
        store.create(job)
    first, second = store.get("j1"), store.get("j1")
    assert first is not None
    assert second is not None
    assert first.request.prompt == prompt
    first.status = JobStatus.running
    assert store.update(first, expected_version=0)
    assert first.version == 1
    second.status = JobStatus.failed
    assert not store.update(second, expected_version=0)  # the second claim loses and writes nothing
    assert store.get("j1").status is JobStatus.running  # type: ignore[union-attr]
    assert [j.id for j in store.list(status=JobStatus.running, updated_before=now)] == ["j1"]
    assert store.list(status=JobStatus.running, updated_before=now - 200) == []
    assert [j.id for j in store.list(tenant="acme")] == ["j1"]
    assert store.list(tenant="beta") == []
    assert [j.id for j in store.list(tenant="acme", status=JobStatus.running)] == ["j1"]  # GET /v1/jobs?status=
    assert store.list(tenant="acme", status=JobStatus.failed) == []
    assert store.list(tenant="beta", status=JobStatus.running) == []
    assert [j.id for j in store.list(status=JobStatus.running)] == ["j1"]  # the operator's view of every tenant
    if corrupt is not None:
        bad = Job(
            id="j2",
            tenant="acme",
            request=JobRequest(prompt=prompt),
            request_hash="h",
            trace_id="t",
            created_at=now + 1,
            updated_at=now - 100,
            status=JobStatus.running,
        )
        store.create(bad)
        corrupt("j2")
        assert [j.id for j in store.list(tenant="acme")] == ["j1"]
        assert [j.id for j in store.list(status=JobStatus.running, updated_before=now)] == ["j1"]
    check_job_paging(store)


def check_job_paging(store: JobStore) -> None:
    """Cursor pages, newest first, stable while jobs are created between pages: every job that existed when
    the first page was read comes exactly once, in order, ties on created_at broken by id (descending)."""
    from core.paging import Position

    t0 = time.time() - 1000
    stamps = [t0 + 5, t0 + 4, t0 + 4, t0 + 4, t0 + 3, t0 + 2, t0 + 1]  # a three-way tie across a page boundary
    for n, t in enumerate(stamps):
        store.create(
            Job(
                id=f"page-{n}",
                tenant="paged",
                request=JobRequest(prompt="p"),
                request_hash="h",
                trace_id="t",
                created_at=t,
                updated_at=t,
                status=JobStatus.failed if n % 2 else JobStatus.queued,
            )
        )
    expected = [
        j.id
        for j in sorted(
            (store.get(f"page-{n}") for n in range(len(stamps))),  # type: ignore[misc]
            key=lambda j: (j.created_at, j.id),
            reverse=True,
        )
    ]
    for status in (None, JobStatus.failed):
        for tenant in ("paged", None):
            want = [i for i in expected if status is None or store.get(i).status is status]  # type: ignore[union-attr]
            seen: list[str] = []
            after = None
            for page_no in range(20):
                page = store.list(tenant=tenant, status=status, limit=3, after=after)
                if not page:
                    break
                seen += [j.id for j in page if j.id.startswith("page-")]  # every tenant's: others' too
                after = Position(page[-1].created_at, page[-1].id)
                late = f"late-{status}-{tenant}-{page_no}"  # created between pages: newer, so never on a later page
                store.create(
                    Job(
                        id=late,
                        tenant="paged",
                        request=JobRequest(prompt="p"),
                        request_hash="h",
                        trace_id="t",
                        created_at=time.time(),
                        updated_at=time.time(),
                        status=status or JobStatus.queued,
                    )
                )
            assert seen == want, (status, tenant, seen, want)


def check_state_store(make: Callable[[Callable[[], float]], StateStore]) -> None:
    """put_if_absent, compare_and_set and TTL: an expired record is absent to reads and conditions,
    whenever the platform gets round to deleting it. Keys may hold '/', '#' and '?'."""
    clock = [1000.0]
    state = make(lambda: clock[0])
    key = "idem:acme/key#1?"
    assert state.put_if_absent(key, {"a": 1}, ttl_s=10)
    assert not state.put_if_absent(key, {"a": 2})
    rec = state.get(key)
    assert rec is not None
    assert rec.value == {"a": 1}
    assert rec.version == 1
    assert state.compare_and_set(key, {"a": 3}, expected_version=1, ttl_s=10)
    assert not state.compare_and_set(key, {"a": 4}, expected_version=1)
    clock[0] += 11
    assert state.get(key) is None
    assert not state.compare_and_set(key, {"a": 5}, expected_version=2)
    assert state.put_if_absent(key, {"a": 6})
    rec = state.get(key)
    assert rec is not None
    assert rec.version == 3
    assert rec.expires_at is None
    assert rec.value == {"a": 6}
    state.delete(key)
    assert state.get(key) is None


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{proc.args[0]} did not start listening on {port}")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop an emulator by pid: terminate, then kill if it doesn't exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
