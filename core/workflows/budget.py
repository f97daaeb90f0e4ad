"""A workflow's `max_calls`: one counter on the state store, shared by every child on every worker.

A child takes one call from it after admission and before its claim, with a conditional write, so the
bound holds however many children run at once; a call taken and then not made (the claim lost a race)
is not given back, which keeps the bound an upper one.
"""

from __future__ import annotations

from core.errors import Contended
from core.ports import StateStore

TTL_S = 7 * 86400
TRIES = 20


class CallBudget:
    def __init__(self, state: StateStore) -> None:
        self.state = state

    def reset(self, parent_id: str) -> None:
        """A replayed workflow starts its count over."""
        self.state.delete(f"wfcalls:{parent_id}")

    def take(self, parent_id: str, limit: int) -> bool:
        """One call of the workflow's budget; False once `limit` calls were taken."""
        key = f"wfcalls:{parent_id}"
        for _ in range(TRIES):
            rec = self.state.get(key)
            if rec is None:
                if self.state.put_if_absent(key, {"n": 1}, ttl_s=TTL_S):
                    return True
                continue
            if int(rec.value["n"]) >= limit:
                return False
            if self.state.compare_and_set(key, {"n": int(rec.value["n"]) + 1}, expected_version=rec.version, ttl_s=TTL_S):
                return True
        raise Contended(f"the call budget of workflow {parent_id} is contended; retrying shortly")
