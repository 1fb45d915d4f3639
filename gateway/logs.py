"""Structured logs: one line per event, key=value, phone numbers masked by the callers."""

from __future__ import annotations

import logging
import sys

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
_configured = False


def configure_logging(level: str = "INFO") -> None:
    global _configured
    root = logging.getLogger("gateway")
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root.addHandler(handler)
    root.propagate = False
    _configured = True
