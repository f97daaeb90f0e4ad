"""Conversations: the turns a job may carry instead of one prompt, and what one call asks of a model.

`Message` is the API's shape (`POST /v1/jobs` `messages`): a role and its content, as text or as parts. `Ask` is
the provider-neutral form the pipeline works on: the question (the last user turn, which retrieval grounds and the
template frames), the turns before it, and the system text the job gives. Each provider translates an `Ask`'s turns
into its own API (`turns` merges what its API would refuse: two turns in a row by the same role).
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.images import MEDIA_TYPES, Image, decoded, sniff
from core.tooling import ToolCall, ToolResult, as_text

MAX_TURNS = 1000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    type: Literal["text"]
    text: str = Field(min_length=1, max_length=1_000_000)


class ToolCallPart(ToolCall):
    """In an assistant turn: a call the model made (as the job's view gave it)."""

    type: Literal["tool_call"]


class ToolResultPart(ToolResult):
    """In a user turn: what one of the previous turn's calls returned."""

    type: Literal["tool_result"]


class ImagePart(BaseModel):
    """In a user turn: an image, as base64 (claim-checked into the blob store at submit) or `blob:KEY`."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    type: Literal["image"]
    data: str = Field(min_length=1, description="The image as base64, or `blob:KEY` for one in the blob store.")
    media_type: Literal["image/png", "image/jpeg", "image/gif", "image/webp"] | None = Field(
        default=None, description="Read from the image itself when not given; checked against it when given."
    )

    @model_validator(mode="after")
    def _readable(self) -> "ImagePart":
        if self.data.startswith("blob:"):
            if self.media_type is None and self.data.rsplit(".", 1)[-1] not in MEDIA_TYPES.values():
                raise ValueError("an image given as blob:KEY needs its media_type (or a .png/.jpeg/.gif/.webp key)")
            return self
        kind = sniff(decoded(self.data))
        if self.media_type is not None and self.media_type != kind:
            raise ValueError(f"the image is {kind}, not the {self.media_type} its media_type says")
        return self

    def image(self) -> Image:
        """The image by its blob key (base64 has been claim-checked by the time a worker reads it)."""
        if not self.data.startswith("blob:"):  # not claim-checked yet (at submit): its bytes say what it is
            return Image(self.media_type or sniff(decoded(self.data)) or "", "")
        key = self.data.removeprefix("blob:")
        kind: str = self.media_type or next(t for t, ext in MEDIA_TYPES.items() if key.endswith("." + ext))
        return Image(kind, key)


Part = Annotated[TextPart | ToolCallPart | ToolResultPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    role: Literal["user", "assistant"]
    content: str | list[Part] = Field(
        description="The turn's text, or its parts in order: `text`; `tool_call` (an assistant turn's call, with "
        "`id`, `name` and `arguments`); `tool_result` (a user turn's answer to one, with `tool_call_id`, `content` "
        "and `is_error`)."
    )

    @model_validator(mode="after")
    def _parts_fit_the_role(self) -> "Message":
        if self.role == "user" and self.calls():
            raise ValueError("a tool_call part belongs in an assistant turn (the model's)")
        if self.role == "assistant" and self.results():
            raise ValueError("a tool_result part belongs in a user turn (the one after the call)")
        if self.role == "assistant" and self.images():
            raise ValueError("an image part belongs in a user turn")
        return self

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def calls(self) -> tuple[ToolCall, ...]:
        if isinstance(self.content, str):
            return ()
        return tuple(
            ToolCall(id=p.id, name=p.name, arguments=p.arguments) for p in self.content if isinstance(p, ToolCallPart)
        )

    def results(self) -> tuple[ToolResult, ...]:
        if isinstance(self.content, str):
            return ()
        return tuple(
            ToolResult(tool_call_id=p.tool_call_id, content=p.content, is_error=p.is_error)
            for p in self.content
            if isinstance(p, ToolResultPart)
        )

    def images(self) -> tuple[Image, ...]:
        if isinstance(self.content, str):
            return ()
        return tuple(p.image() for p in self.content if isinstance(p, ImagePart))

    def turn(self) -> "Turn":
        return Turn(self.role, self.text(), self.calls(), self.results(), self.images())


def message_of(turn: "Turn") -> Message:
    """A turn as the API shows it: its text alone, or its parts (results, text, calls) in the order they are sent."""
    if not (turn.calls or turn.results):
        return Message(role=turn.role, content=turn.text)  # type: ignore[arg-type]
    parts: list[Any] = [ToolResultPart(type="tool_result", **r.model_dump()) for r in turn.results]
    parts += [TextPart(type="text", text=turn.text)] if turn.text else []
    parts += [ToolCallPart(type="tool_call", **c.model_dump()) for c in turn.calls]
    return Message(role=turn.role, content=parts)  # type: ignore[arg-type]


class Turn(NamedTuple):
    role: str  # user | assistant
    text: str
    calls: tuple[ToolCall, ...] = ()  # an assistant turn's tool calls
    results: tuple[ToolResult, ...] = ()  # a user turn's tool results, before its text
    images: tuple[Image, ...] = ()  # a user turn's images, before its text

    def counted(self) -> str:
        """The turn as the text it costs in a window: its text, then its calls or results."""
        extra = as_text(self.calls, self.results)
        return f"{self.text}\n{extra}" if extra else self.text


@dataclass(frozen=True)
class Ask:
    """What one call asks of a model: `question` is the last user turn (or the job's prompt), `history` the turns
    before it, oldest first, and `system` the job's own system text (None: the template's)."""

    question: str
    history: tuple[Turn, ...] = ()
    system: str | None = None
    format_note: str = ""  # what the reply's format asks for (structured output), added to the system text
    results: tuple[ToolResult, ...] = ()  # the last user turn's tool results, sent before its text
    droppable: int = 0  # how many of the oldest history turns (a thread's) may be left out to fit a window
    images: tuple[Image, ...] = ()  # the last user turn's images, sent before its text

    def fitted(self, drop: int) -> "Ask":
        """Without the `drop` oldest turns, and any that would then open the history unanswered: a kept history
        starts with a user turn that brings no tool results."""
        rest = self.history[drop:]
        while rest and (rest[0].role != "user" or rest[0].results):
            rest, drop = rest[1:], drop + 1
        return replace(self, history=rest, droppable=max(0, self.droppable - drop))

    def system_text(self, template_system: str) -> str:
        """The system text sent: the job's (or the template's), then what the reply's format asks for."""
        base = self.system or template_system
        return f"{base}\n\n{self.format_note}" if self.format_note else base

    def texts(self) -> list[str]:
        """Every text the caller wrote, for the input guardrails and size estimates."""
        return [
            *([self.system] if self.system else []),
            *(t.counted() for t in self.history),
            self.question,
            *(r.content for r in self.results),
        ]


