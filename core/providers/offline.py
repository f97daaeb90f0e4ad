"""Offline provider: deterministic, extractive, no network.

It answers from the retrieved passages by picking the sentences that best cover the question's
content words, cites them, and says plainly when the context has no answer. Given a long text and no
context (a workflow's summarise step), it summarises extractively: the sentences whose words recur most
in the text, as bullet points in document order. Useful for demos, tests and air-gapped smoke checks;
never pretends to be a model.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from core.models import ProviderResult
from core.providers.base import ChatRequest
from core.text import content_terms, sentences
from core.tokenizers import bpe
from core.tooling import NamedChoice, Tool, ToolCall, as_text

NO_CONTEXT = (
    "No relevant passages were retrieved for this question, and the offline provider answers only "
    "from retrieved context. Ingest documents that cover it (`alto ingest PATH --collection NAME`), "
    "or route this task to a model provider."
)
NO_ANSWER = "The provided context does not contain an answer to this question."
SUMMARY_MIN_SENTENCES, SUMMARY_MIN_WORDS, SUMMARY_SENTENCES = 4, 60, 5


class OfflineProvider:
    name = "offline"

    def __init__(self, max_sentences: int = 3) -> None:
        self.max_sentences = max_sentences

    async def generate(self, request: ChatRequest, *, timeout_s: float) -> ProviderResult:
        text, stop = self.answer(request), "end_turn"
        if (fmt := request.response_format) is not None:  # the answer, in the shape the schema asks for
            value = shaped(fmt.json_schema, text, fmt.json_schema) if fmt.json_schema else {"answer": text}
            text = json.dumps(value)
        if (tool := _called(request)) is not None:  # made to call one: the answer as its arguments
            calls = [
                ToolCall(id="call_offline_1", name=tool.name, arguments=shaped(tool.parameters, text, tool.parameters))
            ]
            return self._result(request, "", "tool_use", calls)
        return self._result(request, text, stop)

    def _result(
        self, request: ChatRequest, text: str, stop: str, calls: list[ToolCall] | None = None
    ) -> ProviderResult:
        enc = bpe()
        output = enc.count(text or as_text(tuple(calls or ()), ()))
        if output > request.max_tokens:  # cut where a model would stop, and say so
            text, stop, output = enc.truncate(text, request.max_tokens), "max_tokens", request.max_tokens
        return ProviderResult(
            text=text,
            tool_calls=calls or [],
            input_tokens=enc.count(request.system)
            + sum(enc.count(t.counted()) for t in request.history)
            + enc.count(request.user)
            + enc.count(as_text((), request.results)),
            output_tokens=output,
            stop_reason=stop,
            raw_stop_reason=stop,
        )

    def answer(self, request: ChatRequest) -> str:
        if request.results and not request.question.strip():  # a turn of tool results alone: report them
            return "The tools returned: " + "; ".join(r.content[:500] for r in request.results)
        if not request.context:
            return self.summary(request.question) or NO_CONTEXT
        q_terms = set(content_terms(request.question))
        if not q_terms:
            return NO_ANSWER
        candidates: list[tuple[str, str, set[str]]] = []
        df: Counter[str] = Counter()
        for chunk in request.context:
            for sent in sentences(chunk.text):
                terms = set(content_terms(sent))
                candidates.append((chunk.id, sent, terms))
                df.update(terms & q_terms)
        present = q_terms & set(df)
        # Too few of the question's words occur anywhere in the context: say so rather than guess.
        if len(present) < max(1, math.ceil(len(q_terms) * 0.4)):
            return NO_ANSWER
        n = max(1, len(candidates))
        weight = {t: math.log(1 + n / df[t]) for t in present}
        total = sum(weight.values())
        scored = []
        for i, (cid, sent, terms) in enumerate(candidates):
            hit = terms & q_terms
            coverage = sum(weight[t] for t in hit) / total if total else 0.0
            if len(hit) >= 1 and coverage >= 0.3:
                scored.append((coverage, -i, cid, sent))
        if not scored:
            return NO_ANSWER
        scored.sort(reverse=True)
        best = scored[0][0]
        scored = [s for s in scored if s[0] >= 0.6 * best]  # only sentences close to the best match
        picked = sorted(scored[: self.max_sentences], key=lambda s: -s[1])  # keep document order
        return " ".join(f"{sent} [{cid}]" for _, _, cid, sent in picked)

    def summary(self, text: str) -> str | None:
        """Up to five central sentences of a long text as bullets; None for a short one (a plain question)."""
        sents = [s.strip() for line in text.splitlines() for s in sentences(line.strip().lstrip("-•* "))]
        sents = [s for s in sents if len(s.split()) >= 4]
        if len(sents) < SUMMARY_MIN_SENTENCES or len(text.split()) < SUMMARY_MIN_WORDS:
            return None
        tf = Counter(t for s in sents for t in set(content_terms(s)))
        scored = []
        for i, sent in enumerate(sents):
            terms = set(content_terms(sent))
            if terms:
                scored.append((sum(tf[t] for t in terms) / math.sqrt(len(terms)), -i, sent))
        picked = sorted(sorted(scored, reverse=True)[:SUMMARY_SENTENCES], key=lambda s: -s[1])
        return "\n".join(f"- {sent}" for _, _, sent in picked) or None

    async def aclose(self) -> None:
        return None


def _called(request: ChatRequest) -> Tool | None:
    """The tool the offline provider calls: the one the choice names, or the first when any must be called. With
    `auto` it answers in text, as a model with nothing to look up would."""
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None
    wanted = choice.name if isinstance(choice, NamedChoice) else request.tools[0].name
    return next(t for t in request.tools if t.name == wanted)


def shaped(schema: Any, answer: str, root: Any) -> Any:
    """A value of `schema`'s shape carrying the extracted answer: in its strings, the first of every enum, the
    least of every number. A model fills a schema with meaning; this fills it with the answer, so that a local
    structured job runs end to end (and a schema it can't satisfy, such as a pattern, fails as a model's would)."""
    if not isinstance(schema, dict):
        return answer
    if "$ref" in schema:
        _, key, name = schema["$ref"].split("/", 2)
        return shaped(root[key][name], answer, root)
    if "const" in schema or "enum" in schema:
        return schema["const"] if "const" in schema else schema["enum"][0]
    if options := schema.get("anyOf") or schema.get("oneOf"):
        return shaped(options[0], answer, root)
    kind = schema.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: shaped(sub, answer, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [shaped(schema.get("items", {}), answer, root) for _ in range(schema.get("minItems", 1))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return answer[: schema["maxLength"]] if "maxLength" in schema else answer
