"""JobQueue on SQS (claim-check to S3 for bodies over 256 KB)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from core.claimcheck import check_in, check_out
from core.ports import BlobStore, Delivery

SQS_MAX_BYTES = 256 * 1024
MAX_DELAY_S = 900  # SQS's DelaySeconds ceiling; a longer deferral simply defers again
MAX_VISIBILITY_S = 43_200


class SqsQueue:
    def __init__(
        self,
        client: Callable[[], Any],
        queue_url: str,
        blobs: BlobStore,
        *,
        visibility_timeout_s: float = 900,
        limit_bytes: int = SQS_MAX_BYTES,
    ) -> None:
        self._client = client
        self.url = queue_url
        self.blobs = blobs
        self.visibility_timeout_s = visibility_timeout_s
        self.limit_bytes = limit_bytes

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        body = check_in(body, self.blobs, limit_bytes=self.limit_bytes)
        r = self._client().send_message(
            QueueUrl=self.url, MessageBody=body, DelaySeconds=min(MAX_DELAY_S, max(0, math.ceil(delay_s)))
        )
        return str(r["MessageId"])

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        r = self._client().receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=0,
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
        self._client().delete_message(QueueUrl=self.url, ReceiptHandle=delivery.receipt)

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
