"""Cloud Functions (gen2) entry points for functions-framework; the names are the contract infra/gcp
deploys (`--entry-point`).

`api` (HTTP): the same routes, keys and responses as the local server. `worker` (CloudEvent,
`google.cloud.pubsub.topic.v1.messagePublished`): returns normally to ack; raises only for what must
be redelivered (the trigger retries on failure). `dead_letter` (CloudEvent on the dead-letter
topic): marks jobs `dead_lettered`. `reconcile` (HTTP, from Cloud Scheduler). Binary and structured
CloudEvents and raw Pub/Sub push bodies all arrive here as CloudEvents (functions-framework converts).
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import functions_framework

from adapters.gcp.app import get_api_app, get_app
from core.entrypoints.http import ApiRequest, api_for, respond

DEADLINE_MARGIN_S = 10.0
MAX_EARLY_SLEEP_S = 60.0  # a deferred message that arrives early waits this long at most, then hops
MIN_WORK_S = 20.0  # time to leave for the job itself after such a wait


def _timeout_s() -> float:
    return float(os.environ.get("ALTO_FUNCTION_TIMEOUT_S", "540"))  # infra/gcp sets the function's timeout


@functions_framework.http
def api(request: Any) -> Any:
    headers = {k.lower(): v for k, v in request.headers.items()}
    # no base URL from the request (its Host header is the client's to choose): status URLs are relative
    # unless server.public_url names the function's URL
    req = ApiRequest(
        method=request.method,
        path=request.path,
        headers=headers,
        body=request.get_data(cache=False),
        base_url="",
        query=request.args.to_dict(),
        streaming=True,
    )
    resp = respond(api_for(get_api_app()), req)
    if resp.frames is not None and resp.media_type == "text/event-stream":  # gen2 (Cloud Run) streams responses
        import flask

        return flask.Response(resp.chunks(), status=resp.status, mimetype=resp.media_type, headers=resp.headers)
    return resp.payload(), resp.status, {"content-type": resp.media_type, **resp.headers}


def _delivery(cloud_event: Any) -> Any:
    """The Pub/Sub message inside a messagePublished CloudEvent, as a core Delivery."""
    data = cloud_event.data or {}
    msg = data.get("message") or {}
    attempt = data.get("deliveryAttempt") or msg.get("deliveryAttempt") or 1
    raw = base64.b64decode(msg.get("data") or b"")
    return get_app().queue.delivery(  # type: ignore[attr-defined]
        str(msg.get("messageId") or cloud_event["id"]), raw, dict(msg.get("attributes") or {}), int(attempt)
    )


@functions_framework.cloud_event
def worker(cloud_event: Any) -> None:
    from core.entrypoints.consumer import run_batch

    app = get_app()
    start = time.time()
    deadline = start + _timeout_s() - DEADLINE_MARGIN_S
    d = _delivery(cloud_event)
    not_before = float(d.attributes.get("not_before") or 0)
    if not_before > start:  # a deferred copy, early: wait here (no attempt spent), or pass it on
        wait, room = not_before - start, deadline - start - MIN_WORK_S
        if wait <= min(MAX_EARLY_SLEEP_S, room):
            time.sleep(wait)
        else:  # too early for this invocation: hop, at most once a minute per message
            time.sleep(max(0.0, min(MAX_EARLY_SLEEP_S, room)))
            app.queue.send(d.body, not_before=not_before)  # type: ignore[call-arg]
            return
    # a retry raises Redeliver out of here: Pub/Sub redelivers after the subscription's backoff
    run_batch(app.service, app.queue, [d], deadline=deadline, retry_delay_s=app.settings.governance.backoff_base_s)


@functions_framework.cloud_event
def dead_letter(cloud_event: Any) -> None:
    get_app().service.dead_letter(_delivery(cloud_event))  # a store outage raises: the subscription retries


@functions_framework.http
def reconcile(request: Any) -> Any:
    body = request.get_json(silent=True) or {}
    older = body.get("older_than_s")
    from core.entrypoints.consumer import scheduled

    counts = scheduled(get_app().service, older_than_s=float(older) if older is not None else None)
    return json.dumps(counts), 200, {"content-type": "application/json"}
