"""The echo engine: replies with the text it got. For tests and smoke checks."""

from __future__ import annotations

from adapters.base import EngineContext, Reply, UserTurn, text_with_media_note


class EchoEngine:
    provider = "echo"

    def __init__(self, config: dict | None = None):
        self.config = config or {}

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        return Reply(texts=[text_with_media_note(turn)])
