"""Running the fakes: a free loopback port, an ASGI app served by uvicorn in a thread, or the fake
Messages API in its own process (so its CPU doesn't compete with the code under test)."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Run any ASGI app under uvicorn on a loopback port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="critical",
                lifespan="on",
                access_log=False,
                timeout_keep_alive=30,
                backlog=2048,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def spawn(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake in its own process (so its CPU doesn't compete with the code under test)."""
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.testing.fake_anthropic", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_stats", timeout=0.5).close()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"fake Anthropic server did not start on port {port}")
