"""The engine contract every adapter implements, and the retry loop they share.

An adapter turns (session context, new user turn) into reply texts. It never
touches the database, the queue or Twilio: the turn service hands it plain
values and stores what it returns. Adapters raise ``TransientEngineError`` for
failures worth retrying (timeouts, connection errors, 429, 5xx) and
``PermanentEngineError`` for the rest; ``call_with_retries`` applies the
backoff policy around ``ChatEngine.reply``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


@dataclass(frozen=True)
class Media:
    url: str
    content_type: str | None = None


@dataclass(frozen=True)
class HistoryItem:
    """One earlier message of the session, oldest first."""

    role: str  # "user" or "assistant"
    content: str
    media: tuple[Media, ...] = ()


@dataclass(frozen=True)
class UserTurn:
    """The new text (or texts merged into one turn) the engine must answer."""

    text: str
    media: tuple[Media, ...] = ()
    message_ids: tuple[str, ...] = ()


@dataclass
class EngineContext:
    """Everything an adapter may read about the session.

    ``state`` is the adapter's own per-session memory (for example the remote
    session id of a CallHQ-style engine); the adapter may change it and the
    turn service persists it with the reply.
    """

    session_id: str
    assistant_id: str
    config: dict[str, Any]
    history: list[HistoryItem] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    customer_number: str | None = None
    session_name: str | None = None
    # The assistant's serverSecret: signs calls to engines the operator runs (webhook).
    secret: str | None = None


@dataclass(frozen=True)
class Reply:
    texts: list[str]
    cost: float = 0.0


class EngineError(Exception):
    """An engine could not answer. ``reason`` is safe to store and show."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TransientEngineError(EngineError):
    """Worth another try: timeouts, refused connections, 429 and 5xx answers."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentEngineError(EngineError):
    """Trying again will not help: bad credentials, malformed replies, other 4xx."""


class ChatEngine(Protocol):
    provider: str

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: after n failed tries, wait between half and all of first_delay * 2**(n-1), capped."""

    tries: int = 3
    first_delay: float = 1.0
    cap: float = 30.0

    def delay(self, failed_tries: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.first_delay * (2 ** (failed_tries - 1)))
        # Jitter keeps many sessions that failed together from retrying in lockstep;
        # never below half the ceiling so the backoff still grows.
        return (rng or random).uniform(ceiling / 2, ceiling)


def call_with_retries(
    engine: ChatEngine,
    context: EngineContext,
    turn: UserTurn,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    before_try: Callable[[int], None] | None = None,
) -> Reply:
    """Ask the engine, retrying transient errors; raises the last error when out of tries.

    ``before_try(n)`` runs before try n (1-based); the turn service uses it to
    extend its lease so a long retry sequence is not mistaken for a dead worker.
    """
    failed = 0
    while True:
        if before_try is not None:
            before_try(failed + 1)
        try:
            reply = engine.reply(context, turn)
        except TransientEngineError as error:
            failed += 1
            if failed >= policy.tries:
                raise
            wait = policy.delay(failed)
            if error.retry_after is not None:
                wait = min(max(wait, error.retry_after), policy.cap)
            sleep(wait)
            continue
        if not reply.texts or not any(text.strip() for text in reply.texts):
            raise PermanentEngineError(f"{engine.provider} engine returned an empty reply")
        return reply


def media_note(media: tuple[Media, ...]) -> str:
    """A short line naming attachments, for engines that take text only."""
    if not media:
        return ""
    kinds = ", ".join(m.content_type or "file" for m in media)
    noun = "attachment" if len(media) == 1 else "attachments"
    return f"[{len(media)} {noun}: {kinds}]"


def text_with_media_note(turn: UserTurn) -> str:
    note = media_note(turn.media)
    if not note:
        return turn.text
    return f"{turn.text}\n{note}" if turn.text else note
