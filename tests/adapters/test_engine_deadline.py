"""SPEC 6.6: each engine call has a timeout, and it bounds the whole call, however the engine spends it.

An engine that answers its headers late and then stalls mid-body must not
hold the turn for longer than the timeout: httpx's own timeouts apply per
phase and per read, so without a deadline over the whole exchange such an
answer could take up to twice the timeout (or more), past the worker's lease.
The server here is a real HTTP/1.1 server on 127.0.0.1 that does exactly that.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from adapters import create_engine
from adapters.base import EngineContext, TransientEngineError, UserTurn

TIMEOUT = 1.0
SLACK = 0.35  # scheduling noise on a busy machine; the defect overran by ~0.7 s


class StallingServer:
    """Answers each request's status line and headers after ``head_delay``, one body byte, then stalls."""

    def __init__(self, head_delay: float, stall: float):
        self.head_delay, self.stall = head_delay, stall
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._socket.close()

    def _serve(self) -> None:
        try:
            connection, _ = self._socket.accept()
        except OSError:
            return
        with connection:
            connection.recv(65536)
            if self._stop.wait(self.head_delay):
                return
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{")
            self._stop.wait(self.stall)


@pytest.mark.timing  # measures how long the call took: run in the serial lane, away from the parallel load
@pytest.mark.parametrize("config", [
    {"provider": "openai", "baseUrl": "{url}/v1", "apiKey": "sk-deadline-test-123456", "model": "m"},
    {"provider": "webhook", "url": "{url}/turn"},
], ids=["openai", "webhook"])
def test_a_stalled_answer_is_cut_off_at_the_timeout(config):
    with StallingServer(head_delay=TIMEOUT * 0.7, stall=TIMEOUT * 5) as server:
        engine = create_engine({k: v.replace("{url}", server.url) for k, v in config.items()}, timeout=TIMEOUT)
        started = time.monotonic()
        with pytest.raises(TransientEngineError) as raised:
            engine.reply(EngineContext("sess-1", "gw-assistant", config), UserTurn("hello"))
        elapsed = time.monotonic() - started
    assert "timed out" in raised.value.reason
    assert elapsed < TIMEOUT + SLACK, f"the call took {elapsed:.2f}s with a {TIMEOUT:g}s timeout"
