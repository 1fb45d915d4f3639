"""What the two session-based chat APIs (CallHQ-style and Vapi-style) share.

* The remote conversation lives on the engine's side; the gateway keeps only
  its handle in ``EngineContext.state``. The state records which provider,
  base URL and remote assistant it belongs to, so an operator who points an
  assistant elsewhere mid-conversation starts a fresh remote session instead
  of sending a stale id to the wrong server.
* Replies come as ``output: [{"role": "assistant", "content": "..."}, ...]``.
* ``assistantOverrides.variableValues`` carries the assistant's
  ``variableValues`` overlaid by the session's (SPEC section 7). The gateway's
  built-ins (customer number and name, business number, time) are left out:
  they are the gateway's template helpers, not the operator's settings, and
  the customer's number stays on the gateway unless a setting says otherwise.
"""

from __future__ import annotations

from typing import Any

from adapters.base import EngineContext
from adapters.http import malformed

# The gateway's own template built-ins (SPEC section 4), not sent as remote variables.
GATEWAY_BUILTIN_VARIABLES = frozenset({"customer.number", "customer.name", "phoneNumber.number", "now"})


def remote_state(context: EngineContext, provider: str, **belongs_to: Any) -> dict:
    """This adapter's state for the session, emptied first when it was made for another engine setup."""
    state = context.state
    expected = {"provider": provider, **belongs_to}
    if any(state.get(key) != value for key, value in expected.items()):
        state.clear()
        state.update(expected)
    return state


def operator_variables(context: EngineContext) -> dict:
    return {name: value for name, value in context.variables.items()
            if name not in GATEWAY_BUILTIN_VARIABLES and value is not None}


def output_texts(provider: str, output: Any) -> list[str]:
    """The assistant texts of ``output[*].content``; other roles (tool calls and the like) are skipped."""
    if not isinstance(output, list):
        raise malformed(provider, "output is not a list")
    texts = []
    for item in output:
        if not isinstance(item, dict):
            raise malformed(provider, "an output item is not an object")
        if item.get("role", "assistant") != "assistant":
            continue
        content = item.get("content")
        if content is not None and not isinstance(content, str):
            raise malformed(provider, "an output content is not text")
        if content and content.strip():
            texts.append(content)
    return texts


def id_of(provider: str, thing: Any, what: str) -> str:
    """The ``id`` of a created remote object (session, chat)."""
    value = thing.get("id") if isinstance(thing, dict) else None
    if not isinstance(value, str) or not value:
        raise malformed(provider, f"the {what} has no id")
    return value
