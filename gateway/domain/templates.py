"""``{{name}}`` template variables (SPEC section 4)."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Mapping

log = logging.getLogger("gateway.templates")

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_reported: set[str] = set()
_reported_lock = threading.Lock()


def merge_variables(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Earlier layers win: session overrides, then assistant defaults, then built-ins.

    A null value means "not set here", so the next layer's value shows through
    (a session override of null must not blank the assistant's default).
    """
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged.update({name: value for name, value in (layer or {}).items() if value is not None})
    return merged


def render(template: str | None, variables: Mapping[str, Any]) -> str | None:
    """Replace each known ``{{name}}``; an unknown one stays as written and is logged once."""
    if template is None or "{{" not in template:
        return template

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name in variables and variables[name] is not None:
            return str(variables[name])
        _report_unknown(name)
        return match.group(0)

    return _VARIABLE.sub(substitute, template)


def _report_unknown(name: str) -> None:
    with _reported_lock:
        if name in _reported:
            return
        _reported.add(name)
    log.warning("event=template.unknown_variable variable=%s", name)
