"""`safety`: named policies of checks (PII, patterns, moderation, injection, the stream guard) and who gets which.

A policy says which checks run on a job's input, on its retrieved context, on its stream and on its output, and what
a finding does: `block` (refused, naming the rule), `redact` (PII replaced by placeholders before any provider sees
it, restored in the answer the client reads) or `flag` (served, with the finding in the view, metrics and audit).
Policies inherit: `extends: NAME`, else the `default` policy; what a policy sets overrides what it inherits.
A job's policy is the most specific choice: its tenant's for its task, its tenant's, `safety.tasks` for its task,
then `safety.default`. No choice at all means no checks (the global `guardrails` still hold).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from core.config.strict import SECRET_REF, _Strict

PiiKind = Literal["email", "phone", "card", "iban", "national_id", "ip_address", "name"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card", "iban", "national_id", "ip_address")
Stage = Literal["input", "context", "output"]
STAGES: tuple[Stage, ...] = ("input", "context", "output")
COUNTRIES = ("US", "GB", "ES", "NL", "FR", "IN")  # national id formats the detector knows (with their checksums)


class PolicyConfig(_Strict):
    """Where a tenant's data may go (models, providers, regions); unset means anywhere."""

    allowed_providers: list[str] | None = None
    allowed_models: list[str] | None = None
    allowed_regions: list[str] | None = None


class PiiPolicy(_Strict):
    action: Literal["off", "flag", "redact", "block"] = Field(
        default="off",
        description="redact: replaced by placeholders ([EMAIL_1]) before the provider call and restored in the answer;"
        " flag: sent as is and reported; block: refused.",
    )
    kinds: list[PiiKind] = Field(
        default_factory=lambda: list(PII_KINDS),
        description="What counts as PII. `name` needs the `presidio` extra (a named-entity model).",
    )
    countries: list[str] = Field(
        default_factory=lambda: ["US"], description=f"Whose national id formats are looked for: {', '.join(COUNTRIES)}."
    )
    on: list[Stage] = Field(
        default_factory=lambda: list(STAGES),
        description="Where: the job's own text, its retrieved chunks, the answer (and its stream).",
    )
    name_model: str = Field(
        default="en_core_web_lg",
        description="Kind `name`: the spaCy model Presidio finds names with, an installed package or a folder "
        "holding one (never downloaded at run time).",
    )

    @field_validator("countries")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for c in v:
            if c not in COUNTRIES:
                raise ValueError(f"country {c!r} has no national id format here (known: {', '.join(COUNTRIES)})")
        return v


class PatternRule(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="The rule a finding names.")
    pattern: str = Field(description="A regular expression (case-insensitive).")
    action: Literal["block", "redact", "flag"] = "block"
    on: list[Stage] = Field(default_factory=lambda: list(STAGES[::2]))

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, p: str) -> str:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return p


def _input_only() -> list[Literal["input", "output"]]:
    return ["input"]


class ModerationPolicy(_Strict):
    model: str = Field(description="The model under `models` that classifies (through routing and governance).")
    action: Literal["block", "flag"] = "block"
    on: list[Literal["input", "output"]] = Field(default_factory=lambda: _input_only())
    categories: list[str] = Field(
        default_factory=lambda: ["hate", "harassment", "self-harm", "sexual-minors", "violence", "illicit"],
        min_length=1,
        description="What the classifier is asked to find.",
    )
    max_chars: int = Field(default=20_000, ge=100, le=1_000_000, description="The text classified, at most.")
    max_tokens: int = Field(default=256, ge=32, le=4096, description="The classifier's reply, at most.")
    wait_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long a job waits in place for its classification before going back to the queue to wait.",
    )


class Limits(_Strict):
    """Lengths a tenant's texts may have (the global `guardrails` hold for everyone as well)."""

    input_chars: int | None = Field(default=None, gt=0, description="Longest text of a job's own (each part).")
    output_chars: int | None = Field(default=None, gt=0, description="Longest answer.")


class StreamGuard(_Strict):
    holdback_chars: int = Field(
        default=200,
        ge=0,
        le=20_000,
        description="A streamed answer's last characters are held back until the output checks have seen what "
        "follows them (a finding in them is caught before any client sees it); 0 serves text as it comes.",
    )


