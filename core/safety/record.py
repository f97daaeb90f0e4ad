"""What the safety layer keeps on a job: its policy, its findings (never the matched text) and its sealed values."""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_FINDINGS = 200  # a job's record stays bounded however much PII a document holds; `dropped` counts the rest


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rule: str = Field(description="What was found: pii.email, pii.national_id, pattern.NAME, injection, moderation.X.")
    action: Literal["block", "redact", "flag"]
    stage: Literal["input", "context", "output", "stream"]
    where: str = Field(description="Which text: prompt, system, messages[2], chunk DOC#N, output.")
    start: int = Field(ge=0, description="Character offsets in that text (as submitted, or as generated).")
    end: int = Field(ge=0)
    detail: str | None = Field(default=None, description="E.g. the national id's format (US_SSN).")


class SafetyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    policy: str = Field(description="The safety policy the job ran under.")
    findings: list[Finding] = Field(default_factory=list)
    dropped: int = Field(default=0, description="Findings past the record's bound, counted but not kept.")
    sealed: str | None = Field(
        default=None, description="The redacted values, encrypted with the deployment's vault key (never in views)."
    )
    retracted: bool = Field(default=False, description="Streamed text was taken back (a `retract` event).")

    def add(self, found: list[Finding]) -> list[Finding]:
        """Keep the findings not kept already (a redelivery screens its chunks again); the ones that are new."""
        new = [f for f in found if f not in self.findings]
        room = max(0, MAX_FINDINGS - len(self.findings))
        self.findings.extend(new[:room])
        self.dropped += max(0, len(new) - room)
        return new

    @property
    def blocked(self) -> Finding | None:
        return next((f for f in self.findings if f.action == "block"), None)


class SafetyView(BaseModel):
    """A job's safety evidence as the API shows it: the policy and its findings (never the values)."""

    model_config = ConfigDict(defer_build=True)

    policy: str
    findings: list[Finding]
    dropped: int = 0
    retracted: bool = False

    @classmethod
    def of(cls, record: SafetyRecord | None) -> "SafetyView | None":
        if record is None:
            return None
        return cls(policy=record.policy, findings=record.findings, dropped=record.dropped, retracted=record.retracted)
