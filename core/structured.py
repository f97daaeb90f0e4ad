"""Structured output: a job's `response_format`, the reply checked against it, and the one corrective call.

`json_schema` asks for a JSON value matching the schema, `json_object` for any JSON object. Each provider uses its
native mode (a forced tool whose input schema is the schema on Anthropic and Bedrock; `response_format` on OpenAI),
and every provider's system text also says what to return. The reply is parsed and checked here; a mismatch gets
one corrective call quoting the reply and what was wrong (an attempt like any other, against the attempt and spend
budgets), and a reply that still fails ends the job as `malformed`, naming the first violations.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.conversation import Turn
from core.images import Image
from core.json_schema import schema_problems, violations
from core.tooling import ToolResult

MAX_SCHEMA_BYTES = 65_536
REJECTED_CHARS = 20_000  # of a refused reply kept on its attempt, and quoted by the corrective call


class ResponseFormat(BaseModel):
    """`{"type": "json_schema", "schema": {...}}`, or `{"type": "json_object"}`."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True, populate_by_name=True)

    type: Literal["json_schema", "json_object"]
    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="The JSON Schema the reply must match (a `json_schema` format): an object at the top.",
    )
    name: str = Field(
        default="response",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The schema's name, where a provider's mode wants one (the forced tool's, on Anthropic).",
    )

    @model_validator(mode="after")
    def _schema_we_can_judge(self) -> "ResponseFormat":
        if self.type == "json_object":
            if self.json_schema is not None:
                raise ValueError("a json_object format takes no schema; give type json_schema to send one")
            return self
        if self.json_schema is None:
            raise ValueError("a json_schema format needs its `schema`")
        if self.json_schema.get("type") != "object":
            raise ValueError('the schema must describe an object at the top ("type": "object")')
        if len(json.dumps(self.json_schema)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"the schema is over {MAX_SCHEMA_BYTES:,} bytes as JSON")
        if problems := schema_problems(self.json_schema):
            raise ValueError("; ".join(problems[:3]))
        return self

    def schema_or_object(self) -> dict[str, Any]:
        """The schema a native mode is given: the job's, or any object for `json_object`."""
        return self.json_schema if self.json_schema is not None else {"type": "object"}

    def instruction(self) -> str:
        """What the system text adds, so that every provider (and a model behind a plain chat API) knows."""
        if self.json_schema is None:
            return "Reply with a single JSON object and nothing else."
        schema = json.dumps(self.json_schema, separators=(",", ":"))
        return f"Reply with a single JSON value matching this JSON Schema, and nothing else:\n{schema}"


def problems(fmt: ResponseFormat, text: str) -> list[str]:
    """Why `text` is not a reply in `fmt` ([] when it is)."""
    try:
        value = json.loads(_unfenced(text))
    except ValueError as e:
        return [f"the reply is not JSON ({e})"]
    if not isinstance(value, dict):
        return ["the reply is JSON but not an object"]
    return violations(value, fmt.json_schema) if fmt.json_schema is not None else []


def parsed(fmt: ResponseFormat | None, text: str | None) -> Any:
    """The object a checked reply holds, for the job view (None without a format or a reply)."""
    if fmt is None or text is None:
        return None
    try:
        return json.loads(_unfenced(text))
    except ValueError:
        return None


def correction(
    user: str, rejected: str, why: str, results: tuple[ToolResult, ...] = (), images: tuple[Image, ...] = ()
) -> tuple[tuple[Turn, ...], str]:
    """The corrective call's turns: the rendered question and the refused reply before a user turn saying what
    failed. Returns (turns to add to the history, the new user turn)."""
    note = (
        f"Your reply did not match the required format: {why}. Reply again with only the corrected JSON, "
        "and nothing before or after it."
    )
    return (Turn("user", user, (), results, images), Turn("assistant", rejected[:REJECTED_CHARS])), note


def _unfenced(text: str) -> str:
    """A reply wrapped in a Markdown code fence (some models add one in a plain chat mode), unwrapped."""
    t = text.strip()
    if t.startswith("```") and t.endswith("```"):
        t = t[3:-3]
        return t.split("\n", 1)[1] if t[:4].lower() == "json" or "\n" in t[:10] else t
    return t
