"""`Safety`: the policy layer as the service uses it, at submit, before the provider call and after it.

At submit, a job's own texts are screened (`submitted`): a `block` finding refuses the request naming the rule, a
`redact` one replaces the value by a placeholder, so the stored job, its fingerprint, its queue message and every
prompt sent hold no redacted value in the clear; the values are sealed in the job's record. On the worker, retrieved
chunks are screened before the prompt is assembled (`context`), and the answer after it is generated (`output`).
Views restore the placeholders from the job's sealed table (`reveal`): the values the client sent, or its retrieved
documents held. A value the model wrote on its own (found in the answer) is masked for good: no store has it, and
the client reads its placeholder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal, NamedTuple

from core.config.safety import ModerationPolicy
from core.errors import GuardrailViolation, InputError
from core.logs import log_event
from core.safety.injection import fenced
from core.safety.moderation import Moderation, Pending, Unavailable, is_moderation
from core.safety.placeholders import Reveal, revealer
from core.safety.record import Finding, SafetyRecord
from core.safety.requests import first_image, request_texts, with_texts
from core.safety.screen import Screen, Screened
from core.safety.stream_guard import StreamGuard

if TYPE_CHECKING:
    from pathlib import Path

    from core.chunks import ContextChunk
    from core.config.api import ApiSettings
    from core.job_request import JobRequest
    from core.jobs.threads import Sealing
    from core.models import Job
    from core.observability.metrics import Metrics
    from core.ports import Secrets
    from core.safety.vault import Vault

Count = Callable[[str, str | None, list[Finding]], None]  # (tenant, task, findings): the metrics' counter


class Submitted(NamedTuple):
    """A request as it may be stored, what was found in it, and the values its placeholders replaced."""

    request: JobRequest
    record: SafetyRecord | None
    table: dict[str, str]


class Judged(NamedTuple):
    """An answer after the output checks: the text to keep (redacted where the policy says) and the record."""

    text: str
    record: SafetyRecord | None
    blocked: Finding | None


def explain(policy: str, f: Finding) -> str:
    what = f.rule + (f" ({f.detail})" if f.detail else "")
    return f"safety policy '{policy}' blocks {what} in {f.where} at characters {f.start}-{f.end}"


class Safety:
    def __init__(self, settings: ApiSettings, vault: Vault, count: Count | None = None) -> None:
        self.settings = settings
        self.vault = vault
        self.count = count or (lambda tenant, task, found: None)
        self._screens: dict[tuple[str, str], Screen] = {}
        self.moderation: Moderation | None = None  # set by the worker service: classifications are jobs it submits
        self.thread_sealed: Callable[[str, str], tuple[str, str] | None] | None = None  # set by the service

    @classmethod
    def of(
        cls, settings: ApiSettings, *, metrics: Metrics, secrets: Secrets | None = None, local: Path | None = None
    ) -> Safety:
        """The layer for `settings`: its vault's key from `safety.vault_key` through `secrets`, else (the embedded
        stores) a key file under `local`; findings counted in `metrics`."""
        from core.safety.vault import Vault, key_source
        from core.secrets import EnvSecrets

        def count(tenant: str, task: str | None, found: list[Finding]) -> None:
            for f in found:
                metrics.finding(tenant, task or "-", f.rule, f.action)

        return cls(settings, Vault(key_source(settings.safety.vault_key, secrets or EnvSecrets(), local)), count)

    def screen(self, tenant: str, task: str | None) -> Screen | None:
        cfg = self.settings.safety
        t = self.settings.tenants.get(tenant)
        name = cfg.choose(t.safety if t is not None else None, task)
        if name is None:
            return None
        if (tenant, name) not in self._screens:
            key = lambda: self.vault.subkey("placeholder")  # noqa: E731  # asked only when a value is redacted
            self._screens[tenant, name] = Screen(name, cfg.resolved(name), tenant, key)
        return self._screens[tenant, name]

    # ------------------------------------------------------------------ at submit

    def submitted(self, tenant: str, request: JobRequest) -> Submitted:
        """The request as it may be stored, with its findings; InputError for a `block` (nothing is stored)."""
        screen = self.screen(tenant, request.task)
        if screen is None:
            return Submitted(request, None, {})
        if screen.policy.images == "block" and (where := first_image(request)) is not None:
            log_event("safety.refused", logging.WARNING, tenant=tenant, rule="images", where=where, policy=screen.name)
            raise InputError(
                f"safety policy '{screen.name}' refuses images (no check can read what one shows): send the text "
                "instead, or submit under a policy with images: allow",
                field=where,
            )
        parts = request_texts(request)
        screened = screen.texts(parts, "input")
        self.count(tenant, request.task, screened.findings)
        if (f := screened.blocked) is not None:
            log_event("safety.refused", logging.WARNING, tenant=tenant, rule=f.rule, where=f.where, policy=screen.name)
            fix = "shorten it" if f.rule.startswith("limit.") else "remove it, or submit under a policy that redacts it"
            raise InputError(f"{explain(screen.name, f)}; {fix}", field=f.where)
        record = SafetyRecord(policy=screen.name)
        record.add(screened.findings)
        if not screened.table:
            return Submitted(request, record, {})
        changed = {w: t for (w, old), t in zip(parts, screened.texts, strict=True) if t != old}
        return Submitted(with_texts(request, changed), record, screened.table)

    def sealed(self, submitted: Submitted, tenant: str, job_id: str) -> SafetyRecord | None:
        """The record the new job keeps: its findings, and its values sealed to it."""
        record = submitted.record
        if record is not None and submitted.table:
            record = record.model_copy(update={"sealed": self.vault.seal(submitted.table, bound(tenant, job_id))})
        return record

    def thread_sealing(self, tenant: str, thread_id: str, submitted: Submitted) -> Sealing | None:
        """How a thread job's values join its thread's sealed table (None: it has none)."""
        if not submitted.table:
            return None

        def seal(sealed: str | None, epoch: str) -> str:
            where = thread_bound(tenant, thread_id, epoch)
            table = self.vault.open(sealed, where) if sealed else {}
            return self.vault.seal({**table, **submitted.table}, where)

        return seal

    def step(self, parent: Job, request: JobRequest, child_id: str) -> tuple[JobRequest, SafetyRecord | None]:
        """A workflow step's request as it may be sent, screened as a submitted one (it carries the documents the
        step reads, and earlier steps' answers); InputError for a `block`. The child's values are sealed to it
        together with the workflow's, so its own view restores every placeholder its prompt and answer hold."""
        submitted = self.submitted(parent.tenant, request)
        table = {**self._own(parent), **submitted.table}
        if not table:
            return submitted.request, submitted.record
        record = submitted.record or SafetyRecord(policy=parent.safety.policy if parent.safety else "-")
        sealed = self.vault.seal(table, bound(parent.tenant, child_id))
        return submitted.request, record.model_copy(update={"sealed": sealed})

    def gathered(self, parent: Job, children: list[Job]) -> SafetyRecord | None:
        """The workflow's record with its steps' values joined to its own, so its result restores them all; None
        when they add none (the record stays as it is)."""
        found = {k: v for c in children for k, v in self._own(c).items()}
        own = self._own(parent)
        if found.keys() <= own.keys():
            return None
        policy = parent.safety.policy if parent.safety else next(c.safety.policy for c in children if c.safety)
        record = (parent.safety or SafetyRecord(policy=policy)).model_copy(deep=True)
        record.sealed = self.vault.seal({**own, **found}, bound(parent.tenant, parent.id))
        return record

    def fingerprint(self, submitted: Submitted, plain: str) -> str:
        """A redacted request's fingerprint is keyed: a plain hash of personal data could be guessed back."""
        return self.vault.digest(plain) if submitted.table else plain

    # ------------------------------------------------------------------ on the worker

    def context(self, job: Job, chunks: list[ContextChunk]) -> list[ContextChunk]:
        """Retrieved chunks as they may go into the prompt (redacted, instructions fenced); notes the findings on the
        job; GuardrailViolation for a `block`."""
        screen = self.screen(job.tenant, job.request.task)
        if screen is None or not chunks:
            return chunks
        screened = screen.texts([(f"chunk {c.id}", c.text) for c in chunks], "context")
        self._note(job, screen, screened)
        if (f := screened.blocked) is not None:
            raise GuardrailViolation(explain(screen.name, f) + " (retrieved context)", rule=f.rule)
        return [
            replace(c, text=fenced(t) if i in screened.fenced else t)
            for i, (c, t) in enumerate(zip(chunks, screened.texts, strict=True))
        ]

    def output(self, job: Job, text: str) -> Judged:
        """The answer screened: its text as it may be kept, the job's record with what was found, any block."""
        screen = self.screen(job.tenant, job.request.task)
        if screen is None:
            return Judged(text, job.safety, None)
        screened = screen.texts([("output", text)], "output")
        screened.table.clear()  # a value the model wrote itself is masked for good: never sealed, never restored
        record = self._noted(job, screen, screened)
        return Judged(screened.texts[0], record, screened.blocked)

    def guard(self, job: Job) -> StreamGuard | None:
        """A streaming job's guard: its policy's output checks on the text before it is served."""
        screen = self.screen(job.tenant, job.request.task)
        return StreamGuard(screen, screen.policy.stream.holdback_chars) if screen is not None else None

    def moderates(self, job: Job, stage: str) -> bool:
        return self._moderation(job, stage) is not None

    def _moderation(self, job: Job, stage: str) -> tuple[Screen, ModerationPolicy] | None:
        """The job's screen and moderation policy, if its `stage` is moderated (a classification is not itself)."""
        screen = self.screen(job.tenant, job.request.task)
        policy = screen.policy.moderation if screen is not None else None
        if screen is None or policy is None or stage not in policy.on or is_moderation(job.request.task):
            return None
        return (screen, policy) if self.moderation is not None else None

    async def moderated(self, job: Job, stage: Literal["input", "output"], text: str) -> Pending | str | None:
        """Moderate the job's `stage` where its policy says: None to go on (clean, or flagged and noted on the job),
        Pending while the classification runs, or why the job is refused."""
        chosen = self._moderation(job, stage)
        if chosen is None or self.moderation is None:
            return None
        screen, policy = chosen
        verdict = await self.moderation.classify(job, stage, text, policy)
        if isinstance(verdict, Pending):
            return verdict
        if isinstance(verdict, Unavailable):  # under block, fail closed: unmoderated text does not pass
            missing = _whole("moderation.unavailable", policy.action, stage, text, verdict.reason[:200])
            self._note(job, screen, Screened(findings=[missing]))
            if policy.action == "block":
                return f"safety policy '{screen.name}' could not moderate the {stage}: {verdict.reason}"
            return None
        found = [
            _whole(f"moderation.{c}", policy.action, stage, text, f"job {verdict.job_id}") for c in verdict.categories
        ]
        self._note(job, screen, Screened(findings=found))
        blocked = next((f for f in found if f.action == "block"), None)
        return explain(screen.name, blocked) if blocked is not None else None

    def _note(self, job: Job, screen: Screen, screened: Screened) -> None:
        job.safety = self._noted(job, screen, screened)

    def _noted(self, job: Job, screen: Screen, screened: Screened) -> SafetyRecord:
        record = (job.safety or SafetyRecord(policy=screen.name)).model_copy(deep=True)
        self.count(job.tenant, job.request.task, record.add(screened.findings))
        if screened.table:
            table = {**self._own(job), **screened.table}
            record.sealed = self.vault.seal(table, bound(job.tenant, job.id))
        return record

    # ------------------------------------------------------------------ reading

    def table(self, job: Job) -> dict[str, str]:
        """The values the job's placeholders stand for: its own, and on a thread every earlier turn's."""
        own = self._own(job)
        if job.thread is None or job.safety is None:
            return own
        return {**self.thread_table(job.tenant, job.thread.id), **own}

    def _own(self, job: Job) -> dict[str, str]:
        if job.safety is None or job.safety.sealed is None:
            return {}
        return self.vault.open(job.safety.sealed, bound(job.tenant, job.id))

    def thread_table(self, tenant: str, thread_id: str) -> dict[str, str]:
        found = self.thread_sealed(tenant, thread_id) if self.thread_sealed is not None else None
        return self.vault.open(found[0], thread_bound(tenant, thread_id, found[1])) if found else {}

    def reveal(self, job: Job) -> Reveal:
        """Restores the job's placeholders; if its values can't be opened, the placeholders stay (and it is logged)."""
        try:
            return revealer(self.table(job))
        except ValueError as e:
            log_event("safety.unsealable", logging.ERROR, job_id=job.id, error=str(e))
            return revealer({})


def _whole(
    rule: str, action: Literal["block", "flag"], stage: Literal["input", "output"], text: str, detail: str
) -> Finding:
    """A finding about a whole text (a classification has no span)."""
    return Finding(rule=rule, action=action, stage=stage, where=stage, start=0, end=len(text), detail=detail)


def bound(tenant: str, job_id: str) -> str:
    """What a sealed table is bound to: copied onto another job, it does not open."""
    return f"{tenant}/{job_id}"


def thread_bound(tenant: str, thread_id: str, epoch: str) -> str:
    """A thread's table is bound to its epoch: erasing the thread (a new epoch) leaves nothing that opens."""
    return f"{tenant}/thread:{thread_id}/{epoch}"
