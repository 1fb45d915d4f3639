"""The openai engine: any OpenAI-compatible Chat Completions server (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM...).

Named ``openai_chat`` so that it never shadows the ``openai`` package.

Engine settings:

* ``baseUrl``: as the official client's ``base_url`` takes it, e.g.
  ``https://api.openai.com/v1``; calls go to ``{baseUrl}/chat/completions``;
* ``apiKey``: sent as ``Authorization: Bearer``; required, as the official
  client requires one (servers that check none accept any value);
* ``model``; optional ``temperature`` and ``maxTokens`` (sent as
  ``max_tokens``), each overridden per session by ``assistantOverrides``;
* ``maxHistoryChars`` (default 16000): the character budget for earlier
  messages;
* ``pricePerMillionInputTokens``, ``pricePerMillionOutputTokens``: optional
  prices used to compute a cost from ``usage`` (see below).

Messages sent: the system prompt (the gateway has already filled in its
``{{variables}}``), then the session's history, then the new turn. History is
trimmed to ``maxHistoryChars`` counted over the messages' text: the oldest
messages are dropped first, and never the system prompt or the new turn, so a
long system prompt or text is still sent whole. Earlier attachments appear in
history as a note, not as images, so one photo is not paid for on every turn.

Media of the new turn: ``image/*`` attachments become ``image_url`` content
parts (the model fetches the URL, so it must be reachable without the
gateway's Twilio credentials); other attachments become a note in the text.

Cost: OpenAI itself reports none. The turn's cost is, first found: a numeric
``cost`` at the top of the answer, ``usage.cost`` (OpenRouter and several
proxies report it there), or ``usage.prompt_tokens`` and
``usage.completion_tokens`` times the configured prices per million tokens.
Otherwise 0.
"""

from __future__ import annotations

from adapters.base import (
    EngineContext,
    HistoryItem,
    PermanentEngineError,
    Reply,
    UserTurn,
    media_note,
    text_with_media_note,
)
from adapters.http import join_url, malformed, post_json, reported_cost
from adapters.settings import optional_number, require_text, require_url

DEFAULT_MAX_HISTORY_CHARS = 16_000
PRICE_SETTINGS = {"prompt_tokens": "pricePerMillionInputTokens", "completion_tokens": "pricePerMillionOutputTokens"}


class OpenAIChatEngine:
    provider = "openai"
    remote = True

    @staticmethod
    def check_config(config: dict) -> None:
        require_url(config, "baseUrl", "openai", "https://api.openai.com/v1")
        require_text(config, "apiKey", "openai", "the API key, sent as a Bearer token")
        require_text(config, "model", "openai", "the model name, e.g. gpt-4o-mini")
        optional_number(config, "maxHistoryChars", "openai", minimum=0, integer=True)
        optional_number(config, "temperature", "openai", minimum=0, maximum=2)
        optional_number(config, "maxTokens", "openai", minimum=1, integer=True)
        for setting in PRICE_SETTINGS.values():
            optional_number(config, setting, "openai", minimum=0)

    def __init__(self, config: dict, timeout: float = 20.0):
        try:
            self.check_config(config)
        except ValueError as error:
            raise PermanentEngineError(str(error)) from None
        self.config = config
        self.url = join_url(config["baseUrl"].strip(), "chat/completions")
        self.headers = {"Authorization": f"Bearer {config['apiKey']}"}
        budget = config.get("maxHistoryChars")
        self.max_history_chars = DEFAULT_MAX_HISTORY_CHARS if budget is None else budget
        self.timeout = timeout

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        answer = post_json(self.provider, self.url, self.request_body(context, turn), timeout=self.timeout,
                           headers=self.headers)
        if not isinstance(answer, dict):
            raise malformed(self.provider, "expected a chat completion object")
        return Reply(texts=[_reply_text(self.provider, answer)], cost=self._cost(answer))

    def request_body(self, context: EngineContext, turn: UserTurn) -> dict:
        messages = [{"role": "system", "content": context.system_prompt}] if context.system_prompt else []
        messages += [_history_message(item) for item in trimmed(context.history, self.max_history_chars)]
        messages.append({"role": "user", "content": _turn_content(turn)})
        body = {"model": self._setting(context, "model"), "messages": messages}
        for setting, field in (("temperature", "temperature"), ("maxTokens", "max_tokens")):
            value = self._setting(context, setting)
            if value is not None:
                body[field] = value
        return body

    def _setting(self, context: EngineContext, name: str):
        """The session's override when it has one, else the assistant's engine setting."""
        override = context.overrides.get(name)
        return override if override is not None else self.config.get(name)

    def _cost(self, answer: dict) -> float:
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        for reported in (reported_cost(answer.get("cost")), reported_cost(usage.get("cost"))):
            if reported is not None:
                return reported
        return sum((reported_cost(usage.get(tokens)) or 0.0) * (self.config.get(price) or 0) / 1_000_000
                   for tokens, price in PRICE_SETTINGS.items())


def trimmed(history: list[HistoryItem], budget: int) -> list[HistoryItem]:
    """The newest messages whose text fits in ``budget`` characters, oldest first."""
    kept: list[HistoryItem] = []
    used = 0
    for item in reversed(history):
        used += len(_history_text(item))
        if used > budget:
            break
        kept.append(item)
    return kept[::-1]


def _history_text(item: HistoryItem) -> str:
    note = media_note(item.media)
    return f"{item.content}\n{note}" if note and item.content else (note or item.content)


def _history_message(item: HistoryItem) -> dict:
    role = "assistant" if item.role == "assistant" else "user"
    return {"role": role, "content": _history_text(item)}


def _turn_content(turn: UserTurn):
    images = [m for m in turn.media if (m.content_type or "").lower().startswith("image/")]
    if not images:
        return text_with_media_note(turn)
    others = tuple(m for m in turn.media if m not in images)
    text = text_with_media_note(UserTurn(turn.text, others))
    parts = [{"type": "text", "text": text}] if text else []
    return parts + [{"type": "image_url", "image_url": {"url": m.url}} for m in images]


def _reply_text(provider: str, answer: dict) -> str:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(provider, "no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise malformed(provider, "the first choice has no message")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some servers answer in content parts, as requests may be sent.
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return "".join(text for text in texts if isinstance(text, str))
    if content is None:
        # A refusal is still something to tell the customer.
        refusal = message.get("refusal")
        return refusal if isinstance(refusal, str) else ""
    raise malformed(provider, "the message content is not text")
