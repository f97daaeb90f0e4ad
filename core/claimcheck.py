"""Claim-check: a message body over the queue's size limit travels as a blob key, never truncated.

SQS and Service Bus standard take 256 KB per message, Pub/Sub 10 MB. Our own messages are tiny
(`{job_id, tenant, trace_id}`), but a queue port must never drop or cut what it is given, so every
cloud queue checks bodies in and out through here. Blobs are keyed by content hash (a duplicate send
stores nothing new) and are left for the bucket's lifecycle rule to expire after the queue's
retention period: a duplicate or deferred copy of the message may still need them.
"""

from __future__ import annotations

import hashlib
import json

from core.ports import BlobStore

PREFIX = "claim-check/"
MARKER = '{"claim_check":'


def check_in(body: str, blobs: BlobStore, *, limit_bytes: int) -> str:
    data = body.encode()
    if len(data) <= limit_bytes:
        return body
    key = f"{PREFIX}{hashlib.sha256(data).hexdigest()}"
    blobs.put(key, data)
    return json.dumps({"claim_check": key, "bytes": len(data)})


def check_out(body: str, blobs: BlobStore) -> str:
    """The original body. If its blob is gone the pointer is returned as it came: the service can't
    parse it, retries, and the platform dead-letters the message with the pointer intact for review."""
    if not body.startswith(MARKER):
        return body
    key = json.loads(body)["claim_check"]
    try:
        return blobs.get(key).decode()
    except KeyError:
        import logging

        from core.logs import log_event

        log_event("claimcheck.missing", logging.ERROR, key=key)
        return body
