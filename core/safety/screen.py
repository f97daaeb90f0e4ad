"""Screening texts under one policy: each check's findings, and the texts as they may go on (redacted).

A check is a port: it reports spans with a rule; the policy decides the action. Length limits run on input and
output; PII and configured patterns on input, context and output; injection heuristics on retrieved context. A
`block` finding stops the job; `redact` replaces the span by a placeholder (the table of values goes to the vault);
`flag` only reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, NamedTuple, Protocol

from core.config.safety import SafetyPolicy, Stage
from core.safety import injection, pii
from core.safety.placeholders import placeholder, substitute
from core.safety.record import Finding

Action = Literal["block", "redact", "flag"]


class Hit(NamedTuple):
    rule: str
    kind: str  # what a placeholder is named for: email, card, or a pattern rule's name
    start: int
    end: int
    action: Action
    detail: str | None = None


class Check(Protocol):
    def scan(self, text: str, stage: Stage) -> list[Hit]: ...


class PiiCheck:
    def __init__(self, policy: SafetyPolicy) -> None:
        self.policy = policy.pii
        self.names = pii.detector_names(self.policy.kinds, self.policy.countries)

    def scan(self, text: str, stage: Stage) -> list[Hit]:
        if self.policy.action == "off" or stage not in self.policy.on:
            return []
        found = pii.find(text, self.names)
        if "name" in self.policy.kinds:
            from core.safety.names import person_names  # the optional named-entity model (Presidio)

            found = _disjoint(found, person_names(text, self.policy.name_model))
        return [Hit(f"pii.{s.kind}", s.kind, s.start, s.end, self.policy.action, s.detail or None) for s in found]


class PatternCheck:
    def __init__(self, policy: SafetyPolicy) -> None:
        self.rules = [(r, _compiled(r.pattern)) for r in policy.patterns]

    def scan(self, text: str, stage: Stage) -> list[Hit]:
        return [
            Hit(f"pattern.{rule.name}", rule.name, m.start(), m.end(), rule.action)
            for rule, pattern in self.rules
            if stage in rule.on
            for m in pattern.finditer(text)
            if m.end() > m.start()
        ]


class LimitCheck:
    def __init__(self, policy: SafetyPolicy) -> None:
        self.limits = {"input": policy.limits.input_chars, "output": policy.limits.output_chars}

    def scan(self, text: str, stage: Stage) -> list[Hit]:
        limit = self.limits.get(stage)
        if limit is None or len(text) <= limit:
            return []
        return [Hit(f"limit.{stage}_chars", "limit", limit, len(text), "block", f"{len(text)} > {limit}")]


class InjectionCheck:
    def __init__(self, policy: SafetyPolicy) -> None:
        self.action = policy.injection

    def scan(self, text: str, stage: Stage) -> list[Hit]:
        if self.action == "off" or stage != "context":
            return []
        return [Hit("injection", "injection", s.start, s.end, self.action, s.rule) for s in injection.suspects(text)]


@lru_cache(maxsize=256)
def _compiled(p: str) -> re.Pattern[str]:
    return re.compile(p, re.IGNORECASE)


def _disjoint(first: list[pii.Span], more: list[pii.Span]) -> list[pii.Span]:
    kept = list(first)
    for s in more:
        if not any(s.start < t.end and t.start < s.end for t in kept):
            kept.append(s)
    return sorted(kept, key=lambda t: t.start)


@dataclass
class Screened:
    """Texts after screening (redacted where the policy says), what was found, and the values replaced."""

    texts: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    table: dict[str, str] = field(default_factory=dict)
    fenced: set[int] = field(default_factory=set)  # indexes of texts with an injection finding

    @property
    def blocked(self) -> Finding | None:
        return next((f for f in self.findings if f.action == "block"), None)


class Screen:
    """One policy's checks for one tenant; `key` names placeholders (the vault's subkey), asked only to redact."""

    def __init__(self, name: str, policy: SafetyPolicy, tenant: str, key: Callable[[], bytes]) -> None:
        self.name = name
        self.policy = policy
        self.tenant = tenant
        self.key = key
        self.checks: list[Check] = [LimitCheck(policy), PiiCheck(policy), PatternCheck(policy), InjectionCheck(policy)]

    def hits(self, text: str, stage: Stage) -> list[Hit]:
        return [h for check in self.checks for h in check.scan(text, stage)]

    def texts(self, parts: list[tuple[str, str]], stage: Stage) -> Screened:
        """Each (where, text) screened at `stage`: findings for every hit, redacted texts, the replaced values."""
        out = Screened()
        for i, (where, text) in enumerate(parts):
            hits = self.hits(text, stage)
            out.findings += [Finding(rule=h.rule, action=h.action, stage=stage, where=where, start=h.start,
                                     end=h.end, detail=h.detail) for h in hits]  # fmt: skip
            if any(h.rule == "injection" for h in hits):
                out.fenced.add(i)
            out.texts.append(self.redacted(text, hits, out.table))
        return out

    def redacted(self, text: str, hits: list[Hit], table: dict[str, str]) -> str:
        spans: list[tuple[int, int, str]] = []
        for h in sorted((h for h in hits if h.action == "redact"), key=lambda h: (h.start, -h.end)):
            if spans and h.start < spans[-1][1]:
                continue  # inside a span already replaced
            tag = placeholder(self.key(), self.tenant, h.kind, text[h.start : h.end])
            table[tag] = text[h.start : h.end]
            spans.append((h.start, h.end, tag))
        return substitute(text, spans) if spans else text
