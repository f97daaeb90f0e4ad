"""Errors a user can cause carry the offending field and the fix, so every entry point can show them as-is."""

from __future__ import annotations


class AltoError(Exception):
    """Base class for errors Altostratus raises on purpose."""


class ConfigError(AltoError):
    """The configuration is invalid; the message names the key and how to fix it."""


class InputError(AltoError):
    """A request was rejected before anything was stored."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class IdempotencyConflict(AltoError):
    """The same idempotency key was reused with a different request body."""


class NotFound(AltoError):
    """The object does not exist or belongs to another tenant (the two are indistinguishable on purpose)."""


class QueueUnavailable(AltoError):
    """The job was stored but its queue message could not be sent; the reconciler will send it."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
