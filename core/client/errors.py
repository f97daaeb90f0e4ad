"""The client's errors: what the API answered (its `error.code`, `error.field` and message), or why it could not
be reached, or why a callback's signature does not hold."""

from __future__ import annotations

from core.errors import AltoError


class ApiError(AltoError):
    """The API answered with an error: `status` (HTTP), `code` and `field` as the API's `error` names them, and
    `retry_after_s` when it said when to try again (429, 503)."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if code else f"{status} {message}")
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after_s = retry_after_s


class Unreachable(AltoError):
    """No answer from the API: the address is wrong, the service is down, or the connection broke."""


class WebhookVerificationError(AltoError):
    """A callback whose Standard Webhooks headers are missing, stale or not signed with the secret."""
