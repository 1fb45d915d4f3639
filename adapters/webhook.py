"""The webhook engine: the operator's own HTTP endpoint answers each turn.

Engine settings: ``url``, an http(s) URL without credentials or query string
(the call is authenticated by its signature, so the URL needs no token).

POST {url} with ``{session, message, history}`` (history: the session's
earlier messages, without the new one), signed like events with the
assistant's serverSecret in ``X-Gateway-Signature``. ``session`` carries the
template variables and the session's ``assistantOverrides`` (model,
temperature, maxTokens, variableValues) for receivers that use them; media
travel as URLs in ``message.media`` and ``history[*].media``. The answer is
``{"reply": "..."}`` or ``{"replies": ["...", ...]}``, optionally with a
numeric ``cost`` of at least zero.
"""

from __future__ import annotations

from adapters.base import EngineContext, Media, PermanentEngineError, Reply, UserTurn
from adapters.http import malformed, post_json, reported_cost
from adapters.settings import require_url

EXPECTED = 'expected {"reply": "..."} or {"replies": [...]}'


class WebhookEngine:
    provider = "webhook"
    remote = True

    @staticmethod
    def check_config(config: dict) -> None:
        require_url(config, "url", "webhook", "https://bot.example.com/turn")

    def __init__(self, config: dict, timeout: float = 20.0):
        try:
            self.check_config(config)
        except ValueError as error:
            raise PermanentEngineError(str(error)) from None
        self.url = config["url"].strip()
        self.timeout = timeout

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        payload = {
            "session": {
                "id": context.session_id,
                "name": context.session_name,
                "assistantId": context.assistant_id,
                "customer": {"number": context.customer_number},
                "variables": context.variables,
                "assistantOverrides": context.overrides,
            },
            "message": {
                "role": "user",
                "content": turn.text,
                "media": _media(turn.media),
                "ids": list(turn.message_ids),
            },
            "history": [
                {"role": item.role, "content": item.content, "media": _media(item.media)} for item in context.history
            ],
        }
        answer = post_json(self.provider, self.url, payload, timeout=self.timeout, secret=context.secret)
        if not isinstance(answer, dict):
            raise malformed(self.provider, EXPECTED)
        return Reply(texts=_texts(self.provider, answer), cost=reported_cost(answer.get("cost")) or 0.0)


def _media(media: tuple[Media, ...]) -> list[dict]:
    return [{"url": m.url, "contentType": m.content_type} for m in media]


def _texts(provider: str, answer: dict) -> list[str]:
    if isinstance(answer.get("reply"), str):
        return [answer["reply"]]
    replies = answer.get("replies")
    if isinstance(replies, list) and all(isinstance(r, str) for r in replies):
        return [r for r in replies if r.strip()]
    raise malformed(provider, EXPECTED)
