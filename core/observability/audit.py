"""The audit log (opt-in): per answered job, what was sent and why, as one JSON line in the blob store.

A record holds the prompt exactly as sent (system and user turn), the output, the model and its
provider model id, the template id@version, the context chunk ids, and the decision trail: the route
and its reason, every attempt (model, outcome, error class: where a fallback happened) and the
guardrail verdict, with the safety policy's findings (rule, action, where, offsets; never the text found). Keys are `{prefix}/retention={days}d/{tenant}/{YYYY-MM-DD}/{job_id}.jsonl`, so
one lifecycle rule per retention prefix expires them. PII (e-mail, phone and card numbers) is masked
by default. It is written only when `observability.audit.enabled`, and never to the ordinary logs.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from core.config.api import AuditConfig
from core.models import Job
from core.ports import BlobStore


class AuditLog:
    def __init__(self, config: AuditConfig, blobs: BlobStore, model_ids: dict[str, str]) -> None:
        self.config = config
        self.blobs = blobs
        self.model_ids = model_ids

    def key(self, job: Job) -> str:
        day = dt.datetime.fromtimestamp(job.finished_at or job.updated_at, dt.UTC).strftime("%Y-%m-%d")
        return f"{self.config.prefix}/retention={self.config.retention_days}d/{job.tenant}/{day}/{job.id}.jsonl"

    def record(self, job: Job, *, system: str, user: str) -> dict[str, Any]:
        route = job.route
        entry = {
            "job_id": job.id,
            "tenant": job.tenant,
            "task": job.request.task,
            "trace_id": job.trace_id,
            "status": job.status.value,
            "finished_at": job.finished_at,
            "model": route.model if route else None,
            "model_id": self.model_ids.get(route.model) if route else None,
            "provider": route.provider if route else None,
            "template": job.prompt_template,
            "prompt": {"system": self._clean(system), "user": self._clean(user)},
            "output": self._clean(job.reply.text) if job.reply else None,
            "context_chunk_ids": job.context_chunks,
            "decisions": {
                "route_reason": route.reason if route else None,
                "attempts": [
                    {
                        "number": a.number,
                        "model": a.model,
                        "outcome": a.outcome,
                        "error_class": a.error_class.value if a.error_class else None,
                    }
                    for a in job.attempts
                ],
                "guardrail": "passed"
                if job.status.value == "succeeded"
                else (job.error.message if job.error else None),
                "cached_from": job.cached_from,
                "safety": _safety(job),
            },
            "usage": job.usage.model_dump(mode="json"),
        }
        return entry

    def write(self, job: Job, *, system: str, user: str) -> str:
        key = self.key(job)
        line = json.dumps(self.record(job, system=system, user=user), ensure_ascii=False) + "\n"
        self.blobs.put(key, line.encode())
        return key

    def _clean(self, text: str) -> str:
        if not self.config.redact_pii:
            return text
        from core.redaction import redact

        return redact(text)


def _safety(job: Job) -> dict[str, Any] | None:
    from core.safety.record import SafetyView

    view = SafetyView.of(job.safety)
    return view.model_dump(mode="json") if view is not None else None
