"""Taking a session's texts to its engine, one turn at a time, in order (SPEC 6.3, 6.6, 6.9).

``process_turns`` is the turn job. It owns the session's turn lane through a
lease, takes the oldest received text (or a burst of texts to merge), calls
the engine outside any transaction, then in one fenced transaction marks the
texts processed and queues the replies, which it then sends itself through
the send lane once it has let the turn lane go. A worker killed at any point leaves
the texts ``received``; the lease runs out and the next job redoes the turn,
and because the replies are stored in the same transaction that marks the
texts processed, a turn's replies are queued once (SPEC 6.4).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

from rq.timeouts import JobTimeoutException
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from adapters import create_engine
from adapters.base import (
    EngineContext,
    EngineError,
    HistoryItem,
    Media,
    RetryPolicy,
    UserTurn,
    call_with_retries,
)
from gateway.db.models import Assistant, Chat, Customer, Message, OptOut, PhoneNumber, Session, new_id
from gateway.db.ops import read_rows, rowcount_in
from gateway.domain.keywords import OPT_OUT_TYPES, Keyword, classify
from gateway.domain.storable import storable, storable_json
from gateway.domain.templates import merge_variables, render
from gateway import metrics
from gateway.services import events, optouts
from gateway.services.leases import Lease, LeaseLost, work_lane
from gateway.services.outbound import queue_replies, send_pending

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.turns")

HISTORY_LIMIT = 200  # most recent messages handed to an engine; adapters trim further


@dataclass
class Batch:
    """The received texts one turn answers: one text, or a merged burst."""

    messages: list  # Message objects, or rows of _PENDING's columns
    overrides: dict | None = None  # an API chat's own assistantOverrides, over the session's

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]

    @property
    def text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.content)

    @property
    def media(self) -> tuple[Media, ...]:
        return tuple(Media(item["url"], item.get("contentType")) for m in self.messages for item in (m.media or []))


@dataclass
class Situation:
    """What the turn needs to know, read at its start: the rows as the columns of _SITUATION_PARTS."""

    session: SimpleNamespace
    number: SimpleNamespace | None
    assistant: SimpleNamespace | None
    customer: SimpleNamespace | None
    opted_out: bool
    history: list[HistoryItem]
    variables: dict


class _TurnLease(Lease):
    """The turn job's lease on the lane, which notes SMS replies its turns queued and not yet sent.

    The turn job sends them itself once it has let the lane go (see process_turns): one RQ job
    per text instead of two, and no trip through the queue between a reply and its send. Replies
    that would wait behind another engine call go to a send job of their own (see _drain), as the
    replies of an API chat's turn always do.
    """

    replies_waiting = False


def process_turns(runtime: "Runtime", session_id: str) -> None:
    lease = _TurnLease(runtime, session_id, "turn")
    try:
        work_lane(runtime, session_id, "turn", "process_turns", _drain, _has_received, lease=lease)
    except BaseException:
        _hand_off_replies(runtime, lease)  # committed before the failure: a send job sends them
        raise
    if lease.replies_waiting:
        # After the turn lane is released: the session's next text can be answered by another
        # worker while this one talks to Twilio.
        lease.replies_waiting = False
        send_pending(runtime, session_id)


def _drain(runtime: "Runtime", lease: _TurnLease) -> float | None:
    """Answer received texts in order until none is left; returns a delay when a burst is still open, or 0
    when this job has run long enough."""
    while True:
        batch, wait = _next_batch(runtime, lease.session_id)
        if batch is None:
            return wait
        _hand_off_replies(runtime, lease)  # they must not wait for the engine's next answer
        answer(runtime, lease, batch)
        if lease.ran_long():
            return 0.0  # the rest in a fresh job (see leases.LANE_BUDGET_SECONDS)


def _hand_off_replies(runtime: "Runtime", lease: _TurnLease) -> None:
    if lease.replies_waiting:
        lease.replies_waiting = False
        runtime.enqueue("send_pending", lease.session_id)


def _next_batch(runtime: "Runtime", session_id: str) -> tuple[Batch | None, float | None]:
    pending = read_rows(runtime.engine, _PENDING, {"session_id": session_id})
    if not pending:
        return None, None
    merge_seconds = pending[0].merge_burst_seconds
    if not merge_seconds or pending[0].channel != "sms" or classify(pending[0].content):
        return Batch(pending[:1]), None
    return _burst(pending, merge_seconds, runtime.clock.now())


# Built once, like every statement a turn runs: building one costs more CPU than running it.
# The session's received texts, in order, each with its number's burst window.
_PENDING = (
    select(Message.id, Message.session_id, Message.seq, Message.content, Message.media, Message.channel,
           Message.details, Message.created_at, PhoneNumber.merge_burst_seconds)
    .join(Session, Session.id == Message.session_id)
    .outerjoin(PhoneNumber, PhoneNumber.id == Session.phone_number_id)
    .where(Message.session_id == bindparam("session_id"), Message.role == "user", Message.status == "received")
    .order_by(Message.seq)
)


def _burst(pending: list[Message], window: float, now: datetime) -> tuple[Batch | None, float | None]:
    """Texts each within ``window`` seconds of the one before join one turn (keywords never join)."""
    burst = [pending[0]]
    for message in pending[1:]:
        if classify(message.content) or (message.created_at - burst[-1].created_at).total_seconds() > window:
            break
        burst.append(message)
    still_open = len(burst) == len(pending)
    remaining = window - (now - burst[-1].created_at).total_seconds()
    if still_open and remaining > 0:
        return None, remaining
    return Batch(burst), None


def answer(runtime: "Runtime", lease: Lease, batch: Batch) -> str | None:
    """Answer one batch of texts under the lane's lease; returns the chat id when the engine was asked."""
    situation = _read_situation(runtime, batch)
    if situation is None:
        raise LeaseLost(lease.session_id)  # the session was deleted meanwhile: nothing left to answer
    first = batch.messages[0]
    keyword = _keyword(first) if len(batch.messages) == 1 else None

    if keyword is not None and first.details.get("OptOutType"):
        # Twilio's Advanced Opt-Out already answered the customer: record, stay silent.
        return _finish(runtime, lease, batch, situation, [], None, keyword, handling="twilio_" + keyword.value)
    if keyword is Keyword.OPT_OUT:
        replies = _message(situation, "opt_out_message")
        return _finish(runtime, lease, batch, situation, replies, "opt_out", keyword, handling="opt_out")
    if keyword is Keyword.OPT_IN:
        replies = _message(situation, "opt_in_message")
        return _finish(runtime, lease, batch, situation, replies, "opt_in", keyword, handling="opt_in")
    if situation.opted_out and first.channel == "sms":
        # Stored and processed, never forwarded: the customer asked for silence.
        return _finish(runtime, lease, batch, situation, [], None, handling="opted_out")
    if keyword is Keyword.HELP and situation.number is not None and situation.number.help_message:
        return _finish(runtime, lease, batch, situation, _message(situation, "help_message"), "help", handling="help")
    return _ask_engine(runtime, lease, batch, situation)


