"""Response cache: identical requests on the same route, template and context reuse one reply.

The key covers everything that shapes the model's input (tenant, normalised request, provider,
model id, output limit, template id@version, the retrieved context itself), so re-ingesting a
document or editing a template never serves a stale answer; a hit costs nothing and is marked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from pydantic import BaseModel

from core.chunks import ContextChunk
from core.config.api import CacheConfig
from core.models import CANONICAL_JSON, JobRequest, ProviderResult, RouteDecision
from core.ports import StateStore

_WS = re.compile(r"\s+")


def _norm(text: str | None) -> str | None:
    return _WS.sub(" ", text).strip() if text is not None else None


def cache_key(
    tenant: str,
    request: JobRequest,
    decision: RouteDecision,
    max_tokens: int,
    template: str,
    chunks: Sequence[ContextChunk],
) -> str:
    material: dict[str, object] = {
        "tenant": tenant,
        "prompt": _norm(request.prompt),
        "task": request.task,
        "collection": request.collection,
        "context_query": _norm(request.context_query),
        "provider": decision.provider,
        "model_id": decision.model_id,
        "max_tokens": max_tokens,
        "template": template,
        "context": [[c.id, hashlib.sha256(c.text.encode()).hexdigest()] for c in chunks],
    }
    if request.tools:
        material["tools"] = [t.model_dump(mode="json") for t in request.tools]
        choice = request.tool_choice
        material["tool_choice"] = choice.model_dump(mode="json") if isinstance(choice, BaseModel) else choice
    if request.response_format is not None:  # another shape of answer: another entry
        material["response_format"] = request.response_format.model_dump(mode="json", by_alias=True)
    if request.messages is not None or request.system is not None:  # a prompt-only job's key is as it always was
        material["system"] = _norm(request.system)
        material["messages"] = [
            [m.role, _WS.sub(" ", m.turn().counted()).strip(), [i.key for i in m.images()]]
            for m in request.messages or []
        ]
    digest = hashlib.sha256(CANONICAL_JSON.encode(material).encode()).hexdigest()
    return f"cache:{tenant}:{digest}"


class ResponseCache:
    def __init__(self, state: StateStore, config: CacheConfig) -> None:
        self.state = state
        self.config = config

    def get(self, key: str) -> tuple[ProviderResult, str] | None:
        """The cached reply and the id of the job that paid for it."""
        rec = self.state.get(key)
        if rec is None:
            return None
        try:
            return ProviderResult.model_validate(rec.value["reply"]), str(rec.value["job_id"])
        except (KeyError, ValueError):
            return None  # an unreadable entry is a miss, never an error

    def put(self, key: str, reply: ProviderResult, job_id: str) -> bool:
        value = {"reply": reply.model_dump(mode="json"), "job_id": job_id}
        if len(json.dumps(value)) > self.config.max_entry_bytes:
            return False
        return self.state.put_if_absent(key, value, ttl_s=self.config.ttl_s)
