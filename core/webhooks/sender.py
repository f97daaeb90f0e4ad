"""One webhook POST, to the address the policy checked, with no redirects followed, within one deadline.

The connection is opened to the resolved, checked IP address; TLS still verifies the certificate for
the URL's host name (SNI and hostname check), and the Host header names it. `timeout_s` bounds the whole
delivery (connecting, sending, the response's headers and body): a socket timeout alone bounds each read,
so a receiver that drips a byte at a time could hold a delivery for ever; a timer shuts the socket down at
the deadline instead. Blocking: call it in a thread.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import NamedTuple

from core.errors import CallbackRefused
from core.webhooks.targets import Policy

MAX_READ = 64 * 1024


class Sent(NamedTuple):
    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, ip: str, port: int, *, server_hostname: str, timeout: float) -> None:
        super().__init__(ip, port, timeout=timeout, context=ssl.create_default_context())
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)  # type: ignore[attr-defined]


def post(url: str, body: bytes, headers: dict[str, str], *, policy: Policy, timeout_s: float) -> Sent:
    started = time.monotonic()
    try:
        parts = policy.check_url(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = str(policy.resolve(host, port))
    except CallbackRefused as e:
        return Sent(None, f"refused: {e}")
    conn: http.client.HTTPConnection = (
        _PinnedHTTPS(ip, port, server_hostname=host, timeout=timeout_s)
        if parts.scheme == "https"
        else http.client.HTTPConnection(ip, port, timeout=timeout_s)
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    expired = threading.Event()

    def cut() -> None:  # the deadline: whatever is blocked on the socket returns with an error
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(max(0.0, timeout_s - (time.monotonic() - started)), cut)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", target, body=body, headers={**headers, "host": parts.netloc})
        resp = conn.getresponse()
        resp.read(MAX_READ)
        if expired.is_set():
            raise TimeoutError
        if 300 <= resp.status < 400:
            return Sent(
                resp.status,
                f"answered {resp.status} (a redirect): redirects are not followed; "
                "point callback_url at the final address",
            )
        return Sent(resp.status, None if 200 <= resp.status < 300 else f"answered {resp.status}")
    except (OSError, http.client.HTTPException) as e:
        if expired.is_set():
            return Sent(None, f"no complete answer within {timeout_s:g} s")
        return Sent(None, f"{type(e).__name__}: {e}"[:500])
    finally:
        timer.cancel()
        conn.close()
