"""Chat engine adapters, one module per engine, registered here by provider name."""

from __future__ import annotations

from typing import Any

from adapters.base import ChatEngine, PermanentEngineError

PROVIDERS = ("faq", "echo", "callhq", "vapi", "openai", "webhook")


def _engine_classes() -> dict[str, type]:
    # Imported lazily so that loading one adapter never pulls in the others' dependencies.
    from adapters.echo import EchoEngine
    from adapters.faq import FaqEngine
    from adapters.webhook import WebhookEngine

    return {"echo": EchoEngine, "faq": FaqEngine, "webhook": WebhookEngine}


def available_providers() -> list[str]:
    return sorted(_engine_classes())


def create_engine(config: dict[str, Any], *, timeout: float = 20.0) -> ChatEngine:
    """Build the engine an assistant's ``engine`` object names; ``timeout`` bounds each remote call."""
    provider = (config or {}).get("provider")
    engine_class = _engine_classes().get(provider)
    if engine_class is None:
        raise PermanentEngineError(f"engine provider {provider!r} is not available")
    if getattr(engine_class, "remote", False):
        return engine_class(config, timeout=timeout)
    return engine_class(config)
