"""Tools a job offers the model: each tool's spec, the choice the model is given, and the calls and results that
travel in a conversation's turns. The model's calls end the job (`stop_reason: tool_use`, the calls in the view);
the client runs them and continues the conversation with their results as the next job's last turn. Nothing is
executed here.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[A-Za-z0-9_-]{1,64}$"  # what every provider accepts as a tool's name
CALL_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_TOOLS = 128
MAX_PARAMETERS_BYTES = 65_536


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class Tool(_Strict):
    """A tool the model may call: its name, what it does, and its parameters as a JSON Schema (an object)."""

    name: str = Field(pattern=NAME)
    description: str = Field(default="", max_length=4096)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="The call's arguments as a JSON Schema with an object at the top.",
    )

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type") != "object":
            raise ValueError('a tool\'s parameters must be a JSON Schema for an object ("type": "object")')
        if len(json.dumps(v)) > MAX_PARAMETERS_BYTES:
            raise ValueError(f"a tool's parameters are over {MAX_PARAMETERS_BYTES:,} bytes as JSON")
        return v


class NamedChoice(_Strict):
    name: str = Field(pattern=NAME, description="The tool the model must call.")


ToolChoice = Literal["auto", "any", "none"] | NamedChoice


class ToolCall(_Strict):
    """A call the model made: the id its result answers, the tool and its arguments."""

    id: str = Field(pattern=CALL_ID)
    name: str = Field(pattern=NAME)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(_Strict):
    """What a tool call returned (or the error it raised, `is_error`), sent back in the next user turn."""

    tool_call_id: str = Field(pattern=CALL_ID)
    content: str = Field(max_length=1_000_000)
    is_error: bool = False


def as_text(calls: tuple[ToolCall, ...], results: tuple[ToolResult, ...]) -> str:
    """Calls and results as the text they cost in a window (counted with the turn's own text)."""
    parts = [f"{c.name}({json.dumps(c.arguments, separators=(',', ':'))})" for c in calls]
    return "\n".join(parts + [r.content for r in results])
