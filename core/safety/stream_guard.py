"""The stream guard: a streamed answer's output checks run on the text before it is served, with a hold-back.

The writer hands the guard everything generated so far; the guard says how much of it may be served, redacted where
the policy says. The last `holdback_chars` are held until more text (or the end) shows what they belong to, and no
cut falls inside a finding or a placeholder, so a violation inside the window is caught before any client sees it.
One found later, in text already served (a pattern longer than the window), is taken back: the guard says
`retract`, and the served text is replaced by the clean text so far. A `block` serves nothing more, and retracts all.
"""

from __future__ import annotations

from typing import NamedTuple

from core.safety.placeholders import held_tail
from core.safety.screen import Hit, Screen


class Release(NamedTuple):
    text: str  # what may be served now (the whole served text, not a delta)
    retract: bool  # the text served before is not a prefix of it: clients must drop what they showed
    blocked: Hit | None


class StreamGuard:
    def __init__(self, screen: Screen, holdback_chars: int) -> None:
        self.screen = screen
        self.holdback = holdback_chars
        self.shown = ""  # served so far
        self.shown_raw = 0  # how much of the generated text that is
        self.blocked: Hit | None = None

    def release(self, raw: str, *, final: bool) -> Release:
        if self.blocked is not None:
            return Release(self.shown, False, self.blocked)
        hits = self.screen.hits(raw, "output")
        if (block := next((h for h in hits if h.action == "block"), None)) is not None:
            self.blocked, retract = block, bool(self.shown)
            self.shown, self.shown_raw = "", 0
            return Release("", retract, block)
        end = self._cut(raw, hits, final)
        inside = [h for h in hits if h.end <= end]
        text = self.screen.redacted(raw[:end], inside, {})  # masked for good, as the answer's own values are
        changed = [h for h in inside if h.action == "redact" and h.start < self.shown_raw]
        if text.startswith(self.shown):
            self.shown, self.shown_raw = text, end
            return Release(text, False, None)
        if self.shown.startswith(text) and not changed:  # the cut moved back; what was served still stands
            return Release(self.shown, False, None)
        self.shown, self.shown_raw = text, end  # a finding in text already served
        return Release(text, True, None)

    def _cut(self, raw: str, hits: list[Hit], final: bool) -> int:
        if final:
            return len(raw)
        end = max(0, len(raw) - self.holdback)
        for h in sorted(hits, key=lambda h: h.start, reverse=True):
            if h.start < end < h.end and h.action != "flag":
                end = h.start  # never serve half of something that is redacted or blocked
        return end - held_tail(raw[:end])
