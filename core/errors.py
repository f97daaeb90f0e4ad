"""Every exception Altostratus raises on purpose, in one tree under `AltoError`.

Errors a user can cause carry the offending field and the fix, so every entry point can show them
as they are; the rest name what happened so an operator can act on it. Entry points catch
`AltoError` (the CLI prints it, the HTTP API maps it through one exception→status table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AltoError(Exception):
    """Base class for errors Altostratus raises on purpose."""


# --------------------------------------------------------------------------- user errors


class ConfigError(AltoError):
    """The configuration is invalid; the message names the key and how to fix it."""


class AccessDenied(ConfigError):
    """The deployment does not grant a call the code makes (a cloud's 403): the message names the call
    and the grant to add. Permanent for the job, like any configuration error."""


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


class Forbidden(AltoError):
    """The key is valid but may not do this (an operator's key submits nothing; a tenant's key reads only its
    own tenant's)."""


class CallbackRefused(AltoError):
    """A callback target the SSRF policy does not allow; the message says why and how to allow it."""


class GuardrailViolation(AltoError):
    """A prompt or an answer broke a configured guardrail; `rule` names which."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class NoRoute(AltoError):
    """No allowed model can take the request (policy, window, or no model configured)."""


class PromptTooLong(NoRoute):
    """The question and the template alone exceed the model's window: no context can make it fit."""


# --------------------------------------------------------------------------- store and queue outcomes


class ConflictError(AltoError):
    """A conditional write lost: somebody else changed the record first."""


class IllegalTransition(AltoError):
    """A lifecycle change that `core.models.TRANSITIONS` does not allow (a bug, never a user error)."""


class BudgetExhausted(AltoError):
    """A tenant's spend budget is used up: nothing is stored; retry after it resets."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Contended(AltoError):
    """Too many writers on one state key; the caller should back off and defer."""


class QueueUnavailable(AltoError):
    """The job was stored but its queue message could not be sent; the reconciler will send it."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class Redeliver(AltoError):
    """Raised out of a push-triggered worker (Pub/Sub, Service Bus) so the platform redelivers the
    message; `delay_s` is the delay the core wanted (the platform's retry policy has the last word)."""

    def __init__(self, message: str, *, delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


# --------------------------------------------------------------------------- providers


class ProviderError(AltoError):
    """A failed provider call, described by what was observed on the wire.

    Providers translate their SDK's failures into this, carrying the HTTP status, headers and body
    (or a transport kind), so governance classifies by what happened, never by SDK exception class.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        transport: str | None = None,  # "timeout" | "connection" | None
        malformed: bool = False,
        content_policy: bool = False,
        context_overflow: bool = False,
        truncated: bool = False,
        partial: Any = None,
    ) -> None:
        super().__init__(message)
        self.partial = partial  # a failed stream's usage so far (a ProviderResult): billed and counted
        self.status_code = status_code
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self.transport = transport
        self.malformed = malformed
        self.content_policy = content_policy
        self.context_overflow = context_overflow  # the input didn't fit the model's window
        self.truncated = truncated  # the reply was cut at max_tokens and the route refuses cut replies