def _keyword(message: Message) -> Keyword | None:
    opt_out_type = (message.details or {}).get("OptOutType")
    if opt_out_type:
        return OPT_OUT_TYPES.get(opt_out_type)
    return classify(message.content) if message.channel == "sms" else None


def _message(situation: Situation, field: str) -> list[str]:
    template = getattr(situation.number, field, None) if situation.number else None
    text = render(template, situation.variables)
    return [text] if text else []


def _ask_engine(runtime: "Runtime", lease: Lease, batch: Batch, situation: Situation) -> str | None:
    assistant = situation.assistant
    if assistant is None:
        return _fail(runtime, lease, batch, situation, "no assistant is configured for this number", engine=None, elapsed=0)
    settings = runtime.settings
    context = EngineContext(
        session_id=situation.session.id,
        assistant_id=assistant.id,
        config=dict(assistant.engine or {}),
        history=situation.history,
        variables=situation.variables,
        system_prompt=render(assistant.system_prompt, situation.variables),
        overrides={**(situation.session.assistant_overrides or {}), **(batch.overrides or {})},
        state=dict(situation.session.engine_state or {}),
        customer_number=situation.customer.number if situation.customer else None,
        session_name=situation.session.name,
        secret=assistant.server_secret,
    )
    turn = UserTurn(text=batch.text, media=batch.media, message_ids=tuple(batch.ids))
    policy = RetryPolicy(settings.engine_tries, settings.engine_retry_delay, settings.engine_retry_cap)
    provider = context.config.get("provider")
    started = time.monotonic()
    try:
        engine = create_engine(context.config, timeout=settings.engine_timeout)
        # Renewing before each try keeps a slow but live retry sequence from
        # looking like a dead worker.
        reply = call_with_retries(engine, context, turn, policy, sleep=runtime.clock.sleep, before_try=lambda _: lease.renew())
    except EngineError as error:
        # The state too: a remote session opened before the failure is reused by the next turn.
        return _fail(runtime, lease, batch, situation, error.reason, engine=provider, elapsed=_ms(started),
                     engine_state=context.state)
    except (LeaseLost, *NOT_THE_ENGINE):
        raise
    except Exception as error:
        # A bug in an adapter must still leave the text in a final state with a
        # reason; retrying it from the sweep forever would help nobody.
        log.exception("event=engine.crashed session=%s engine=%s", situation.session.id, provider)
        reason = f"{provider} engine crashed: {type(error).__name__}"
        return _fail(runtime, lease, batch, situation, reason, engine=provider, elapsed=_ms(started))
    return _finish(
        runtime, lease, batch, situation, reply.texts, "reply",
        cost=reply.cost, engine=provider, elapsed=_ms(started), engine_state=context.state, handling="engine",
    )


