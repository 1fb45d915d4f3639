"""A small HTTP/1.1 load client: N concurrent connections on one asyncio loop, requests prepared in advance.

Each connection sends a request, reads the whole response, and keeps the
connection for the next request unless the server closes it (gunicorn's sync
workers, the Procfile's web process, close every connection after one
response, so there every request opens a new connection, for the bare app and
the gateway alike). Requests are raw bytes built before the clock starts, and
responses are parsed only as far as the status line, Content-Length and
Connection, so the client spends a few tens of microseconds per request; its
own CPU time is measured and reported, which says how far it is from being
the bottleneck.

Two modes:
- closed loop (``rate=None``): each connection sends its next request as soon
  as the last one is answered, until ``duration`` seconds have passed: the
  peak rate.
- open loop (``rate=R``): request i is due at ``start + i / R``; latency is
  counted from that due time, so time spent waiting for a free connection
  counts too (no coordinated omission), and also reported from the moment
  the request was written.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field

from bench.common import percentile


@dataclass
class Result:
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, from the due time (open loop) or the write
    service: list[float] = field(default_factory=list)  # seconds, from the write of the request
    errors: list[str] = field(default_factory=list)
    bad_bodies: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0
    connections_opened: int = 0
    written_at: list[float] = field(default_factory=list)  # time.monotonic() of each request's write, by index
    statuses_by_index: dict[int, int] = field(default_factory=dict)
    answered_at: list[float] = field(default_factory=list)  # seconds since the start, parallel to latencies

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def p(self, q: float, which: str = "latencies") -> float:
        return percentile(getattr(self, which), q) * 1000

    def summary(self) -> str:
        return (
            f"{self.rate:8.0f} req/s  p50 {self.p(50):6.2f} ms  p99 {self.p(99):6.2f} ms  "
            f"({len(self.latencies)} requests in {self.elapsed:.1f} s, {self.ok} OK"
            + (f", {len(self.errors)} errors" if self.errors else "")
            + (f", statuses {self.statuses}" if set(self.statuses) - {200} else "")
            + (f", {self.bad_bodies} unexpected bodies" if self.bad_bodies else "")
            + f"; client CPU {self.client_us_per_request:.0f} us/request)"
        )

    def slowest_in_windows(self, q: float = 99, window: float = 0.1) -> tuple[int, int, int, int]:
        """How the requests at or above the q-th percentile latency fall in time: (how many, in how many
        windows of ``window`` seconds out of the run's, the most in one window, the run's windows).
        Slow requests spread evenly mean queueing throughout; a few crowded windows mean stalls."""
        if not self.latencies:
            return 0, 0, 0, 0
        threshold = percentile(self.latencies, q)
        windows: dict[int, int] = {}
        for latency, at in zip(self.latencies, self.answered_at):
            if latency >= threshold:
                windows[int(at / window)] = windows.get(int(at / window), 0) + 1
        return sum(windows.values()), len(windows), max(windows.values()), max(1, round(self.elapsed / window))

    @property
    def client_us_per_request(self) -> float:
        return self.client_cpu / max(1, len(self.latencies)) * 1e6


class _Connection(asyncio.Protocol):
    def __init__(self):
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._deliver()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed before the response ({exc})"))

    def _deliver(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17: stop if stop >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4: end + 4 + length])
        del self.buffer[: end + 4 + length]
        close = b"\r\nconnection: close" in head
        self.waiter.set_result((status, body, close))


async def _run(host: str, port: int, requests: list[bytes], connections: int, rate: float | None,
               duration: float | None, expect_body: bytes | None, result: Result) -> None:
    loop = asyncio.get_running_loop()
    next_index = 0
    total = len(requests)
    start = time.perf_counter()
    deadline = start + duration if duration else None
    result.written_at = [0.0] * total

    async def one_connection() -> None:
        nonlocal next_index
        protocol: _Connection | None = None
        while True:
            index = next_index
            if index >= total:
                break
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                break
            next_index += 1
            due = None
            if rate is not None:
                due = start + index / rate
                if due > now:
                    await asyncio.sleep(due - now)
            try:
                if protocol is None or protocol.closed:
                    _, protocol = await loop.create_connection(_Connection, host, port)
                    result.connections_opened += 1
                protocol.waiter = loop.create_future()
                written = time.perf_counter()
                result.written_at[index] = time.monotonic()
                protocol.transport.write(requests[index])
                status, body, close = await protocol.waiter
            except (OSError, ConnectionError) as error:
                result.errors.append(f"{type(error).__name__}: {error}")
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.close()
                protocol = None
                continue
            answered = time.perf_counter()
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if expect_body is not None and body != expect_body:
                result.bad_bodies += 1
            result.service.append(answered - written)
            result.latencies.append(answered - (due if due is not None else written))
            result.answered_at.append(answered - start)
            result.statuses_by_index[index] = status
            if close:
                protocol.transport.close()
                protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    result.sent = next_index
    result.elapsed = time.perf_counter() - start


def fire(port: int, requests: list[bytes], *, connections: int = 16, rate: float | None = None,
         duration: float | None = None, expect_body: bytes | None = None, host: str = "127.0.0.1") -> Result:
    """Send ``requests`` (in order) to host:port; stops after ``duration`` seconds or when they run out."""
    # The client (and the fake Twilio, which shares this process) must not stall on a full garbage
    # collection of everything the bench built before: leave that out of the collector's passes.
    gc.collect()
    gc.freeze()
    result = Result()
    cpu = time.process_time()
    asyncio.run(_run(host, port, requests, connections, rate, duration, expect_body, result))
    result.client_cpu = time.process_time() - cpu
    return result


def fire_together(targets: list[tuple[int, list[bytes]]], *, connections: int = 8, rate: float,
                  expect_body: bytes | None = None, host: str = "127.0.0.1") -> list[Result]:
    """Open-loop runs at ``rate`` each against several servers at once, from one loop: (port, requests) each.

    Side by side in time, whatever slows the machine down slows every target alike, which
    alternating runs cannot promise on a machine whose speed changes from minute to minute.
    The client's CPU is shared out by requests answered.
    """
    gc.collect()
    gc.freeze()
    results = [Result() for _ in targets]
    cpu = time.process_time()

    async def together() -> None:
        await asyncio.gather(*(_run(host, port, requests, connections, rate, None, expect_body, result)
                               for (port, requests), result in zip(targets, results)))

    asyncio.run(together())
    client_cpu = time.process_time() - cpu
    answered = sum(len(result.latencies) for result in results) or 1
    for result in results:
        result.client_cpu = client_cpu * len(result.latencies) / answered
    return results
