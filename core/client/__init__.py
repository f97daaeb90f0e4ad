"""The Python client of the HTTP API: `Client` (blocking, the standard library's HTTP) and `AsyncClient` (the same
calls for asyncio), typed with the API's own pydantic models, plus `verify_webhook` for callback receivers.

    from core.client import Client
    alto = Client("https://api.example.com", api_key=os.environ["ALTO_API_KEY"])
    view = alto.wait(alto.submit(prompt="Which errors are never retried?").job_id)
"""

from core.client.aio import AsyncClient
from core.client.errors import ApiError, Unreachable, WebhookVerificationError
from core.client.events import StreamEvent
from core.client.sync import Client
from core.client.webhooks import verify_webhook

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "StreamEvent",
    "Unreachable",
    "WebhookVerificationError",
    "verify_webhook",
]
