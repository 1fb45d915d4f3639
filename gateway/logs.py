"""Structured logs: one line per event, key=value, phone numbers masked by the callers.

The gateway's loggers ("gateway.*") and the engine adapters' ("adapters.*") write
to stderr at GATEWAY_LOG_LEVEL. Libraries' own loggers (twilio, httpx, rq) are
left alone: twilio's client logs whole request bodies, phone numbers included.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
OWN_LOGGERS = ("gateway", "adapters")
_configured = False


def configure_logging(level: str = "INFO") -> None:
    global _configured
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    _configured = True
