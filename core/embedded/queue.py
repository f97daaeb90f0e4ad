"""SQLite job queue with the semantics of SQS: visibility timeout, receive count, redrive to a DLQ.

A message received more than `max_receives` times is moved to the dead-letter state on its next
receive, exactly like an SQS redrive policy, and surfaces through `take_dead_letters()` so the
runtime can mark its job `dead_lettered`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from core.embedded.storage_thread import after_commit
from core.ids import ms_hex
from core.ports import Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    created_at REAL NOT NULL,
    dead INTEGER NOT NULL DEFAULT 0,
    dead_at REAL,
    dead_handled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (dead, visible_at);
"""


class SqliteQueue:
    def __init__(
        self,
        path: Path | str,
        *,
        visibility_timeout_s: float = 120.0,
        max_receives: int = 5,
        storage_thread: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from core.embedded.sqlite import SqliteDb
        from core.embedded.storage_thread import storage_thread as shared

        # bootstrap puts it in jobs.db with the job store, so a job and its message are one transaction
        # (`adopt_queue_file` moves in the queue.db of earlier releases)
        self.db = SqliteDb(path, SCHEMA, grouped=storage_thread)
        if storage_thread:  # the worker loop's calls join the storage thread's groups (core.ports.Access)
            self.access = shared()
        self.visibility_timeout_s = visibility_timeout_s
        self.max_receives = max_receives
        self.clock = clock  # visibility and delays; injectable, so a test moves time instead of sleeping
        self.listeners: list[Callable[[], None]] = []  # called after each immediate send (wakes idle workers)

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        # ids and receipts need to be unique, not secret (this machine's own file): the random module's
        # generator, reseeded in every forked child, spares each send and receive a getrandom call; the
        # time first, so a commit's new ids share the id index's last page instead of one random page each
        now = self.clock()
        message_id = f"msg_{ms_hex(now)}{random.getrandbits(64):016x}"
        self.db.write(
            "INSERT INTO messages (id, body, visible_at, created_at) VALUES (?, ?, ?, ?)",
            (message_id, body, now + delay_s, now),
        )
        if delay_s <= 0:  # once the message is committed: a worker woken sooner would find nothing
            for listener in self.listeners:
                after_commit(listener)
        return message_id

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        vt = self.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        now = self.clock()
        out: list[Delivery] = []
        with self.db.tx() as c:
            rows = c.execute(
                "SELECT id, body, receive_count FROM messages WHERE dead = 0 AND visible_at <= ? "
                "ORDER BY visible_at LIMIT ?",
                (now, max_messages),
            ).fetchall()
            for message_id, body, count in rows:
                if count >= self.max_receives:
                    c.execute("UPDATE messages SET dead = 1, dead_at = ? WHERE id = ?", (now, message_id))
                    continue
                receipt = f"{random.getrandbits(64):016x}"
                c.execute(
                    "UPDATE messages SET receive_count = ?, visible_at = ?, receipt = ? WHERE id = ?",
                    (count + 1, now + vt, receipt, message_id),
                )
                out.append(Delivery(message_id=message_id, body=body, receive_count=count + 1, receipt=receipt))
        return out

    def ack(self, delivery: Delivery) -> None:
        self.db.write("DELETE FROM messages WHERE id = ? AND receipt = ?", (delivery.message_id, delivery.receipt))

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        self.db.write(
            "UPDATE messages SET visible_at = ? WHERE id = ? AND receipt = ? AND dead = 0",
            (self.clock() + delay_s, delivery.message_id, delivery.receipt),
        )

    # -- dead-letter side -------------------------------------------------------------------------

    def take_dead_letters(self, limit: int = 100) -> list[Delivery]:
        """Newly dead-lettered messages, each returned once, for the runtime's dead-letter handler."""
        with self.db.tx() as c:
            rows = c.execute(
                "SELECT id, body, receive_count FROM messages WHERE dead = 1 AND dead_handled = 0 LIMIT ?", (limit,)
            ).fetchall()
            c.executemany("UPDATE messages SET dead_handled = 1 WHERE id = ?", [(r[0],) for r in rows])
        return [Delivery(message_id=r[0], body=r[1], receive_count=r[2]) for r in rows]

    def dead_letters(self, *, limit: int = 100) -> list[Delivery]:
        rows = (
            self.db.conn()
            .execute(
                "SELECT id, body, receive_count, dead_at FROM messages WHERE dead = 1 ORDER BY dead_at LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [Delivery(message_id=r[0], body=r[1], receive_count=r[2], attributes={"dead_at": r[3]}) for r in rows]

    def replay(self, message_id: str) -> bool:
        """Move a dead-lettered message back to the queue with a fresh receive count."""
        cur = self.db.write(
            "UPDATE messages SET dead = 0, dead_handled = 0, dead_at = NULL, receive_count = 0, "
            "visible_at = ?, receipt = NULL WHERE id = ? AND dead = 1",
            (self.clock(), message_id),
        )
        return cur.rowcount == 1

    def depth(self) -> dict[str, int]:
        c = self.db.conn()
        live = c.execute("SELECT COUNT(*) FROM messages WHERE dead = 0").fetchone()[0]
        dead = c.execute("SELECT COUNT(*) FROM messages WHERE dead = 1").fetchone()[0]
        return {"queued": live, "dead_lettered": dead}


def adopt_queue_file(old: Path, queue: SqliteQueue) -> int:
    """Move the messages of a separate queue file (`queue.db`, before the queue moved into jobs.db) into
    `queue`, dead letters included, then delete the file; the number moved. Safe to repeat and to race:
    a message already moved is skipped by its id, and a second process finds the file gone."""
    if not old.exists() or old.resolve() == Path(queue.db.path).resolve():
        return 0
    c = queue.db.conn()
    c.execute("ATTACH DATABASE ? AS old", (str(old),))
    try:
        with queue.db.tx() as t:
            cols = [r[1] for r in t.execute("PRAGMA old.table_info(messages)")]  # none: an empty file
            kept = ", ".join(col for col in cols if col in _COLUMNS)
            moved = (
                t.execute(f"INSERT OR IGNORE INTO main.messages ({kept}) SELECT {kept} FROM old.messages").rowcount
                if kept
                else 0
            )
    finally:
        c.execute("DETACH DATABASE old")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{old}{suffix}").unlink(missing_ok=True)
    return moved


_COLUMNS = ("id", "body", "visible_at", "receive_count", "receipt", "created_at", "dead", "dead_at", "dead_handled")
