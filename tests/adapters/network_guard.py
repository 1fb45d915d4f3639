"""Refuses, and reports, any connection from the test process to an address other than the loopback.

An adapter that reached the internet in a test would turn the refusal into a
transient engine error and might still pass, so every refused attempt is also
recorded and the fixture using the guard fails the test afterwards.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

LOOPBACK_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    def __init__(self):
        self.refused: list[str] = []

    def install(self, monkeypatch) -> "NetworkGuard":
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo
        guard = self

        def connect(sock, address):
            guard.check_address(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock, address):
            guard.check_address(sock, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if not is_loopback(host):
                guard.refuse(f"name lookup of {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return self

    def check_address(self, sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            self.refuse(f"connection to {address[0]}:{address[1]}")

    def refuse(self, what: str):
        self.refused.append(what)
        raise ConnectionRefusedError(f"test network guard: {what} leaves 127.0.0.1")

    def forgive(self) -> list[str]:
        """Clear the record (for the test that shows the guard works); returns what was refused."""
        refused, self.refused = self.refused, []
        return refused


@pytest.fixture(autouse=True)
def network_guard(monkeypatch):
    """Autouse wherever it is imported: fails the test if anything tried to leave 127.0.0.1."""
    guard = NetworkGuard().install(monkeypatch)
    yield guard
    if guard.refused:
        pytest.fail("connections leaving 127.0.0.1: " + "; ".join(guard.refused))