# Errors raised during an engine call that are not the engine's: the database failing the lease's
# keep-alive, and RQ stopping a job that ran past its timeout. The text stays received and the
# sweep hands it to a worker again; marked failed, it would get the fallback with tries left.
NOT_THE_ENGINE = (SQLAlchemyError, JobTimeoutException)


def _fail(runtime, lease, batch, situation, reason: str, *, engine: str | None, elapsed: int,
          engine_state: dict | None = None) -> str | None:
    fallback = render(situation.assistant.fallback_message, situation.variables) if situation.assistant else None
    log.warning("event=turn.failed session=%s messages=%s reason=%s", lease.session_id, ",".join(batch.ids), reason)
    return _finish(
        runtime, lease, batch, situation, [fallback] if fallback else [], "fallback",
        failure=reason, engine=engine, elapsed=elapsed, engine_state=engine_state, handling="engine",
    )


def _finish(
    runtime: "Runtime",
    lease: Lease,
    batch: Batch,
    situation: Situation,
    replies: list[str],
    kind: str | None,
    state_change: Keyword | None = None,
    *,
    failure: str | None = None,
    cost: float = 0.0,
    engine: str | None = None,
    elapsed: int | None = None,
    engine_state: dict | None = None,
    handling: str,
) -> str | None:
    """Store the turn's outcome in one transaction, fenced by the lease."""
    # What an engine answers is stored whatever it holds: refused, the turn could never be stored.
    replies = [storable(text) for text in replies]
    failure = storable(failure) if failure else failure
    engine_state = storable_json(engine_state) if engine_state is not None else None
    now = runtime.clock.now()
    session = situation.session
    with runtime.db.begin() as tx:
        lease.renew(tx)
        for message in batch.messages:
            marked = rowcount_in(tx, _MARK_TEXT, {
                "message_id": message.id,
                "status": "failed" if failure else "processed",
                "error_message": failure,
                "details": {**(message.details or {}), "handling": handling},
                "updated_at": now,
            })
            if marked != 1:
                raise LeaseLost(session.id)
        if state_change is not None and situation.customer is not None and situation.number is not None:
            _change_opt_state(tx, state_change, situation, now)
        chat = None
        if kind in ("reply", "fallback"):
            chat = dict(
                id=new_id(),
                session_id=session.id,
                input=batch.text,
                output=[{"role": "assistant", "content": text} for text in replies],
                status="failed" if failure else "completed",
                cost=cost,
                engine=engine,
                engine_ms=elapsed,
                error_message=failure,
                created_at=now,
                updated_at=now,
            )
            rowcount_in(tx, _INSERT_CHAT, chat)
            # Subscriptions as read with the situation at the start of the turn.
            if situation.assistant is not None:
                events.known_subscriber(tx, events.Subscriber.of_assistant(situation.assistant))
            events.chat_event(tx, Chat(**chat), session.assistant_id, "chat.created", now)
        reply_to = batch.messages[-1].seq
        # Replies go back the way the text came: SMS texts by SMS, API chats inline.
        channel = batch.messages[0].channel
        queued = (
            queue_replies(tx, session, replies, kind or "reply", chat["id"] if chat else None, now, reply_to, channel)
            if replies else []
        )
        changes: dict = {}
        if cost:
            changes["cost"] = _SESSIONS.c.cost + cost
        if engine_state is not None and engine_state != (session.engine_state or {}):
            changes["engine_state"] = engine_state
        if changes:
            tx.execute(update(_SESSIONS).where(_SESSIONS.c.id == session.id).values(**changes))
    log.info(
        "event=turn.%s session=%s messages=%s replies=%d engine=%s engine_ms=%s",
        "failed" if failure else "processed", session.id, ",".join(batch.ids), len(queued), engine or "-", elapsed,
    )
    metrics.turn("failed" if failure else "processed", engine, elapsed)
    if queued and channel == "sms":
        if isinstance(lease, _TurnLease):
            lease.replies_waiting = True  # the turn job sends them (see process_turns)
        else:
            runtime.enqueue("send_pending", session.id)
    return chat["id"] if chat else None


