"""The webhook engine: the operator's own HTTP endpoint answers each turn.

POST {url} with ``{session, message, history}`` (history: the session's
earlier messages, without the new one), signed like events with the
assistant's serverSecret in ``X-Gateway-Signature``. The answer is
``{"reply": "..."}`` or ``{"replies": ["...", ...]}``, optionally with ``cost``.
"""

from __future__ import annotations

from adapters.base import EngineContext, PermanentEngineError, Reply, UserTurn
from adapters.http import post_json


class WebhookEngine:
    provider = "webhook"
    remote = True

    def __init__(self, config: dict, timeout: float = 20.0):
        self.url = config.get("url")
        if not self.url:
            raise PermanentEngineError("webhook engine has no url")
        self.timeout = timeout

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        payload = {
            "session": {
                "id": context.session_id,
                "name": context.session_name,
                "assistantId": context.assistant_id,
                "customer": {"number": context.customer_number},
                "variables": context.variables,
            },
            "message": {
                "role": "user",
                "content": turn.text,
                "media": [{"url": m.url, "contentType": m.content_type} for m in turn.media],
                "ids": list(turn.message_ids),
            },
            "history": [
                {"role": item.role, "content": item.content,
                 "media": [{"url": m.url, "contentType": m.content_type} for m in item.media]}
                for item in context.history
            ],
        }
        answer = post_json(self.provider, self.url, payload, timeout=self.timeout, secret=context.secret)
        return Reply(texts=_texts(answer), cost=_cost(answer))


def _texts(answer) -> list[str]:
    if isinstance(answer, dict):
        if isinstance(answer.get("reply"), str):
            return [answer["reply"]]
        replies = answer.get("replies")
        if isinstance(replies, list) and all(isinstance(r, str) for r in replies):
            return replies
    raise PermanentEngineError('webhook engine answer must be {"reply": "..."} or {"replies": [...]}')


def _cost(answer: dict) -> float:
    cost = answer.get("cost", 0)
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else 0.0