def merged(history: tuple[Turn, ...]) -> list[Turn]:
    """Consecutive turns by one role joined: some APIs (Bedrock Converse) refuse two in a row, the others read
    them as one."""
    out: list[Turn] = []
    for t in history:
        if out and out[-1].role == t.role:
            last = out[-1]
            text = "\n\n".join(x for x in (last.text, t.text) if x)
            out[-1] = Turn(t.role, text, last.calls + t.calls, last.results + t.results, last.images + t.images)
        else:
            out.append(t)
    return out


def turns(
    history: tuple[Turn, ...], user: str, results: tuple[ToolResult, ...] = (), images: tuple[Image, ...] = ()
) -> list[Turn]:
    """The turns to send, ending with the rendered user turn, its tool results and images (joined to a user turn
    before it)."""
    return merged((*history, Turn("user", user, (), results, images)))


def pairing_problem(messages: list[Message]) -> str | None:
    """What the providers would refuse in a conversation's tool calls and results: a result that answers no call of
    the turn before it, or a call left unanswered by the turn after it."""
    for i, m in enumerate(messages):
        results = {r.tool_call_id for r in m.results()}
        called = {c.id for c in messages[i - 1].calls()} if i > 0 and messages[i - 1].role == "assistant" else set()
        if stray := sorted(results - called):
            return f"messages[{i}]: tool_result {stray[0]!r} answers no tool_call of the assistant turn before it"
        if m.role == "assistant" and m.calls() and i + 1 < len(messages):
            answered = {r.tool_call_id for r in messages[i + 1].results()}
            if missing := sorted({c.id for c in m.calls()} - answered):
                return f"messages[{i + 1}]: no tool_result for tool_call {missing[0]!r} of the turn before it"
    return None
