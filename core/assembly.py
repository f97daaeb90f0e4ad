"""Prompt assembly: the most relevant context that fits an exact token budget, never more.

    budget = window - system - earlier turns - template - question - reserved output - margin

Every figure is counted with the model's tokenizer (a real BPE), the margin covers tokenizers that
only approximate the model's own, and after packing the whole prompt is counted again exactly as
it will be sent: if joining the parts cost more than their sum (BPE merges across boundaries can go
either way), the weakest chunk goes until it fits. Candidates are taken in relevance order through
near-duplicate removal and per-source caps, then packed greedily by relevance per token; everything
left out is recorded with its reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from core.chunks import ContextChunk
from core.config.worker import ModelConfig, RetrievalConfig
from core.conversation import Ask
from core.errors import PromptTooLong
from core.images import tokens as image_tokens
from core.models import ChunkDropped, ChunkUse, PromptAssembly
from core.prompting import RenderedPrompt, document_block, render, user_parts
from core.tokenizers import counter
from core.tooling import as_text

FIT_STEP = 10  # a thread's turns are left out ten at a time (five exchanges): see _fit_history


@dataclass
class Assembled:
    prompt: RenderedPrompt
    chunks: list[ContextChunk]
    record: PromptAssembly

    @property
    def input_tokens(self) -> int:
        """Tokens the prompt takes of a window: the count plus the margin held back for the model's tokenizer."""
        return self.record.input_tokens + self.record.margin_tokens

    def rate_tokens(self, model: ModelConfig) -> int:
        """Input tokens to reserve against the model's rate limits: the count raised by its `token_margin` (the
        model's own tokenizer may count that share more than ours); the reply's real count then corrects it.
        Never the window's margin, which is a share of the whole window: tens of thousands of tokens a call."""
        return math.ceil(self.record.input_tokens * (1 + model.token_margin))


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def _lost_in_middle(chunks: list[ContextChunk]) -> list[ContextChunk]:
    """Best first, second best last, and so on inwards: models recall the ends of long contexts best
    (Liu et al., 2023, "Lost in the Middle")."""
    front: list[ContextChunk] = []
    back: list[ContextChunk] = []
    for i, c in enumerate(chunks):
        (front if i % 2 == 0 else back).append(c)
    return front + back[::-1]


def margin_tokens(model: ModelConfig, reserved_output: int) -> int:
    return math.ceil(model.token_margin * max(0, model.context_window - reserved_output))


def history_tokens(ask: Ask, count: Any) -> int:
    """A conversation's earlier turns, and the last turn's tool results and images, as the model's tokenizer counts
    them (each turn's text, calls and results, and an estimate per image; the few tokens an API spends on each
    turn's role are inside the margin)."""
    last = (count(as_text((), ask.results)) if ask.results else 0) + sum(map(image_tokens, ask.images))
    return sum(count(t.counted()) + sum(map(image_tokens, t.images)) for t in ask.history) + last


def required_tokens(ask: Ask, *, template: Any, model: ModelConfig, reserved_output: int) -> int:
    """Input tokens the prompt needs with no context at all, and no thread turn it could leave out (plus the
    margin): for window checks."""
    count = counter(model.tokenizer).count
    ask = ask.fitted(ask.droppable)
    prompt = render(ask, [], template=template, max_tokens=reserved_output)
    return (
        count(prompt.system) + history_tokens(ask, count) + count(prompt.user) + margin_tokens(model, reserved_output)
    )


def assemble(
    ask: Ask,
    candidates: list[ContextChunk],
    *,
    template_id: str,
    template: Any,
    model_name: str,
    model: ModelConfig,
    reserved_output: int,
    settings: RetrievalConfig,
) -> Assembled:
    """Pick and order context for `model`; raises PromptTooLong when not even the question fits. A thread's
    oldest turns are left out first, until the rest fits."""
    count = counter(model.tokenizer).count
    system_tokens = count(ask.system_text(template.system))
    template_tokens = count("\n\n".join(user_parts("", "", template, reserved_output)))
    question_tokens = count(ask.question)
    margin = margin_tokens(model, reserved_output)
    base = system_tokens + template_tokens + question_tokens
    ask, dropped_turns = _fit_history(ask, count, room := model.context_window - base - reserved_output - margin)
    earlier = history_tokens(ask, count)
    if (budget := room - earlier) < 0:
        raise _no_room(base + earlier, reserved_output, margin, model_name, model)
    dropped: list[ChunkDropped] = []
    kept = _distinct(candidates, settings, dropped)
    cost = {c.id: count(document_block(c)) + 1 for c in kept}  # +1: the newline that joins blocks
    chosen, used = _within_budget(kept, cost, budget, settings.top_k, dropped)

    limit = model.context_window - reserved_output - margin

    def rendered(chunks: list[ContextChunk]) -> tuple[RenderedPrompt, int]:
        prompt = render(ask, chunks, template_id=template_id, template=template, max_tokens=reserved_output)
        return prompt, count(prompt.system) + earlier + count(prompt.user)

    ordered, prompt, exact, used = _exactly(chosen, used, cost, dropped, rendered, limit, settings.ordering)
    if exact > limit:
        raise PromptTooLong(f"the prompt counts {exact} tokens, over the {limit} available on '{model_name}'")
    record = PromptAssembly(
        template=template_id,
        model=model_name,
        tokenizer=model.tokenizer,
        window=model.context_window,
        system_tokens=system_tokens,
        template_tokens=template_tokens,
        question_tokens=question_tokens,
        history_tokens=earlier,
        history_turns=len(ask.history),
        history_dropped=dropped_turns,
        reserved_output_tokens=reserved_output,
        margin_tokens=margin,
        context_budget=budget,
        context_tokens=used,
        input_tokens=exact,
        ordering=settings.ordering,
        chunks=[ChunkUse(id=c.id, tokens=cost[c.id], score=round(c.score, 6)) for c in ordered],
        dropped=dropped,
    )
    return Assembled(prompt, ordered, record)


