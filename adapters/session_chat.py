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
* Both take the same settings (``baseUrl``, ``apiKey``, ``assistantId``),
  checked and kept by ``SessionChatEngine``; they differ in how the key is sent.
"""

from __future__ import annotations

from typing import Any

from adapters.base import EngineContext, PermanentEngineError
from adapters.http import join_url, malformed, post_json
from adapters.settings import require_text, require_url

# The gateway's own template built-ins (SPEC section 4), not sent as remote variables.
GATEWAY_BUILTIN_VARIABLES = frozenset({"customer.number", "customer.name", "phoneNumber.number", "now"})


class SessionChatEngine:
    """The settings and POSTs of a session-based chat engine; subclasses speak their protocol in ``reply``.

    Subclasses set the texts that make the settings' error messages name their
    provider, and ``auth_headers``, since each API takes the key its own way.
    """

    provider: str
    remote = True  # create_engine passes the turn timeout
    example_url: str  # shown in the baseUrl error message
    api_key_meaning: str  # shown when apiKey is missing
    assistant_id_meaning: str  # shown when assistantId is missing

    @classmethod
    def check_config(cls, config: dict) -> None:
        require_url(config, "baseUrl", cls.provider, cls.example_url)
        require_text(config, "apiKey", cls.provider, cls.api_key_meaning)
        require_text(config, "assistantId", cls.provider, cls.assistant_id_meaning)

    def __init__(self, config: dict, timeout: float = 20.0):
        try:
            self.check_config(config)
        except ValueError as error:
            # Wrong settings do not mend themselves: fail the turn at once instead of retrying it.
            raise PermanentEngineError(str(error)) from None
        self.base_url = config["baseUrl"].strip()
        self.assistant_id = config["assistantId"]
        self.headers = self.auth_headers(config["apiKey"])
        self.timeout = timeout

    @staticmethod
    def auth_headers(api_key: str) -> dict:
        raise NotImplementedError("each session chat API sends its key its own way")

    def _post(self, path: str, payload: dict, deadline: float):
        return post_json(self.provider, join_url(self.base_url, path), payload, timeout=self.timeout,
                         headers=self.headers, deadline=deadline)


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