class SafetyPolicy(_Strict):
    extends: str | None = Field(default=None, description="The policy this one starts from (else `default`).")
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    patterns: list[PatternRule] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits, description="Over a limit is a `block` finding.")
    moderation: ModerationPolicy | None = None
    injection: Literal["off", "flag", "block"] = Field(
        default="flag",
        description="Retrieved chunks that carry instructions: fenced as data and flagged (flag), or the job refused.",
    )
    images: Literal["allow", "block"] = Field(
        default="allow",
        description="No check reads an image: `block` refuses a job that sends one (the text checks can't screen "
        "what it shows).",
    )
    stream: StreamGuard = Field(default_factory=StreamGuard)
    reach: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description="Where this data may go: providers, models, regions (with the tenant's own `policy`, both hold).",
    )

    @field_validator("pii", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"action": v} if isinstance(v, str) else v

    def merged_over(self, base: SafetyPolicy) -> SafetyPolicy:
        """This policy's own settings over `base`'s."""
        own = {k: getattr(self, k) for k in self.model_fields_set if k != "extends"}
        return base.model_copy(update=own)


class TenantSafety(_Strict):
    default: str | None = None
    tasks: dict[str, str] = Field(default_factory=dict, description="Task name to policy name.")


class SafetyConfig(_Strict):
    default: str | None = Field(default=None, description="The policy of a job nothing more specific chooses.")
    policies: dict[str, SafetyPolicy] = Field(default_factory=dict)
    tasks: dict[str, str] = Field(default_factory=dict, description="Task name to policy name, for every tenant.")
    vault_key: str | None = Field(
        default=None,
        description="Secret reference to the key that seals redacted values (32 random bytes, base64). Unset: the "
        "embedded stores keep one in the data directory; a cloud deployment that redacts must set it.",
    )

    @field_validator("vault_key")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not SECRET_REF.match(v):
            raise ValueError("vault_key must be a secret reference such as 'env:ALTO_VAULT_KEY', not the key itself")
        return v

    _resolved: dict[str, SafetyPolicy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> SafetyConfig:
        names = [("safety.default", self.default)] + [(f"safety.tasks.{t}", p) for t, p in self.tasks.items()]
        names += [(f"safety.policies.{n}.extends", p.extends) for n, p in self.policies.items()]
        for where, name in names:
            self.known(where, name)
        self._resolved = {n: self._flatten(n, ()) for n in self.policies}
        return self

    def known(self, where: str, name: str | None) -> None:
        if name is not None and name not in self.policies:
            known = ", ".join(sorted(self.policies)) or "none defined"
            raise ValueError(f"{where}: policy '{name}' is not under safety.policies (known: {known})")

    def _flatten(self, name: str, seen: tuple[str, ...]) -> SafetyPolicy:
        if name in seen:
            raise ValueError(f"safety.policies: {' -> '.join((*seen, name))} extends itself")
        policy = self.policies[name]
        parent = policy.extends
        if parent is None and self.default not in (None, name, *seen):  # the default's own chain ends at itself
            parent = self.default
        if parent is None:
            return policy
        return policy.merged_over(self._flatten(parent, (*seen, name)))

    def resolved(self, name: str) -> SafetyPolicy:
        return self._resolved[name]

    def choose(self, tenant: TenantSafety | None, task: str | None) -> str | None:
        """The name of the policy a job of `task` for this tenant runs under (None: no checks)."""
        if tenant is not None and task is not None and task in tenant.tasks:
            return tenant.tasks[task]
        if tenant is not None and tenant.default is not None:
            return tenant.default
        if task is not None and task in self.tasks:
            return self.tasks[task]
        return self.default

    def model_refs(self) -> list[tuple[str, str]]:
        """(key path, model name) of every model a policy names."""
        return [(f"safety.policies.{n}.moderation.model", p.moderation.model) for n, p in self.policies.items()
                if p.moderation is not None]  # fmt: skip

    def name_models(self) -> list[tuple[str, str]]:
        """(policy, spaCy model) of each policy that looks for person names."""
        return [
            (n, p.pii.name_model) for n, p in self._resolved.items() if p.pii.action != "off" and "name" in p.pii.kinds
        ]

    def redacting(self) -> list[str]:
        """The policies that redact (their PII, or a pattern of theirs): each seals values with the vault."""
        return [n for n, p in self._resolved.items() if _redacts(p)]


def _redacts(policy: SafetyPolicy) -> bool:
    return policy.pii.action == "redact" or any(r.action == "redact" for r in policy.patterns)
