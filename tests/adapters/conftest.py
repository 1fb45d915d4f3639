"""Fixtures for the adapter tests: no connection may leave 127.0.0.1."""

from __future__ import annotations

from tests.adapters.network_guard import network_guard  # noqa: F401  (autouse)
