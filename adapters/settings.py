"""Checks that adapters' ``check_config`` compose: each raises ValueError saying which setting is wrong and why.

The API turns that ValueError into a 422 naming the field ``engine`` and the
CLI into one line on stderr, so messages name the setting and what it should
be. They never quote a credential's value.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit


def require_text(config: dict, key: str, provider: str, meaning: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the {provider} engine needs {key} ({meaning})")
    return value


def require_url(config: dict, key: str, provider: str, example: str) -> str:
    """An http(s) URL without user:password@ or a query string: credentials belong in headers."""
    value = require_text(config, key, provider, f"an http:// or https:// URL such as {example}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} of the {provider} engine must be an http:// or https:// URL such as {example}")
    if parts.username or parts.password:
        raise ValueError(f"{key} of the {provider} engine must not carry credentials; set apiKey instead")
    if parts.query or parts.fragment:
        raise ValueError(f"{key} of the {provider} engine must not have a query string or fragment")
    return value.strip()


def optional_number(config: dict, key: str, provider: str, *, minimum: float, maximum: float = math.inf,
                    integer: bool = False) -> Any:
    value = config.get(key)
    if value is None:
        return None
    kind = "a whole number" if integer else "a number"
    is_number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not is_number or not math.isfinite(value) or not minimum <= value <= maximum:
        upper = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise ValueError(f"{key} of the {provider} engine must be {kind} of at least {minimum:g}{upper}")
    return value
