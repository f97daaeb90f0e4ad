"""`threads`: what the service does with a thread's oldest turns once they no longer fit a model's window."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config.api import _Strict


class ThreadsConfig(_Strict):
    fit: Literal["drop", "summary"] = Field(
        default="drop",
        description=(
            "drop: leave the oldest turns out (ten at a time). summary: put a summary of them in their place, made "
            "once per span by a job of its own (task `summary_task`: routed, governed and billed like any job); "
            "while it runs the turn waits, and if it fails the turns are left out."
        ),
    )
    summary_task: str = Field(default="thread-summary", max_length=128, description="The summary jobs' task.")
    summary_max_tokens: int = Field(default=512, ge=16, le=8192, description="A summary's length at most.")
