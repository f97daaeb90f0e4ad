"""A tenant's spend limits: daily and monthly, in USD, UTC periods, optionally per task."""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class SpendLimits(_Strict):
    daily_usd: float | None = Field(default=None, gt=0, description="Per UTC day.")
    monthly_usd: float | None = Field(default=None, gt=0, description="Per UTC calendar month.")


class BudgetConfig(SpendLimits):
    on_exhausted: Literal["fail", "defer"] = Field(
        default="fail",
        description="A call that does not fit: fail the job `budget_exhausted`, or defer it to the next period.",
    )
    tasks: dict[str, SpendLimits] = Field(default_factory=dict, description="Limits of one task's jobs, on top.")
