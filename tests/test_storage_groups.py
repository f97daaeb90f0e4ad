"""The embedded stores' group commit, through the stores' own offload: one commit per turn of the loop, a
failing call isolated in its group, another process's lock waited for on the storage thread (never on the
loop), and checkpoints kept off the loop. Real SQLite files, a real second process."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import pytest

from core.embedded import sqlite as embedded_sqlite
from core.embedded.queue import SqliteQueue
from core.embedded.storage_thread import storage_thread
from core.embedded.stores import SqliteJobStore
from core.errors import ConflictError
from core.jobs.offload import offload
from core.models import Job, JobRequest


def _job(i: int | str) -> Job:
    return Job(
        id=f"job-{i}",
        tenant="acme",
        request=JobRequest(prompt=f"question {i}"),
        request_hash="h",
        trace_id="0" * 32,
        created_at=1.0,
        updated_at=1.0,
    )


def _counts() -> tuple[int, int, int]:
    st = storage_thread()
    return st.groups, st.loop_groups, st.calls


def _wait_idle(st, timeout_s: float = 10.0) -> None:
    """Until the storage thread has run all it was handed (an earlier test's checkpoint, say): while it
    has not, the loop hands its groups over instead of trying the locks."""
    deadline = time.time() + timeout_s
    while not st.idle() and time.time() < deadline:
        time.sleep(0.01)
    assert st.idle()


def _stored(path, table: str = "jobs") -> int:
    with sqlite3.connect(path) as c:  # another connection: sees only what was committed
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_the_calls_of_one_turn_commit_as_one_group_on_the_loop(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    queue = SqliteQueue(tmp_path / "queue.db")
    io, qio = offload(store), offload(queue)

    _wait_idle(storage_thread())

    async def main() -> None:
        before = _counts()
        await asyncio.gather(*(io(store.create, _job(i)) for i in range(10)), qio(queue.send, "body"))
        groups, on_loop, calls = (a - b for a, b in zip(_counts(), before, strict=True))
        assert (groups, on_loop, calls) == (1, 1, 11)  # both files, one group, committed on the loop

    asyncio.run(main())
    assert _stored(tmp_path / "jobs.db") == 10
    assert _stored(tmp_path / "queue.db", "messages") == 1


def test_a_failing_call_is_undone_alone(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    io = offload(store)

    async def main() -> list[object]:
        return await asyncio.gather(
            io(store.create, _job("a")),
            io(store.create, _job("a")),
            io(store.create, _job("b")),
            return_exceptions=True,
        )

    first, duplicate, other = asyncio.run(main())
    assert first is None
    assert other is None
    assert isinstance(duplicate, ConflictError)
    assert _stored(tmp_path / "jobs.db") == 2


HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""


def test_another_process_lock_is_waited_for_on_the_thread_while_the_loop_runs(tmp_path):
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path)
    io = offload(store)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "1.0"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    loop_waits = embedded_sqlite.LOCK_WAIT_S["other"]

    async def main() -> tuple[float, float]:
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - t - 0.01)

        tick = asyncio.create_task(ticker())
        t = time.perf_counter()
        before = _counts()
        await io(store.create, _job("waited"))
        waited = time.perf_counter() - t
        groups, on_loop, _ = (a - b for a, b in zip(_counts(), before, strict=True))
        assert groups == 1
        assert on_loop == 0  # it ran on the thread
        done.set()
        await tick
        return waited, max(lags)

    try:
        waited, worst_lag = asyncio.run(main())
    finally:
        holder.wait(timeout=10)
    assert waited >= 0.5  # it really waited for the other process's commit
    assert worst_lag < 0.25  # while the loop went on running (a 10 ms ticker)
    assert embedded_sqlite.LOCK_WAIT_S["other"] - loop_waits < 0.05  # the loop only tried the lock
    assert _stored(path) == 1


def test_checkpoints_run_on_the_storage_thread_and_keep_the_log_short(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    io = offload(store)
    st = storage_thread()
    before = st.checkpoints

    async def main() -> int:
        for r in range(600):  # 600 groups on the loop, of five records each (~20 MB of log unchecked)
            await asyncio.gather(*(io(store.create, _job(f"{r}-{i}")) for i in range(5)))
        # the loop's connection never checkpoints itself (a checkpoint fsyncs)
        return store.db.conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]

    assert asyncio.run(main()) == 0
    deadline = time.time() + 10
    while st.checkpoints == before and time.time() < deadline:
        time.sleep(0.05)
    assert st.checkpoints > before
    wal = tmp_path / "jobs.db-wal"
    assert wal.stat().st_size < 6 * 1024 * 1024  # restarted, not grown by every page ever written
    assert _stored(tmp_path / "jobs.db") == 3000


@pytest.mark.parametrize("on_loop", [True, False])
def test_both_modes_give_the_same_results(tmp_path, on_loop):
    st = storage_thread()
    _wait_idle(st)
    st.on_loop, saved = on_loop, st.on_loop
    try:
        store = SqliteJobStore(tmp_path / "jobs.db")
        io = offload(store)

        async def main() -> tuple[list[object], int]:
            before = _counts()
            out = await asyncio.gather(io(store.create, _job(1)), io(store.get, "job-1"), io(store.get, "missing"))
            return out, _counts()[1] - before[1]

        (created, got, missing), loop_groups = asyncio.run(main())
        assert created is None
        assert missing is None
        assert got is not None
        assert got.id == "job-1"  # a later call of the group sees an earlier one's write
        assert loop_groups == (1 if on_loop else 0)
    finally:
        st.on_loop = saved


class _Watching:
    """A queue that, as the submit sends, looks from another connection at what the job file shows."""

    def __init__(self, inner: SqliteQueue) -> None:
        self.inner, self.seen = inner, []

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        self.seen.append((_stored(self.inner.db.path), _stored(self.inner.db.path, "messages")))
        return self.inner.send(body, delay_s=delay_s)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_submit_writes_its_job_and_message_in_one_transaction(make_app, tmp_path):
    queue = _Watching(SqliteQueue(tmp_path / "data" / "jobs.db"))
    app = make_app(queue=queue)
    job, created = app.service.submit("acme", JobRequest(prompt="hello"), idempotency_key="k-1")
    assert created
    assert queue.seen == [(0, 0)]  # mid-submit, another connection sees neither
    assert _stored(tmp_path / "data" / "jobs.db") == 1
    assert _stored(tmp_path / "data" / "jobs.db", "messages") == 1
    assert app.service.submit("acme", JobRequest(prompt="hello"), idempotency_key="k-1") == (
        app.store.get(job.id),
        False,
    )


def test_at_once_keeps_what_ran_before_an_exception_and_joins_a_running_group(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    st = storage_thread()

    def create_then_fail() -> None:
        store.create(_job("kept"))
        raise ValueError("after the write")

    with pytest.raises(ValueError, match="after the write"):
        st.at_once(create_then_fail)
    assert _stored(tmp_path / "jobs.db") == 1  # as if the create had committed alone
    _wait_idle(st)  # that commit requested a checkpoint, which may still be running on the thread

    async def main() -> None:  # inside the loop's group, at_once is just a call of that group
        before = _counts()
        await offload(store)(lambda: st.at_once(store.create, _job("nested")))
        assert tuple(a - b for a, b in zip(_counts(), before, strict=True)) == (1, 1, 1)

    asyncio.run(main())
    assert _stored(tmp_path / "jobs.db") == 2


def test_asubmit_joins_the_loop_turns_group_and_a_refused_submit_stores_nothing(make_app, tmp_path):
    """An async app's submits commit with the other calls of their loop turn (one commit for all), each
    job with its message; a bad request raises in the caller's task and leaves no half job."""
    from core.errors import InputError

    app = make_app()
    db = tmp_path / "data" / "jobs.db"
    _wait_idle(storage_thread())

    async def main() -> tuple[list[tuple[Job, bool]], tuple[int, ...]]:
        before = _counts()

        async def worker_read() -> None:  # a worker's store call, made in the same turn
            await offload(app.store)(app.store.get, "job-none")

        async def client(i: int) -> tuple[Job, bool]:  # an async app's handler, running in the same turn
            return await app.service.asubmit("acme", JobRequest(prompt=f"q {i}"))

        made = await asyncio.gather(*(client(i) for i in range(5)), worker_read())
        return made[:5], tuple(a - b for a, b in zip(_counts(), before, strict=True))

    made, (groups, on_loop, calls) = asyncio.run(main())
    assert (groups, on_loop, calls) == (1, 1, 6)
    assert all(created for _, created in made)
    assert _stored(db) == 5
    assert _stored(db, "messages") == 5
    ids = [job.id for job, _ in made]
    assert [app.store.get(i).request.prompt for i in ids] == [f"q {i}" for i in range(5)]
    # embedded ids sort by creation time (one B-tree page for a commit's inserts), 128 random bits after it
    assert all(len(i) == len("job_") + 11 + 32 for i in ids)
    assert sorted(ids)[0][:10] == ids[-1][:10]

    with pytest.raises(InputError):
        asyncio.run(app.service.asubmit("acme", JobRequest(workflow="no-such-workflow", inputs={"document": "d"})))
    assert _stored(db) == 5
    assert _stored(db, "messages") == 5


def test_a_stored_job_leaves_unset_fields_out_and_reads_back_equal(tmp_path):
    """The row leaves out fields that are None (each reads back as its default, None), not a None inside the
    request's own data: every stored field comes back exactly."""
    store = SqliteJobStore(tmp_path / "jobs.db", storage_thread=False)
    job = _job("sparse")
    job.request = JobRequest(prompt="q", metadata={"kept": None, "tag": "x"})
    store.create(job)
    row = sqlite3.connect(tmp_path / "jobs.db").execute("SELECT data FROM jobs").fetchone()[0]
    assert '"kept":null' in row
    assert '"finished_at"' not in row
    assert len(row) < len(job.model_dump_json())
    assert store.get(job.id) == job
