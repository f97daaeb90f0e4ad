"""Azure Functions entry points, v2 Python programming model (the function names are the contract
infra/azure and host.json refer to).

`api` (HTTP: the same routes, keys and responses as the local server; enqueues through a Service
Bus output binding), `worker` (Service Bus queue trigger: returns to complete; raises to abandon, so
Service Bus redelivers up to maxDeliveryCount and then dead-letters), `dead_letter` (the queue's
`$DeadLetterQueue`: marks jobs `dead_lettered`), `reconcile` (timer, every 5 minutes).
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from adapters.azure.app import get_api_app, get_app
from core.entrypoints.http import ApiRequest, api_for, respond

QUEUE = "%ALTO_QUEUE_NAME%"
CONNECTION = "ServiceBusConnection"
DEADLINE_MARGIN_S = 30.0  # finish (or hand back) this long before the function's timeout


def _deadline_s() -> float:
    """Seconds a worker invocation may take: the function timeout infra/azure sets (and host.json's
    functionTimeout, which the same parameter overrides), less the margin."""
    return float(os.environ.get("ALTO_FUNCTION_TIMEOUT_S", "600")) - DEADLINE_MARGIN_S


app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)  # our own API keys authenticate


@app.function_name(name="api")
@app.route(route="{*path}", methods=["GET", "POST", "DELETE"])
@app.service_bus_queue_output(arg_name="out", connection=CONNECTION, queue_name=QUEUE)
def api(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    alto = get_api_app()
    headers = {k.lower(): v for k, v in req.headers.items()}
    path = urlsplit(req.url).path or "/"
    own = os.environ.get("WEBSITE_HOSTNAME")  # the function app's own host name, set by the platform
    base = f"https://{own}" if own else ""  # never the client's Host header
    token = alto.queue.collect()  # type: ignore[attr-defined]
    try:
        resp = respond(
            api_for(alto),
            ApiRequest(
                method=req.method,
                path=path,
                headers=headers,
                body=req.get_body() or b"",
                base_url=base,
                query=dict(req.params),
            ),
        )
    finally:
        messages = alto.queue.collected(token)  # type: ignore[attr-defined]
    if messages:
        out.set(messages[0] if len(messages) == 1 else messages)
    # buffered (streaming needs the azurefunctions-extensions-http-fastapi worker extension): SSE answers
    # with the events ready now, and EventSource reconnects with Last-Event-ID
    return func.HttpResponse(resp.payload(), status_code=resp.status, mimetype=resp.media_type, headers=resp.headers)


def _delivery(msg: func.ServiceBusMessage) -> Any:
    return get_app().queue.delivery(  # type: ignore[attr-defined]
        msg.message_id or "", msg.get_body(), int(msg.delivery_count or 1), dict(msg.application_properties or {})
    )


@app.function_name(name="worker")
@app.service_bus_queue_trigger(arg_name="msg", connection=CONNECTION, queue_name=QUEUE)
async def worker(msg: func.ServiceBusMessage) -> None:
    # async: the host runs it on its event loop, where the provider's async client lives
    from core.entrypoints.consumer import run_delivery

    alto = get_app()
    await run_delivery(
        alto.service,
        alto.queue,
        _delivery(msg),
        deadline=time.time() + _deadline_s(),
        retry_delay_s=alto.settings.governance.backoff_base_s,
    )


@app.function_name(name="dead_letter")
@app.service_bus_queue_trigger(arg_name="msg", connection=CONNECTION, queue_name=QUEUE + "/$DeadLetterQueue")
def dead_letter(msg: func.ServiceBusMessage) -> None:
    get_app().service.dead_letter(_delivery(msg))  # a store outage raises: the message stays in the DLQ for another try


@app.function_name(name="reconcile")
@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
async def reconcile(timer: func.TimerRequest) -> None:
    # async: the batch tick calls the provider, whose client lives on the host's loop with the worker's jobs
    import asyncio

    from core.entrypoints.consumer import ascheduled

    alto = get_app()
    await ascheduled(alto.service)
    now = time.time()  # Table Storage keeps rows for ever: what has expired goes here, a batch a run
    for store in (alto.store, alto.state):
        await asyncio.to_thread(store.purge_expired, now)  # type: ignore[union-attr]  # Table Storage's own: no TTL
