"""Job and trace ids: 128 random bits each, never repeated, not even by a forked worker process."""

from __future__ import annotations

import os
import re
import threading

from core.ids import new_job_id, new_trace_id, random_hex


def test_ids_have_their_shapes_and_never_repeat():
    ids = [new_job_id() for _ in range(2000)] + [new_job_id(ordered=True) for _ in range(2000)]
    assert all(re.fullmatch(r"job_[0-9a-f]{32}", i) for i in ids[:2000])
    assert all(re.fullmatch(r"job_[0-9a-f]{43}", i) for i in ids[2000:])
    traces = [new_trace_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in traces)
    assert len(set(ids)) == len(ids)
    assert len(set(traces)) == len(traces)
    assert len(set(i[-32:] for i in ids) | set(traces)) == len(ids) + len(traces)


def test_threads_drawing_at_once_get_distinct_ids():
    out: list[list[str]] = [[] for _ in range(4)]

    def draw(mine: list[str]) -> None:
        mine.extend(random_hex() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(o,)) for o in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drawn = [i for o in out for i in o]
    assert len(set(drawn)) == len(drawn) == 12000


def test_a_forked_child_never_hands_out_its_parents_next_ids():
    random_hex()  # the pool now holds ids the parent has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(random_hex() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 4096).decode().split())
    os.close(read)
    parent = {random_hex() for _ in range(8)}
    assert len(child) == 8
    assert not child & parent