_SESSIONS = Session.__table__
_MARK_TEXT = (
    update(Message.__table__)
    .where(Message.__table__.c.id == bindparam("message_id"), Message.__table__.c.status == "received")
)  # SET from the parameters' keys
_INSERT_CHAT = insert(Chat.__table__)


def _change_opt_state(tx, keyword: Keyword, situation: Situation, now: datetime) -> None:
    customer_id, number_id = situation.customer.id, situation.number.id
    if keyword is Keyword.OPT_OUT:
        optouts.opt_out(tx, customer_id, number_id, "keyword", now)
    elif keyword is Keyword.OPT_IN:
        optouts.opt_in(tx, customer_id, number_id)


def _read_situation(runtime: "Runtime", batch: Batch) -> Situation | None:
    session_id = batch.messages[0].session_id
    # Two reads of their own, not one transaction: the lease keeps the session's turns to this
    # worker, and under READ COMMITTED a transaction's statements see no common snapshot anyway.
    found = read_rows(runtime.engine, _SITUATION, {"session_id": session_id})
    if not found:
        return None
    session, number, assistant, customer = _situation_parts(found[0])
    opted_out = bool(found[0][-1])
    # Everything said before this turn: earlier texts, and every reply so far,
    # including one stored after this text arrived (its turn was still with
    # the engine then). Texts still waiting behind this turn are not history.
    earlier = read_rows(runtime.engine, _HISTORY, {"session_id": session_id, "seq": batch.messages[0].seq})
    variables = merge_variables(
        (batch.overrides or {}).get("variableValues"),
        (session.assistant_overrides or {}).get("variableValues"),
        assistant.variable_values if assistant else None,
        {
            "customer.number": customer.number if customer else None,
            "customer.name": customer.name if customer else None,
            "phoneNumber.number": number.number if number else None,
            "now": runtime.clock.now().isoformat(timespec="seconds"),
        },
    )
    return Situation(session, number, assistant, customer, opted_out, _history(sorted(earlier, key=_turn_order)), variables)


