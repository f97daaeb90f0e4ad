"""Verifying a completion callback (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`)
with the secret it was signed with, before trusting its body."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping

from core.client.errors import WebhookVerificationError
from core.views import JobView
from core.webhooks.signing import signature

TOLERANCE_S = 300  # Standard Webhooks' advice: refuse a timestamp further than five minutes from now


def verify_webhook(
    body: bytes, headers: Mapping[str, str], secret: str, *, tolerance_s: float = TOLERANCE_S, now: float | None = None
) -> JobView:
    """The job view the callback carries, once its signature holds; raises WebhookVerificationError otherwise.
    `headers` in any case (a framework's request headers); `body` exactly as received, before any parsing."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signed = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and stamp and signed):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp {stamp[:20]!r} is not a Unix time") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is more than {tolerance_s:.0f} s from now: a replay, or this host's clock is off"
        )
    expected = signature(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signed.split()):
        raise WebhookVerificationError("no webhook-signature matches: the body was altered or the secret is another")
    return JobView.model_validate_json(body)
