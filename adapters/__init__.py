"""Chat engine adapters, one module per engine, registered here by provider name."""

from __future__ import annotations

from typing import Any

from adapters.base import ChatEngine, PermanentEngineError

PROVIDERS = ("faq", "echo", "callhq", "vapi", "openai", "webhook")


def _engine_classes() -> dict[str, type]:
    # Imported lazily so that loading one adapter never pulls in the others' dependencies.
    from adapters.callhq import CallHQEngine
    from adapters.echo import EchoEngine
    from adapters.faq import FaqEngine
    from adapters.openai_chat import OpenAIChatEngine
    from adapters.vapi import VapiEngine
    from adapters.webhook import WebhookEngine

    return {
        "echo": EchoEngine,
        "faq": FaqEngine,
        "callhq": CallHQEngine,
        "vapi": VapiEngine,
        "openai": OpenAIChatEngine,
        "webhook": WebhookEngine,
    }


def available_providers() -> list[str]:
    return sorted(_engine_classes())


def check_engine_config(config: dict[str, Any]) -> None:
    """Raise ValueError saying what is missing or wrong in an engine's settings (a 422 at the API).

    Each engine class may define ``check_config(config)``; engines without one take any settings.
    """
    engine_class = _engine_classes().get((config or {}).get("provider"))
    check = getattr(engine_class, "check_config", None)
    if check is not None:
        check(config)


def create_engine(config: dict[str, Any], *, timeout: float = 20.0) -> ChatEngine:
    """Build the engine an assistant's ``engine`` object names; ``timeout`` bounds each remote call."""
    provider = (config or {}).get("provider")
    engine_class = _engine_classes().get(provider)
    if engine_class is None:
        raise PermanentEngineError(f"engine provider {provider!r} is not available")
    if getattr(engine_class, "remote", False):
        return engine_class(config, timeout=timeout)
    return engine_class(config)
