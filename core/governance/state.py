"""Read-modify-write on the StateStore, retried on a lost conditional write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from core.errors import Contended
from core.ports import StateRecord, StateStore

T = TypeVar("T")
MAX_TRIES = 50


def mutate(
    state: StateStore,
    key: str,
    change: Callable[[StateRecord | None], tuple[dict[str, Any] | None, T]],
    *,
    ttl_s: float | None = None,
    tries: int = MAX_TRIES,
) -> T:
    """Apply `change(current) -> (new_value or None to leave it, result)` atomically; return `result`."""
    for _ in range(tries):
        current = state.get(key)
        value, result = change(current)
        if value is None:
            return result
        if current is None:
            if state.put_if_absent(key, value, ttl_s=ttl_s):
                return result
        elif state.compare_and_set(key, value, expected_version=current.version, ttl_s=ttl_s):
            return result
    raise Contended(f"state key {key!r} kept changing under {tries} conditional writes")


def add_counts(
    state: StateStore,
    key: str,
    group: str,
    deltas: dict[str, int | float],
    *,
    ttl_s: float | None = None,
    tries: int = MAX_TRIES,
) -> None:
    """`value["groups"][group][field] += delta` by read and compare-and-set, on any store (what a
    `core.ports.CountingState` does in one statement). A zero delta adds nothing, and the group's other
    counts stay as they are."""
    deltas = nonzero(deltas)
    if not deltas:
        return

    def step(rec: StateRecord | None) -> tuple[dict[str, Any], None]:
        groups = dict(rec.value["groups"]) if rec is not None else {}
        row = groups.get(group, {})
        groups[group] = {**row, **{f: round(row.get(f, 0) + d, 10) for f, d in deltas.items()}}
        return {"groups": groups}, None

    mutate(state, key, step, ttl_s=ttl_s, tries=tries)


def nonzero(deltas: dict[str, int | float]) -> dict[str, int | float]:
    """The deltas that change a count (most of a call's nine are 0: no cache, no saving); an absent count reads as 0."""
    return {f: d for f, d in deltas.items() if d}
