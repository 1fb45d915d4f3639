"""Ports and HTTP servers for tests."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import httpx
from werkzeug.serving import make_server


# Ports handed out come from below the kernel's ephemeral range (32768-60999 here), so that no
# outgoing connection can take one between the probe and the server binding it; and each pytest-xdist
# worker draws from a band of its own, so that two workers never pick the same port at once.
PORTS_FROM, PORTS_TO = 10000, 32000
_handed_out: set[int] = set()


def _port_band() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count <= 1:
        return range(PORTS_FROM, PORTS_TO)
    width = (PORTS_TO - PORTS_FROM) // count
    start = PORTS_FROM + int(worker[2:]) % count * width
    return range(start, start + width)


def free_port() -> int:
    """A port nothing listens on, not handed out before in this process."""
    band = _port_band()
    for _ in range(200):
        port = random.choice(band)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another service of the machine listens there
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {band}")


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
