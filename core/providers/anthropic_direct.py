"""The Messages API's plain (non-streaming) call, posted on the SDK client's own HTTP client and headers.

The SDK's request layer (options models, URL merging, header building, retry bookkeeping) and its typed
reply were more than half of a call's client CPU (0.61 ms a call this way against 1.33 ms through
`messages.create` on the same client, in `benchmarks/throughput.py`); the wire (the transport) the rest.
This sends the same JSON body with the headers the SDK client would send (its
`default_headers`: version, auth, user agent, platform) through the very HTTP client object the SDK uses,
so pool, transport and timeouts are the SDK's. Only a client whose headers are all static qualifies:
one with a token provider or custom auth (`custom_auth`) computes them per request and keeps the SDK path.
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import ProviderError
from core.providers.base import looks_like_context_overflow

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode  # as httpx's json=


class DirectMessages:
    """`POST {base_url}/v1/messages` on `http` (an httpx2 AsyncClient), answering the raw response."""

    def __init__(self, client: Any, http: Any) -> None:
        self._http = http
        self._url = str(client.base_url).rstrip("/") + "/v1/messages"
        self._headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}

    @classmethod
    def usable(cls, client: Any) -> bool:
        """Whether every header a call needs is known now: static auth, no per-request auth flow."""
        headers = {k.lower() for k, v in client.default_headers.items() if isinstance(v, str) and v}
        return client.custom_auth is None and bool(headers & {"x-api-key", "authorization"})

    async def create(self, body: dict[str, Any], timeout_s: float) -> Any:
        """The 2xx response; a non-2xx one as `ProviderError`. Transport failures raise httpx2's own exceptions,
        which `AnthropicProvider._error` maps with the SDK's."""
        request = self._http.build_request(
            "POST", self._url, content=_ENCODE(body).encode(), headers=self._headers, timeout=timeout_s
        )
        response = await self._http.send(request)
        if response.status_code >= 300:
            body_text = response.text[:4000]
            raise http_error(response.status_code, response.headers, body_text, _message(body_text))
        return response


def http_error(status: int, headers: Any, body: str | None, message: str) -> ProviderError:
    """A non-2xx reply as either path reports it: status, headers, body, the API's message."""
    return ProviderError(
        f"anthropic: HTTP {status}: {message}",
        status_code=status,
        headers=dict(headers),
        body=body,
        context_overflow=looks_like_context_overflow(status, body),
    )


def _message(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (KeyError, TypeError, ValueError):
        return body[:200] or "(no body)"
