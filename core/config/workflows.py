"""Workflow configuration: multi-step jobs as versioned steps (chains, maps and hierarchical reduces).

A step's prompt names what it reads with `{{ name }}`: the workflow's input, any earlier step's output by
its id, `{{ item }}` inside a map (one chunk or one earlier output) and `{{ items }}` inside a reduce.
Everything a workflow refers to is checked when the file loads, so a typo fails the deploy, not a job.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.models import NAME_PATTERN

WORKFLOW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}@[0-9]{1,6}$")
STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class MapConfig(_Strict):
    over: str = Field(description="The workflow input (split into chunks) or an earlier step (one child per output).")
    chunk_tokens: int = Field(default=3000, ge=64, description="Tokens per chunk at most; lowered to fit the model.")


class ReduceConfig(_Strict):
    over: str = Field(description="An earlier step whose outputs are combined.")
    max_inputs: int = Field(default=8, ge=2, description="Inputs per combining call; more make another level.")


class StepConfig(_Strict):
    id: str = Field(pattern=STEP_ID, description="Later prompts read this step's output as `{{ id }}`.")
    prompt: str = Field(min_length=1)
    task: str | None = Field(default=None, max_length=128, description="Routing task of this step's calls.")
    collection: str | None = Field(default=None, pattern=NAME_PATTERN, description="Retrieve context per call.")
    max_tokens: int | None = Field(default=None, gt=0, description="Caps the route's max_tokens for this step.")
    map: MapConfig | None = Field(default=None, description="One child job per chunk or earlier output, concurrently.")
    reduce: ReduceConfig | None = Field(default=None, description="Combine an earlier step's outputs, level by level.")
    on_child_failure: Literal["fail", "skip"] = Field(
        default="fail", description="fail: the workflow fails naming the child; skip: the gap is recorded and shown."
    )

    @property
    def kind(self) -> str:
        return "map" if self.map else "reduce" if self.reduce else "chain"

    def names(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.prompt))


class WorkflowConfig(_Strict):
    description: str = ""
    input: str = Field(default="input", pattern=STEP_ID, description="The name of the workflow's input.")
    steps: list[StepConfig] = Field(min_length=1)
    max_calls: int | None = Field(default=None, ge=1, description="Provider calls at most, over every step.")

    @model_validator(mode="after")
    def _references(self) -> "WorkflowConfig":
        known = {self.input}
        for n, step in enumerate(self.steps):
            where = f"steps[{n}] ({step.id})"
            if step.id in known:
                raise ValueError(
                    f"{where}: the id '{step.id}' is already used (step ids and the input name are unique)"
                )
            if step.map and step.reduce:
                raise ValueError(f"{where}: give `map` or `reduce`, not both")
            over = step.map.over if step.map else step.reduce.over if step.reduce else None
            if over is not None and over not in known:
                raise ValueError(f"{where}: '{over}' is neither the input ('{self.input}') nor an earlier step")
            if step.reduce and over == self.input:
                raise ValueError(f"{where}: a reduce combines an earlier step's outputs; map over the input first")
            allowed = known | ({"item"} if step.map else {"items"} if step.reduce else set())
            if unknown := sorted(step.names() - allowed):
                raise ValueError(
                    f"{where}.prompt: {{{{ {unknown[0]} }}}} names nothing it can read "
                    f"(it can read: {', '.join(sorted(allowed))})"
                )
            need = "item" if step.map else "items" if step.reduce else None
            if need and need not in step.names():
                raise ValueError(f"{where}.prompt: a {step.kind} step's prompt must contain {{{{ {need} }}}}")
            known.add(step.id)
        return self


SUMMARIZE = {
    "description": "Long-document summary: summarise each part, then combine the summaries level by level.",
    "input": "document",
    "steps": [
        {
            "id": "parts",
            "map": {"over": "document", "chunk_tokens": 3000},
            "task": "summarize",
            "prompt": "Summarise this part of a longer document in at most 5 bullet points:\n\n{{ item }}",
        },
        {
            "id": "summary",
            "reduce": {"over": "parts", "max_inputs": 8},
            "task": "summarize",
            "prompt": "Combine these partial summaries into one summary:\n\n{{ items }}",
        },
    ],
}


def builtin_workflows() -> dict[str, WorkflowConfig]:
    return {"summarize@1": WorkflowConfig.model_validate(SUMMARIZE)}


def check_ids(workflows: dict[str, WorkflowConfig]) -> dict[str, WorkflowConfig]:
    for name in workflows:
        if not WORKFLOW_ID.match(name):
            raise ValueError(f"workflows.{name}: workflow ids look like 'name@version', e.g. 'summarize@2'")
    return {**builtin_workflows(), **workflows}


def resolve(workflows: dict[str, WorkflowConfig], name: str) -> tuple[str, WorkflowConfig] | None:
    """The workflow `name@version` names, or for a bare `name` its newest version."""
    if "@" in name:
        return (name, workflows[name]) if name in workflows else None
    versions = [(int(k.split("@")[1]), k) for k in workflows if k.split("@")[0] == name]
    if not versions:
        return None
    key = max(versions)[1]
    return key, workflows[key]
