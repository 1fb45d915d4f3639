"""Text as both databases can hold it.

PostgreSQL's text and jsonb cannot hold NUL, and neither database takes a lone
UTF-16 surrogate (``"\\ud800"``: Python allows one in a str, a JSON parser makes
one from an escape, UTF-8 cannot encode it). Text that arrives from outside and
must be stored whatever it holds (a webhook's body, an engine's reply, the state
an engine hands back) goes through here: NUL is dropped, a lone surrogate becomes
U+FFFD, the replacement character. Refusing it instead would leave an engine's
reply unstorable, and the turn stuck, every time the sweep retried it.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    if _UNSTORABLE.search(text) is None:  # the usual case: no copy made
        return text
    return _UNSTORABLE.sub(lambda found: "" if found.group() == "\x00" else "\ufffd", text)


def storable_json(value: Any) -> Any:
    """``value`` with every string in it (keys included) made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_json(key): storable_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_json(item) for item in value]
    return value
