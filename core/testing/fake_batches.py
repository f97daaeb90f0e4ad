"""The fake Messages API's Message Batches endpoints, shaped as the real ones (and the SDK's models).

`POST /v1/messages/batches` takes `{"requests": [{"custom_id", "params"}]}`; each request is answered
by the same fake as an online call (so its reply, usage and faults are the same) once the batch has
been "processing" for `batch_delay_s`; `GET /v1/messages/batches/{id}` reports its status and counts;
`GET .../results` streams JSONL. `batch_outcomes` maps a custom_id to "errored" or "expired" to inject
per-item failures.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from typing import Any


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


class FakeBatches:
    def __init__(
        self,
        answer: Callable[..., dict[str, Any]],
        cache: Any = None,
        *,
        delay_s: float = 0.0,
        shape: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    ) -> None:
        self.answer = answer  # (model, max_tokens, messages, marker) -> a Messages API reply: the fake's own
        self.shape = shape  # (params, reply) -> None: the reply made a forced tool call when the params ask for one
        self.cache = cache  # the fake's prompt cache: batch requests read and write it too, as Anthropic's may
        self.delay_s = delay_s
        self.batches: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, str] = {}  # custom_id -> "errored" | "expired"
        self.created = 0
        self.items = 0
        self.params: list[dict[str, Any]] = []  # each batch request's params, as sent
        self.results_served = 0

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any, str | None]:
        """(status, JSON payload, or None with raw JSONL as the third item)."""
        parts = path.rstrip("/").split("/")  # ['', 'v1', 'messages', 'batches', ID?, 'results'?]
        if method == "POST" and len(parts) == 4:
            return 200, self._create(json.loads(body)), None
        if method == "GET" and len(parts) in (5, 6) and parts[4] in self.batches:
            b = self.batches[parts[4]]
            if len(parts) == 5:
                return 200, self._view(b), None
            if self._view(b)["processing_status"] != "ended":
                return 404, {"type": "error", "error": {"type": "not_found_error", "message": "not ended"}}, None
            self.results_served += 1
            return 200, None, "".join(json.dumps(r) + "\n" for r in b["results"])
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}}, None

    def _create(self, req: dict[str, Any]) -> dict[str, Any]:
        bid = "msgbatch_" + uuid.uuid4().hex[:24]
        results = []
        for item in req["requests"]:
            cid, fault = item["custom_id"], self.outcomes.get(item["custom_id"])
            if fault == "expired":
                results.append({"custom_id": cid, "result": {"type": "expired"}})
            elif fault == "errored":
                results.append(
                    {
                        "custom_id": cid,
                        "result": {
                            "type": "errored",
                            "error": {
                                "type": "error",
                                "error": {"type": "api_error", "message": "Internal server error"},
                            },
                        },
                    }
                )
            else:
                p = item["params"]
                self.params.append(p)
                msg = self.answer(p["model"], int(p["max_tokens"]), p["messages"], None)
                msg["usage"]["input_tokens"] += len(str(p.get("system", ""))) // 4  # as the online fake counts
                if self.shape is not None:
                    self.shape(p, msg)
                if self.cache is not None:
                    msg["usage"] = self.cache.apply(p, msg["usage"])
                results.append({"custom_id": cid, "result": {"type": "succeeded", "message": msg}})
            self.items += 1
        self.batches[bid] = {"id": bid, "created": time.time(), "results": results}
        self.created += 1
        return self._view(self.batches[bid])

    def _view(self, b: dict[str, Any]) -> dict[str, Any]:
        ended = time.time() - b["created"] >= self.delay_s
        counts = {k: 0 for k in ("processing", "succeeded", "errored", "canceled", "expired")}
        for r in b["results"]:
            counts[r["result"]["type"] if ended else "processing"] += 1
        return {
            "id": b["id"],
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": _iso(b["created"]),
            "expires_at": _iso(b["created"] + 86400),
            "ended_at": _iso(b["created"] + self.delay_s) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"/v1/messages/batches/{b['id']}/results" if ended else None,
        }