# What a turn reads of the session and of the rows it points to, as plain columns: four ORM entities
# loaded in an ORM transaction cost a fifth of the workers' CPU per text. Each part becomes an object
# with these attributes (None for a row the session no longer points to).
_SITUATION_PARTS = (
    (Session, ("id", "name", "status", "assistant_id", "phone_number_id", "customer_id", "created_at",
               "expiration_seconds", "inactivity_seconds", "assistant_overrides", "engine_state")),
    (PhoneNumber, ("id", "number", "help_message", "opt_out_message", "opt_in_message")),
    (Assistant, ("id", "engine", "system_prompt", "variable_values", "fallback_message", "server_url",
                 "server_events", "server_secret")),
    (Customer, ("id", "number", "name")),
)
# The session, what it points to, and whether the customer opted out of its number: one round trip.
_SITUATION = (
    select(
        *(getattr(model, name).label(f"{model.__tablename__}_{name}") for model, names in _SITUATION_PARTS
          for name in names),
        select(OptOut.customer_id)
        .where(OptOut.customer_id == Session.customer_id, OptOut.phone_number_id == Session.phone_number_id)
        .exists()
        .label("opted_out"),
    )
    .select_from(Session)
    .outerjoin(PhoneNumber, PhoneNumber.id == Session.phone_number_id)
    .outerjoin(Assistant, Assistant.id == Session.assistant_id)
    .outerjoin(Customer, Customer.id == Session.customer_id)
    .where(Session.id == bindparam("session_id"))
)


def _situation_parts(row) -> list[SimpleNamespace | None]:
    parts, start = [], 0
    for _, names in _SITUATION_PARTS:
        values = row[start:start + len(names)]
        start += len(names)
        parts.append(SimpleNamespace(**dict(zip(names, values))) if values[0] is not None else None)
    return parts


# Only what the engine's history is made of: a long conversation's 200 rows as ORM objects cost far more.
# The batch's own texts are left out by position: they are user texts from the batch's first one on.
_HISTORY = (
    select(Message.role, Message.content, Message.media, Message.status, Message.chat_id, Message.seq, Message.details)
    .where(
        Message.session_id == bindparam("session_id"),
        or_(Message.role != "user", Message.seq < bindparam("seq")),
    )
    .order_by(Message.seq.desc())
    .limit(HISTORY_LIMIT)
)


def _turn_order(message) -> tuple[float, int]:
    """Conversation order for the engine: each reply right after the text it answers.

    By ``seq`` a reply can land after a text that arrived while its turn was
    with the engine; ``replyToSeq`` puts it back behind the text it answers.
    """
    if message.role == "assistant":
        answered = (message.details or {}).get("replyToSeq")
        if answered is not None:
            return (answered + 0.5, message.seq)
    return (float(message.seq), message.seq)


def _history(messages) -> list[HistoryItem]:
    """Earlier messages as the engine should see them: the parts of one reply joined again."""
    items: list[HistoryItem] = []
    last_chat = None
    for message in messages:
        if message.role == "assistant" and message.status == "blocked":
            continue
        media = tuple(Media(m["url"], m.get("contentType")) for m in (message.media or []))
        if message.role == "assistant" and message.chat_id and message.chat_id == last_chat and items:
            previous = items[-1]
            items[-1] = HistoryItem(previous.role, previous.content + " " + message.content, previous.media)
            continue
        items.append(HistoryItem(message.role, message.content, media))
        last_chat = message.chat_id if message.role == "assistant" else None
    return items


def _has_received(runtime: "Runtime", session_id: str) -> bool:
    return bool(read_rows(runtime.engine, _ANY_RECEIVED, {"session_id": session_id}))


_ANY_RECEIVED = (
    select(Message.id)
    .where(Message.session_id == bindparam("session_id"), Message.role == "user", Message.status == "received")
    .limit(1)
)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

