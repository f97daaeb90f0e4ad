"""The embedded SQLite queue keeps SQS semantics: visibility timeout, receive count, redrive, replay."""

from __future__ import annotations

import time

from core.embedded.queue import SqliteQueue


def test_visibility_timeout_hides_then_redelivers(tmp_path, clock):
    q = SqliteQueue(tmp_path / "q.db", visibility_timeout_s=30, max_receives=5, clock=clock)
    q.send("a")
    first = q.receive()
    assert [d.body for d in first] == ["a"]
    assert first[0].receive_count == 1
    assert q.receive() == []  # hidden
    clock.advance(29.9)
    assert q.receive() == []  # still hidden just before its timeout
    clock.advance(0.2)
    second = q.receive()
    assert second[0].receive_count == 2
    q.ack(first[0])  # a stale receipt does not delete the redelivered message
    assert q.depth()["queued"] == 1
    q.ack(second[0])
    assert q.depth() == {"queued": 0, "dead_lettered": 0}


def test_release_with_delay_and_delayed_send(tmp_path, clock):
    q = SqliteQueue(tmp_path / "q.db", visibility_timeout_s=30, clock=clock)
    q.send("later", delay_s=60)
    assert q.receive() == []
    clock.advance(60.1)
    d = q.receive()[0]
    q.release(d, delay_s=0)
    assert q.receive()[0].receive_count == 2


def test_redrive_after_max_receives_and_replay(tmp_path):
    q = SqliteQueue(tmp_path / "q.db", visibility_timeout_s=30, max_receives=2)
    mid = q.send("poison")
    for _ in range(2):
        q.release(q.receive()[0])
    assert q.receive() == []  # third receive moves it to the DLQ
    dead = q.take_dead_letters()
    assert [d.message_id for d in dead] == [mid]
    assert q.take_dead_letters() == []
    assert [d.body for d in q.dead_letters()] == ["poison"]
    assert q.replay(mid)
    assert not q.replay(mid)
    back = q.receive()
    assert back[0].body == "poison"
    assert back[0].receive_count == 1


def test_concurrent_receivers_never_share_a_message(tmp_path):
    import threading

    q = SqliteQueue(tmp_path / "q.db", visibility_timeout_s=60)
    for i in range(200):
        q.send(str(i))
    got: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while batch := q.receive(max_messages=7):
            with lock:
                got.extend(d.body for d in batch)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == [str(i) for i in range(200)]


def test_sqlite_stores_keep_the_port_contracts(tmp_path):
    """The same contract the DynamoDB, Firestore and Table Storage stores are held to."""
    from core.embedded.stores import SqliteJobStore, SqliteStateStore
    from tests.contracts import check_job_store, check_state_store

    store = SqliteJobStore(tmp_path / "jobs.db")

    def corrupt(job_id: str) -> None:
        with store.db.tx() as c:
            c.execute("UPDATE jobs SET data = ? WHERE id = ?", ('{"id": "not a job"}', job_id))

    check_job_store(store, corrupt=corrupt)
    check_state_store(lambda clock: SqliteStateStore(tmp_path / "state.db", clock=clock))


def test_a_data_dir_with_the_old_queue_file_keeps_its_messages(make_app, tmp_path):
    """Releases before the queue moved into jobs.db kept it in queue.db: the first start moves every message
    over (dead letters too), deletes the file, and the stranded job runs."""
    import asyncio

    from core.embedded.stores import SqliteJobStore
    from core.entrypoints.local import run_until_done
    from core.jobs.submit import send_job
    from core.models import Job, JobRequest

    data = tmp_path / "data"
    old = SqliteQueue(data / "queue.db", storage_thread=False)
    job = Job(
        id="job_old",
        tenant="acme",
        request=JobRequest(prompt="from before the upgrade"),
        request_hash="h",
        trace_id="0" * 32,
        created_at=time.time(),
        updated_at=time.time(),
    )
    SqliteJobStore(data / "jobs.db", storage_thread=False).create(job)
    send_job(old, job)
    dead = old.send('{"job_id": "job_gone", "trace_id": "' + "0" * 32 + '"}')
    old.db.write("UPDATE messages SET dead = 1, dead_at = ? WHERE id = ?", (time.time(), dead))
    old.db.close()

    app = make_app()
    assert not (data / "queue.db").exists()
    assert app.queue.depth() == {"queued": 1, "dead_lettered": 1}
    assert [d.message_id for d in app.queue.dead_letters()] == [dead]
    asyncio.run(run_until_done(app, [job.id], timeout_s=30))
    assert app.store.get(job.id).status.value == "succeeded"
    assert make_app().queue.depth() == {"queued": 0, "dead_lettered": 1}  # a second start moves nothing twice
