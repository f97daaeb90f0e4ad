"""Conversations: the turns a job may carry instead of one prompt, and what one call asks of a model.

`Message` is the API's shape (`POST /v1/jobs` `messages`): a role and its content, as text or as parts. `Ask` is
the provider-neutral form the pipeline works on: the question (the last user turn, which retrieval grounds and the
template frames), the turns before it, and the system text the job gives. Each provider translates an `Ask`'s turns
into its own API (`turns` merges what its API would refuse: two turns in a row by the same role).
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from dataclasses import dataclass
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

MAX_TURNS = 1000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    type: Literal["text"] = Field(description="A part of a turn's content; `text` is the kind carried today.")
    text: str = Field(min_length=1, max_length=1_000_000)


class Message(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    role: Literal["user", "assistant"]
    content: str | list[TextPart] = Field(
        description='The turn\'s text, or its parts in order ({"type": "text", "text": ...}).'
    )

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "\n\n".join(p.text for p in self.content)


class Turn(NamedTuple):
    role: str  # user | assistant
    text: str


@dataclass(frozen=True)
class Ask:
    """What one call asks of a model: `question` is the last user turn (or the job's prompt), `history` the turns
    before it, oldest first, and `system` the job's own system text (None: the template's)."""

    question: str
    history: tuple[Turn, ...] = ()
    system: str | None = None
    format_note: str = ""  # what the reply's format asks for (structured output), added to the system text

    def system_text(self, template_system: str) -> str:
        """The system text sent: the job's (or the template's), then what the reply's format asks for."""
        base = self.system or template_system
        return f"{base}\n\n{self.format_note}" if self.format_note else base

    def texts(self) -> list[str]:
        """Every text the caller wrote, for the input guardrails and size estimates."""
        return [*([self.system] if self.system else []), *(t.text for t in self.history), self.question]


def merged(history: tuple[Turn, ...]) -> list[Turn]:
    """Consecutive turns by one role joined: some APIs (Bedrock Converse) refuse two in a row, the others read
    them as one."""
    out: list[Turn] = []
    for t in history:
        if out and out[-1].role == t.role:
            out[-1] = Turn(t.role, f"{out[-1].text}\n\n{t.text}")
        else:
            out.append(t)
    return out


def turns(history: tuple[Turn, ...], user: str) -> list[Turn]:
    """The turns to send, ending with the rendered user turn (joined to a user turn before it)."""
    return merged((*history, Turn("user", user)))
