"""JobQueue on SQS (claim-check to S3 for bodies over 256 KB), and the pull side `alto worker` runs on it:
long-polled batch receives, acknowledgements deleted ten to a call, visibility renewed ten to a call."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from core.access import THREADED
from core.claimcheck import check_in, check_out
from core.logs import log_event
from core.ports import BlobStore, Delivery

SQS_MAX_BYTES = 256 * 1024
MAX_DELAY_S = 900  # SQS's DelaySeconds ceiling; a longer deferral simply defers again
MAX_VISIBILITY_S = 43_200


class SqsQueue:
    access = THREADED  # network calls: an event loop runs them in threads (core.access)

    def __init__(
        self,
        client: Callable[[], Any],
        queue_url: str,
        blobs: BlobStore,
        *,
        visibility_timeout_s: float = 900,
        limit_bytes: int = SQS_MAX_BYTES,
        receive_wait_s: float = 0,
    ) -> None:
        self._client = client
        self.url = queue_url
        self.blobs = blobs
        self.visibility_timeout_s = visibility_timeout_s
        self.limit_bytes = limit_bytes
        self.receive_wait_s = receive_wait_s  # a pull worker long-polls (an empty receive is billed like a full one)
        self._acks: list[Delivery] = []  # acknowledged, not yet deleted: sent ten to a DeleteMessageBatch
        self._acks_lock = threading.Lock()

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        body = check_in(body, self.blobs, limit_bytes=self.limit_bytes)
        r = self._client().send_message(
            QueueUrl=self.url, MessageBody=body, DelaySeconds=min(MAX_DELAY_S, max(0, math.ceil(delay_s)))
        )
        return str(r["MessageId"])

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        self.flush()  # what finished since the last receive is deleted before this one waits
        r = self._client().receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=int(self.receive_wait_s),
            VisibilityTimeout=int(visibility_timeout_s or self.visibility_timeout_s),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            self.delivery(m["MessageId"], m["Body"], m["ReceiptHandle"], m.get("Attributes", {}))
            for m in r.get("Messages", [])
        ]

    def delivery(self, message_id: str, body: str, receipt: str, attributes: dict[str, Any]) -> Delivery:
        """A Delivery from an SQS message (also how Lambda's event records are read)."""
        return Delivery(
            message_id=message_id,
            body=check_out(body, self.blobs),
            receipt=receipt,
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            attributes=attributes,
        )

    def ack(self, delivery: Delivery) -> None:
        """Deleted with the next receive, or at once when ten are waiting: a job is terminal (or its next
        message sent) before its ack, so a delete lost with the process only costs a redelivery that ends
        at once, never a second provider call."""
        with self._acks_lock:
            self._acks.append(delivery)
            full = len(self._acks) >= 10
        if full:
            self.flush()

    def flush(self) -> None:
        """Delete the acknowledged messages, ten to a call."""
        with self._acks_lock:
            pending, self._acks = self._acks, []
        for i in range(0, len(pending), 10):
            chunk = pending[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": d.receipt} for n, d in enumerate(chunk)]
            try:
                r = self._client().delete_message_batch(QueueUrl=self.url, Entries=entries)
            except Exception:  # SQS unreachable: what is not deleted yet waits for the next flush
                with self._acks_lock:
                    self._acks[:0] = pending[i:]
                raise
            for failed in r.get("Failed", []):  # an expired receipt: the message comes back and ends at once
                log_event("sqs.delete_failed", logging.WARNING, code=failed.get("Code"), id=failed.get("Id"))

    def extend(self, deliveries: list[Delivery], seconds: float) -> list[Delivery]:
        """Hide `deliveries` for `seconds` more, ten to a ChangeMessageVisibilityBatch; the ones SQS refuses
        (a receipt gone stale: the message was redelivered) are returned."""
        lost: list[Delivery] = []
        timeout = min(MAX_VISIBILITY_S, max(0, math.ceil(seconds)))
        for i in range(0, len(deliveries), 10):
            chunk = deliveries[i : i + 10]
            entries = [
                {"Id": str(n), "ReceiptHandle": d.receipt, "VisibilityTimeout": timeout} for n, d in enumerate(chunk)
            ]
            r = self._client().change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            lost += [chunk[int(f["Id"])] for f in r.get("Failed", [])]
        return lost

    def close(self) -> None:
        self.flush()

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        self._client().change_message_visibility(
            QueueUrl=self.url,
            ReceiptHandle=delivery.receipt,
            VisibilityTimeout=min(MAX_VISIBILITY_S, max(0, math.ceil(delay_s))),
        )


class LambdaBatch:
    """The queue as a Lambda SQS batch sees it: Lambda deletes every record not reported as failed,
    so `ack` only records success and `release` sets the retry delay and reports the failure."""

    def __init__(self, queue: SqsQueue) -> None:
        self.queue = queue
        self.failures: list[str] = []

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        return self.queue.send(body, delay_s=delay_s)

    def ack(self, delivery: Delivery) -> None:
        pass

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        self.failures.append(delivery.message_id)
        try:
            self.queue.release(delivery, delay_s=delay_s)
        except Exception:  # the record is redelivered after the queue's visibility timeout anyway
            pass