def _exactly(
    chosen: list[ContextChunk],
    used: int,
    cost: dict[str, int],
    dropped: list[ChunkDropped],
    rendered: Any,
    limit: int,
    ordering: str,
) -> tuple[list[ContextChunk], RenderedPrompt, int, int]:
    """The prompt counted exactly as it will be sent; while joining the parts cost more than their sum, the weakest
    chunk goes and it is counted again. (ordered chunks, prompt, its count, context tokens used)"""
    while True:
        ordered = _lost_in_middle(chosen) if ordering == "lost_in_middle" else chosen
        prompt, exact = rendered(ordered)
        if exact <= limit or not chosen:
            return ordered, prompt, exact, used
        weakest = chosen.pop()
        used -= cost[weakest.id]
        dropped.append(ChunkDropped(id=weakest.id, reason="over budget after exact count"))


def _fit_history(ask: Ask, count: Any, room: int) -> tuple[Ask, int]:
    """The ask with its oldest droppable turns left out, `FIT_STEP` at a time, until its history fits `room` tokens
    (a kept history still opens with a user turn), and how many turns were left out."""
    whole = history_tokens(ask, count)
    if not ask.droppable or whole <= room:
        return ask, 0
    costs = [count(t.counted()) + sum(map(image_tokens, t.images)) for t in ask.history]
    results = whole - sum(costs)
    drop = 0
    while drop < ask.droppable and sum(costs[drop:]) + results > room:
        drop += 1
    # in steps: the cut stays put while the next turns come, so the prompt cache keeps the prefix after it
    fitted = ask.fitted(min(ask.droppable, -(-drop // FIT_STEP) * FIT_STEP))
    return fitted, len(ask.history) - len(fitted.history)


def _no_room(fixed: int, reserved_output: int, margin: int, model_name: str, model: ModelConfig) -> PromptTooLong:
    return PromptTooLong(
        f"the prompt needs {fixed} tokens before any context, plus {reserved_output} reserved for the answer and a "
        f"{margin}-token margin, but '{model_name}' has a {model.context_window}-token window; shorten the question "
        "(or send fewer turns), lower max_tokens, or route to a model with a larger window"
    )


def _distinct(
    candidates: list[ContextChunk], settings: RetrievalConfig, dropped: list[ChunkDropped]
) -> list[ContextChunk]:
    """Candidates minus near-duplicates and past the per-source cap, in relevance order (which decides
    who is the "copy"); what is left out is recorded in `dropped`."""
    kept: list[ContextChunk] = []
    kept_shingles: list[tuple[str, set[tuple[str, ...]]]] = []
    per_source: dict[str, int] = {}
    cap = settings.max_chunks_per_source
    for c in sorted(candidates, key=lambda c: -c.score):
        sh = _shingles(c.text)
        twin = next(
            (
                cid
                for cid, other in kept_shingles
                if len(sh & other) / max(1, len(sh | other)) >= settings.near_duplicate_threshold
            ),
            None,
        )
        if twin is not None:
            dropped.append(ChunkDropped(id=c.id, reason=f"near-duplicate of {twin}"))
            continue
        if cap and per_source.get(c.source, 0) >= cap:
            dropped.append(ChunkDropped(id=c.id, reason=f"per-source cap ({cap} from {c.source})"))
            continue
        per_source[c.source] = per_source.get(c.source, 0) + 1
        kept.append(c)
        kept_shingles.append((c.id, sh))
    return kept


def _within_budget(
    kept: list[ContextChunk], cost: dict[str, int], budget: int, top_k: int, dropped: list[ChunkDropped]
) -> tuple[list[ContextChunk], int]:
    """Greedy by relevance per token within `budget` and `top_k`: (chosen, best first; tokens used)."""
    chosen: list[ContextChunk] = []
    used = 0
    for c in sorted(kept, key=lambda c: (-(c.score / max(1, cost[c.id])), c.id)):
        if len(chosen) >= top_k:
            dropped.append(ChunkDropped(id=c.id, reason=f"beyond top_k ({top_k})"))
        elif used + cost[c.id] > budget:
            dropped.append(ChunkDropped(id=c.id, reason=f"over budget ({cost[c.id]} tokens, {budget - used} left)"))
        else:
            chosen.append(c)
            used += cost[c.id]
    chosen.sort(key=lambda c: -c.score)
    return chosen, used


def trim_to(assembled: Assembled, tokens: int, **kwargs: Any) -> Assembled | None:
    """Re-assemble with the weakest chunks removed until roughly `tokens` fewer are used (after a
    provider's own count came out higher than ours). None when there is no context left to drop."""
    chunks = sorted(assembled.chunks, key=lambda c: -c.score)
    if not chunks:
        return None
    freed = 0
    costs = {u.id: u.tokens for u in assembled.record.chunks}
    while chunks and freed < tokens:
        freed += costs.get(chunks.pop().id, 0)
    again = assemble(candidates=chunks, **kwargs)
    again.record.dropped = assembled.record.dropped + [
        ChunkDropped(id=c.id, reason="over budget by the provider's count")
        for c in assembled.chunks
        if c.id not in {x.id for x in chunks}
    ]
    return again
