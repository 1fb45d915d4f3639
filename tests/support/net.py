"""Ports and HTTP servers for tests."""

from __future__ import annotations

import socket
import threading
import time

import httpx
from werkzeug.serving import make_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError as error:
            last = error
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last}")


class LiveServer:
    """A WSGI app served on a real port in a thread of the test process."""

    def __init__(self, app, port: int | None = None):
        self.server = make_server("127.0.0.1", port or 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> "LiveServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
