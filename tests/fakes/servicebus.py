"""A Service Bus fake for the pull worker's proofs (its official emulator is a container, and no Docker runs here):
a broker on loopback HTTP that keeps peek-lock semantics (lock duration, lock tokens, renewal, a lock lost on expiry,
delivery counts, abandon, scheduled messages, dead-lettering past maxDeliveryCount), and client classes shaped like
`azure.servicebus.ServiceBusClient`'s sender and receiver, which the adapter uses unchanged. Several worker
processes share one broker, so kill -9 and SIGTERM are real.

`python -m tests.fakes.servicebus ARGS...` runs `alto ARGS...` with the SDK's client swapped for this one (the
namespace setting is the broker's URL)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Message:
    seq: int
    message_id: str
    body: str
    properties: dict[str, Any]
    visible_at: float
    delivery_count: int = 0
    lock_token: str | None = None
    locked_until: float = 0.0


@dataclass
class Broker:
    lock_duration_s: float = 3.0
    max_delivery_count: int = 5
    messages: dict[int, Message] = field(default_factory=dict)
    dead: list[Message] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("received", "completed", "renewed"), 0))

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.seqs = itertools.count(1)

    def send(self, body: str, properties: dict[str, Any], at: float | None = None) -> int:
        with self.cond:
            seq = next(self.seqs)
            self.messages[seq] = Message(seq, uuid.uuid4().hex, body, properties, at or time.time())
            self.cond.notify_all()
            return seq

    def _expire_locks(self, now: float) -> None:
        for m in list(self.messages.values()):
            if m.lock_token and m.locked_until <= now:  # the lock ran out: visible again, a delivery spent
                m.lock_token = None
                self._dead_letter_if_spent(m)

    def _dead_letter_if_spent(self, m: Message) -> None:
        if m.delivery_count >= self.max_delivery_count:
            self.dead.append(self.messages.pop(m.seq))

    def receive(self, max_count: int, wait_s: float) -> list[dict[str, Any]]:
        end = time.time() + wait_s
        with self.cond:
            while True:
                now = time.time()
                self._expire_locks(now)
                ready = [m for m in self.messages.values() if not m.lock_token and m.visible_at <= now][:max_count]
                if ready or now >= end:
                    break
                self.cond.wait(timeout=min(0.05, end - now))
            for m in ready:
                m.delivery_count += 1
                m.lock_token, m.locked_until = uuid.uuid4().hex, now + self.lock_duration_s
                self.counts["received"] += 1
            return [
                {"seq": m.seq, "message_id": m.message_id, "body": m.body, "properties": m.properties,
                 "delivery_count": m.delivery_count, "lock_token": m.lock_token}
                for m in ready
            ]  # fmt: skip

    def settle(self, verb: str, seq: int, token: str) -> bool:
        with self.cond:
            self._expire_locks(time.time())
            m = self.messages.get(seq)
            if m is None or m.lock_token != token:
                return False  # the lock was lost: the message was (or will be) delivered again
            if verb == "complete":
                del self.messages[seq]
                self.counts["completed"] += 1
            elif verb == "renew":
                m.locked_until = time.time() + self.lock_duration_s
                self.counts["renewed"] += 1
            elif verb == "abandon":
                m.lock_token = None
                self._dead_letter_if_spent(m)
                self.cond.notify_all()
            elif verb == "deadletter":
                self.dead.append(self.messages.pop(seq))
            return True

    def stats(self) -> dict[str, Any]:
        with self.cond:
            self._expire_locks(time.time())
            return {
                **self.counts,
                "active": len(self.messages),
                "locked": sum(1 for m in self.messages.values() if m.lock_token),
                "dead": len(self.dead),
                "deliveries": {m.body: m.delivery_count for m in self.messages.values()},
            }


class BrokerServer:
    """The broker on loopback HTTP (a thread of the test process)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = outer.handle(self.path.strip("/"), req)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, verb: str, req: dict[str, Any]) -> Any:
        b = self.broker
        if verb == "send":
            return b.send(req["body"], req["properties"], req.get("at"))
        if verb == "receive":
            return b.receive(req["max"], req["wait"])
        if verb == "stats":
            return b.stats()
        return b.settle(verb, req["seq"], req["token"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the client side, shaped like azure.servicebus


def _call(url: str, verb: str, **req: Any) -> Any:
    r = urllib.request.Request(f"{url}/{verb}", data=json.dumps(req).encode(), method="POST")
    with urllib.request.urlopen(r, timeout=60) as resp:
        return json.loads(resp.read())


class ReceivedMessage:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.message_id = raw["message_id"]
        self.delivery_count = raw["delivery_count"]
        self.lock_token = raw["lock_token"]
        # the SDK hands application properties back with bytes keys (AMQP symbols), and the body as chunks
        self.application_properties = {k.encode(): v for k, v in raw["properties"].items()}

    @property
    def body(self) -> Any:
        return iter([self.raw["body"].encode()])


class Sender:
    def __init__(self, url: str) -> None:
        self.url = url

    def send_messages(self, msg: Any) -> None:
        _call(self.url, "send", body=str(msg), properties=_props(msg))

    def schedule_messages(self, msg: Any, when: Any) -> list[int]:
        return [_call(self.url, "send", body=str(msg), properties=_props(msg), at=when.timestamp())]


def _props(msg: Any) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in (msg.application_properties or {}).items()}


class Receiver:
    def __init__(self, url: str) -> None:
        self.url = url

    def receive_messages(self, max_message_count: int = 1, max_wait_time: float | None = None) -> list[ReceivedMessage]:
        raws = _call(self.url, "receive", max=max_message_count, wait=max_wait_time or 0)
        return [ReceivedMessage(r) for r in raws]

    def _settle(self, verb: str, message: ReceivedMessage) -> None:
        if not _call(self.url, verb, seq=message.raw["seq"], token=message.lock_token):
            from azure.servicebus.exceptions import MessageLockLostError

            raise MessageLockLostError(message=f"the lock on message {message.message_id} was lost")

    def complete_message(self, message: ReceivedMessage) -> None:
        self._settle("complete", message)

    def abandon_message(self, message: ReceivedMessage) -> None:
        self._settle("abandon", message)

    def renew_message_lock(self, message: ReceivedMessage) -> None:
        self._settle("renew", message)

    def dead_letter_message(self, message: ReceivedMessage, reason: str = "", error_description: str = "") -> None:
        self._settle("deadletter", message)

    def close(self) -> None:
        pass


class ServiceBusClient:
    """`azure.servicebus.ServiceBusClient`'s shape; the namespace is the broker's URL."""

    def __init__(self, fully_qualified_namespace: str, credential: Any = None, **_: Any) -> None:
        self.url = fully_qualified_namespace

    def get_queue_sender(self, queue_name: str) -> Sender:
        return Sender(self.url)

    def get_queue_receiver(self, queue_name: str, **_: Any) -> Receiver:
        return Receiver(self.url)


def stats(url: str) -> dict[str, Any]:
    return _call(url, "stats")


if __name__ == "__main__":
    import sys

    import azure.servicebus

    azure.servicebus.ServiceBusClient = ServiceBusClient  # type: ignore[misc,assignment]
    from core.entrypoints.cli import main

    sys.exit(main(sys.argv[1:]))
