"""The texts of a job request a policy screens, by where they are, and the request with some of them replaced.

Screened: `prompt`, `system`, `context_query`, a workflow's inline `inputs`, and in `messages` every text, tool
result and string in a tool call's arguments (a client may send any; places there are JSON Pointers, so a key with
a dot or a slash can't be taken for another). A workflow's documents (`blob:KEY` inputs) are screened in the step
prompts that carry them. Not screened: `metadata` (tags for the caller, never sent) and images (a policy may refuse
them: `images: block`).
"""

from __future__ import annotations

from typing import Any

from core.conversation import ImagePart, Message, TextPart, ToolCallPart, ToolResultPart
from core.job_request import JobRequest
from core.workflows.inputs import BLOB


def request_texts(request: JobRequest) -> list[tuple[str, str]]:
    out = [(f, t) for f in ("prompt", "system", "context_query") if (t := getattr(request, f))]
    out += [(f"inputs.{name}", t) for name, t in request.inputs.items() if not t.startswith(BLOB)]
    for i, m in enumerate(request.messages or []):
        if isinstance(m.content, str):
            out.append((f"messages[{i}].content", m.content))
            continue
        for j, p in enumerate(m.content):
            if isinstance(p, TextPart):
                out.append((f"messages[{i}].content[{j}].text", p.text))
            elif isinstance(p, ToolResultPart) and p.content:
                out.append((f"messages[{i}].content[{j}].content", p.content))
            elif isinstance(p, ToolCallPart):
                out += _leaves(p.arguments, f"messages[{i}].content[{j}].arguments#")
    return out


def first_image(request: JobRequest) -> str | None:
    """Where the request's first image part is, or None."""
    for i, m in enumerate(request.messages or []):
        if not isinstance(m.content, str):
            for j, p in enumerate(m.content):
                if isinstance(p, ImagePart):
                    return f"messages[{i}].content[{j}]"
    return None


def _leaves(value: Any, where: str) -> list[tuple[str, str]]:
    """The strings in a JSON value, each with its place (`where` and its JSON Pointer)."""
    if isinstance(value, str):
        return [(where, value)] if value else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [leaf for k, v in items for leaf in _leaves(v, f"{where}/{_escaped(str(k))}")]


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _replaced(value: Any, where: str, texts: dict[str, str]) -> Any:
    if isinstance(value, str):
        return texts.get(where, value)
    if isinstance(value, dict):
        return {k: _replaced(v, f"{where}/{_escaped(str(k))}", texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, f"{where}/{n}", texts) for n, v in enumerate(value)]
    return value


def with_texts(request: JobRequest, texts: dict[str, str]) -> JobRequest:
    """`request` with the texts at these places replaced (places as `request_texts` names them)."""
    update: dict[str, object] = {f: texts[f] for f in ("prompt", "system", "context_query") if f in texts}
    if any(w.startswith("inputs.") for w in texts):
        update["inputs"] = {name: texts.get(f"inputs.{name}", t) for name, t in request.inputs.items()}
    if request.messages and any(w.startswith("messages[") for w in texts):
        update["messages"] = [_message(i, m, texts) for i, m in enumerate(request.messages)]
    return request.model_copy(update=update)


def _message(i: int, m: Message, texts: dict[str, str]) -> Message:
    if isinstance(m.content, str):
        return m.model_copy(update={"content": texts.get(f"messages[{i}].content", m.content)})
    parts = list(m.content)
    for j, p in enumerate(parts):
        if isinstance(p, TextPart) and (t := texts.get(f"messages[{i}].content[{j}].text")) is not None:
            parts[j] = p.model_copy(update={"text": t})
        elif isinstance(p, ToolResultPart) and (t := texts.get(f"messages[{i}].content[{j}].content")) is not None:
            parts[j] = p.model_copy(update={"content": t})
        elif isinstance(p, ToolCallPart):
            parts[j] = p.model_copy(
                update={"arguments": _replaced(p.arguments, f"messages[{i}].content[{j}].arguments#", texts)}
            )
    return m.model_copy(update={"content": parts})
