"""Lambda entry points (the names are the contract serverless.yml points at).

`api`: HTTP API (payload v2) → the same `core.entrypoints.http` the local server runs. `worker`: SQS batches,
records processed concurrently, `batchItemFailures` naming exactly the records to redeliver.
`dead_letter`: the DLQ's records mark their jobs `dead_lettered`. `reconcile`: scheduled sweep for
jobs whose message was lost. Each one translates; the core decides.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from adapters.aws.app import get_api_app, get_app
from core.entrypoints.http import ApiRequest, api_for, error, respond

DEADLINE_MARGIN_S = 5.0  # leave time to report the batch before Lambda's timeout


def _deadline(context: Any) -> float:
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
    return time.time() + max(1.0, remaining - DEADLINE_MARGIN_S)


def api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "rawPath" not in event or event.get("version") not in (None, "2.0"):
        resp = error(
            400,
            "unsupported_event",
            "this function takes HTTP API events in payload format 2.0, and got "
            f"payload format {event.get('version') or '1.0'} (a REST API or an ALB): route it from an HTTP "
            "API (serverless.yml `httpApi` events) or set the integration's payloadFormatVersion to 2.0",
        )
    else:
        resp = respond(api_for(get_api_app()), _request(event))
    # API Gateway buffers a response: SSE answers with the events ready now, and EventSource reconnects
    return {
        "statusCode": resp.status,
        "headers": {"content-type": resp.media_type, **resp.headers},
        "body": resp.payload().decode(),
        "isBase64Encoded": False,
    }


def _request(event: dict[str, Any]) -> ApiRequest:
    ctx = event.get("requestContext") or {}
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    path, stage = event.get("rawPath") or "/", ctx.get("stage")
    if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        path = path[len(stage) + 1 :] or "/"  # a named stage is part of rawPath, not of our routes
    domain = ctx.get("domainName")  # API Gateway's own name for itself, never the client's Host header
    return ApiRequest(
        method=(ctx.get("http") or {}).get("method", "GET"),
        path=path,
        headers=headers,
        body=raw,
        base_url=f"https://{domain}" if domain else "",
        query=dict(parse_qsl(event.get("rawQueryString") or "", keep_blank_values=True)),
    )


def _decoded(app: Any, records: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """(deliveries, ids of records whose claim-checked body could not be fetched now).

    Each record is read on its own: one failing fetch must not fail its nine siblings. (A blob that is gone
    comes back as its pointer, which the service can't parse: retried, then dead-lettered for review.)"""
    from core.logs import log_event

    deliveries, failed = [], []
    for r in records:
        try:
            deliveries.append(
                app.queue.delivery(r["messageId"], r["body"], r["receiptHandle"], r.get("attributes", {}))
            )
        except Exception as e:  # S3 unavailable or denied: this record alone is retried
            log_event("queue.claim_check_failed", logging.ERROR, message_id=r["messageId"], error=repr(e)[:300])
            failed.append(r["messageId"])
    return deliveries, failed


def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from adapters.aws.sqs import LambdaBatch
    from core.entrypoints.consumer import run_batch

    app = get_app()
    batch = LambdaBatch(app.queue)  # type: ignore[arg-type]
    deliveries, failed = _decoded(app, event.get("Records", []))
    run_batch(
        app.service,
        batch,
        deliveries,
        deadline=_deadline(context),
        retry_delay_s=app.settings.governance.backoff_base_s,
    )
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failed + batch.failures]}


def dead_letter(event: dict[str, Any], context: Any) -> dict[str, Any]:
    app = get_app()
    deliveries, failures = _decoded(app, event.get("Records", []))
    for d in deliveries:
        try:
            app.service.dead_letter(d)
        except Exception:  # a store outage: keep the record in the DLQ and try again
            failures.append(d.message_id)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}


def reconcile(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Scheduled (EventBridge); invoke by hand with {"older_than_s": N} to sweep sooner."""
    older = event.get("older_than_s") if isinstance(event, dict) else None
    from core.entrypoints.consumer import scheduled

    return scheduled(get_app().service, older_than_s=float(older) if older is not None else None)
