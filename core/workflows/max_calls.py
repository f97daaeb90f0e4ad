"""A workflow's `max_calls`: one counter on the state store, shared by every child on every worker.

A child takes one call from it after admission and before its claim, with a conditional write, so the
bound holds however many children run at once; a call taken and then not made (the claim lost a race)
is not given back, which keeps the bound an upper one.
"""

from __future__ import annotations

from typing import Any

from core.governance.state import mutate
from core.ports import StateRecord, StateStore

TTL_S = 7 * 86400
TRIES = 20


class MaxCalls:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def reset(self, parent_id: str) -> None:
        """A replayed workflow starts its count over."""
        self.state.delete(f"wfcalls:{parent_id}")

    def take(self, parent_id: str, limit: int) -> bool:
        """One call of the workflow's budget; False once `limit` calls were taken."""

        def step(rec: StateRecord | None) -> tuple[dict[str, Any] | None, bool]:
            taken = int(rec.value["n"]) if rec is not None else 0
            return (None, False) if taken >= limit else ({"n": taken + 1}, True)

        return mutate(self.state, f"wfcalls:{parent_id}", step, ttl_s=TTL_S, tries=TRIES)
