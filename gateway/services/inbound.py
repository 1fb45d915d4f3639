"""Accepting an inbound text from Twilio's webhook (SPEC section 5).

The webhook's whole job: parse, store the text and its session in one
transaction, enqueue the turn, answer. Engine and send work happen in jobs.

Texts that reach one web process at the same moment share that transaction
(group commit, ``runtime.inbound``): ``store_texts`` stores a batch exactly as
the texts would have been stored one by one, in arrival order, and each
webhook answers only once its batch has committed.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from sqlalchemy import Integer, Select, String, bindparam, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import load_only

from gateway import metrics
from gateway.db.models import Assistant, Customer, Message, PhoneNumber, Session, new_id
from gateway.db.ops import insert_many_or_ignore, insert_together
from gateway.domain.phone import InvalidNumber, mask, to_e164
from gateway.errors import BadRequest
from gateway.services.sessions import (
    Conversation, conversation_key, created_session, customer_rows, ensure_customers, open_sms_sessions, reserve_sessions,
)

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.inbound")

MAX_MEDIA = 10
# Webhook parameters worth keeping with the message; the rest are either stored
# in their own columns or too large and volatile (AddOns) to keep.
KEPT_PARAMETERS = (
    "AccountSid", "MessagingServiceSid", "NumSegments", "OptOutType", "SmsStatus",
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry",
)


@dataclass(frozen=True)
class InboundSms:
    sid: str
    from_: str
    to: str
    body: str
    media: list[dict] = field(default_factory=list)
    messaging_service_sid: str | None = None
    opt_out_type: str | None = None
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    outcome: str  # "stored", "duplicate" or "unknown_number"
    message_id: str | None = None
    session_id: str | None = None
    session_created: bool = False
    completed_id: str | None = None  # the expired session this text closed, if any


def parse_inbound(form: Mapping[str, str]) -> InboundSms:
    """Read Twilio's webhook parameters; BadRequest names what is missing or malformed."""
    sid = (form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or "").strip()
    if not sid:
        raise BadRequest("MessageSid is required")
    if len(sid) > 64 or not sid.isalnum() or not sid.isascii():
        raise BadRequest("MessageSid must be up to 64 letters and digits")
    numbers = {}
    for name in ("From", "To"):
        if not form.get(name):
            raise BadRequest(f"{name} is required")
        try:
            numbers[name] = to_e164(form.get(name))
        except InvalidNumber as error:
            raise BadRequest(f"{name}: {error}") from None
    return InboundSms(
        sid=sid,
        from_=numbers["From"],
        to=numbers["To"],
        body=(form.get("Body") or "").replace("\x00", ""),  # PostgreSQL text cannot hold NUL
        media=_media(form),
        messaging_service_sid=form.get("MessagingServiceSid") or None,
        opt_out_type=(form.get("OptOutType") or "").upper() or None,
        details={name: form[name] for name in KEPT_PARAMETERS if form.get(name)},
    )


def _media(form: Mapping[str, str]) -> list[dict]:
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        raise BadRequest("NumMedia must be a whole number") from None
    media = []
    for index in range(max(count, 0)):
        url = form.get(f"MediaUrl{index}")
        if url:
            media.append({"url": url, "contentType": form.get(f"MediaContentType{index}") or None})
    return media


class _LostRace(Exception):
    """Another transaction stored one of the batch's MessageSids first."""


DEADLOCK = "40P01"  # PostgreSQL's SQLSTATE for a transaction it aborted to break a deadlock
FOREIGN_KEY_VIOLATION = "23503"


def accept_inbound(runtime: "Runtime", sms: InboundSms) -> Accepted:
    """Store one text and enqueue its turn, in one batch with the texts that arrive at the same time."""
    return runtime.inbound.submit(sms)


def store_texts(runtime: "Runtime", batch: list[InboundSms]) -> list[Accepted]:
    """Store texts, their customers and sessions in one transaction, then enqueue their turns.

    The unit of group commit (``runtime.inbound``): one result per text, in order.
    """
    metrics.inbound_batch(len(batch))
    # On PostgreSQL the new rows of all three tables go in one statement (see _store).
    accepted = _store_batch(runtime, batch, together=runtime.engine.dialect.name == "postgresql")
    turns = []
    for sms, result in zip(batch, accepted):
        if result.outcome == "stored":
            log.info(
                "event=webhook.stored message=%s session=%s from=%s to=%s new_session=%s",
                result.message_id, result.session_id, mask(sms.from_), mask(sms.to), result.session_created,
            )
            if result.completed_id:
                log.info("event=session.completed session=%s reason=expired", result.completed_id)
            if result.session_id not in turns:
                turns.append(result.session_id)
        elif result.outcome == "duplicate":
            log.info("event=webhook.duplicate sid=%s", sms.sid)
        else:
            log.info("event=webhook.unknown_number to=%s sid=%s", mask(sms.to), sms.sid)
    runtime.enqueue_many([("process_turns", (session_id,)) for session_id in turns])
    return accepted


def _store_batch(runtime: "Runtime", batch: list[InboundSms], together: bool) -> list[Accepted]:
    try:
        with runtime.db.begin() as tx:
            return _store(tx, batch, runtime.clock.now(), together)
    except _LostRace:
        # Another transaction took one of the batch's keys first. Stored together, that could be a
        # customer or a session as well: the careful way, one statement per table, sorts those out.
        if together:
            return _store_batch(runtime, batch, together=False)
        # A duplicate reached another process at the same instant and was stored there first
        # (the ON CONFLICT insert decided). Alone, this text is that duplicate, and rolling
        # back undid the session work it did; in a batch, each text goes again on its own.
        if len(batch) == 1:
            return [Accepted("duplicate")]
        return [_store_batch(runtime, [sms], together=False)[0] for sms in batch]
    except DBAPIError as error:
        sqlstate = getattr(error.orig, "sqlstate", None)
        # Stored together, a session or text refers to a customer or session that the same
        # statement skipped, its key taken by another transaction: the careful way again.
        if together and sqlstate == FOREIGN_KEY_VIOLATION:
            return _store_batch(runtime, batch, together=False)
        # Batches take their row locks in one fixed order (keys, session ids) so as not to deadlock
        # with each other, but other work locks sessions too; PostgreSQL then aborts one side.
        # Alone, each text cannot deadlock.
        if len(batch) == 1 or sqlstate != DEADLOCK:
            raise
        return [_store_batch(runtime, [sms], together=False)[0] for sms in batch]


@dataclass
class _Conversation:
    found: "_Found"
    customer_number: str
    texts: list[int] = field(default_factory=list)  # indexes into the batch, in arrival order


def _store(tx, batch: list[InboundSms], now, together: bool) -> list[Accepted]:
    accepted: list[Accepted | None] = [None] * len(batch)
    conversations: dict[str, _Conversation] = {}
    seen: set[str] = set()
    for index, (sms, found) in enumerate(zip(batch, _look_up(tx, batch))):
        if found is None:
            accepted[index] = Accepted("unknown_number")
        # A cheap read first so that a redelivered text never touches its session (it could
        # otherwise complete an expired one); the atomic check is the ON CONFLICT insert below.
        elif found.duplicate_id is not None or sms.sid in seen:
            accepted[index] = Accepted("duplicate")
        else:
            seen.add(sms.sid)
            key = conversation_key(found.number.id, sms.from_)
            conversations.setdefault(key, _Conversation(found, sms.from_)).texts.append(index)
    if not conversations:
        return accepted  # type: ignore[return-value]  # all filled

    groups = list(conversations.values())
    missing = [g.customer_number for g in groups if g.found.customer_id is None]
    # Stored together (PostgreSQL), the new customers, sessions and texts are inserted by one
    # statement at the end, and any key another transaction took first sends the batch the
    # careful way (see _store_batch); otherwise each table has its own statement, in that order.
    new_customers = customer_rows(missing, now) if together else []
    customer_ids = {row["number"]: row["id"] for row in new_customers} if together else ensure_customers(tx, missing, now)
    wanted = [
        Conversation(g.found.number, g.found.customer_id or customer_ids[g.customer_number], g.customer_number,
                     g.found.session, len(g.texts))
        for g in groups
    ]
    if together:
        opened, to_create = reserve_sessions(tx, wanted, now)
        places = [(o.session.id, o.seqs) if o is not None else None for o in opened]
        for new in to_create:
            places[new.index] = (new.values["id"], tuple(range(1, new.texts + 1)))
    else:
        opened, to_create = open_sms_sessions(tx, wanted, now), []
        places = [(o.session.id, o.seqs) for o in opened]
    rows = []
    for group, (session_id, seqs) in zip(groups, places):
        rows.extend(_message_row(batch[index], session_id, seq, now) for index, seq in zip(group.texts, seqs))
    rows.sort(key=lambda row: row["twilio_sid"])  # in key order: see insert_many_or_ignore
    if together:
        sessions = [new.values for new in to_create]  # in key order already
        inserted = insert_together(tx, [(Customer, new_customers, "number", Customer.number),
                                        (Session, sessions, "active_key", Session.active_key),
                                        (Message, rows, "twilio_sid", Message.twilio_sid)])
        if [len(values) for values in inserted] != [len(new_customers), len(sessions), len(rows)]:
            raise _LostRace  # rolls back the whole batch, session work included
        for new in to_create:
            opened[new.index] = created_session(tx, new, now)
    elif len(insert_many_or_ignore(tx, Message, rows, "twilio_sid", Message.twilio_sid)) != len(rows):
        raise _LostRace  # rolls back the whole batch, session work included
    ids = {row["twilio_sid"]: row["id"] for row in rows}
    for group, session in zip(groups, opened):
        for position, index in enumerate(group.texts):
            # As if the texts had come one by one: the first of them opened the session.
            first = position == 0
            accepted[index] = Accepted("stored", ids[batch[index].sid], session.session.id,
                                       session.created and first, session.completed_id if first else None)
    return accepted  # type: ignore[return-value]  # all filled


def _message_row(sms: InboundSms, session_id: str, seq: int, now) -> dict:
    return dict(
        id=new_id(),
        session_id=session_id,
        seq=seq,
        role="user",
        content=sms.body,
        media=sms.media,
        channel="sms",
        twilio_sid=sms.sid,
        status="received",
        details=sms.details,
        attempts=0,
        throttled=0,
        slot_reserved=False,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class _Found:
    number: PhoneNumber
    # Held so that it stays in the transaction's identity map (a weak one),
    # where event checks find it without a query of their own.
    assistant: Assistant | None
    session: Session | None  # the conversation's active session, expired or not
    customer_id: str | None
    duplicate_id: str | None  # an earlier message with this MessageSid


def _look_up(tx, batch: list[InboundSms]) -> list[_Found | None]:
    """Everything the webhook reads for a batch of texts, in one query: each text's number (by To,
    else, in a second query, by MessagingServiceSid) with its assistant, the conversation's
    active session, the customer and whether the MessageSid was seen before."""
    found: list[_Found | None] = [None] * len(batch)
    for index, *row in _run_lookup(tx, list(enumerate(batch)), by_service=False):
        found[index] = _Found(*row)
    by_service = [(index, sms) for index, sms in enumerate(batch) if found[index] is None and sms.messaging_service_sid]
    if by_service:
        for index, *row in _run_lookup(tx, by_service, by_service=True):
            found[index] = _Found(*row)
    return found


TEXT_COLUMNS = {"i": Integer, "to": String, "customer": String, "sid": String, "service": String}


def _run_lookup(tx, indexed: list[tuple[int, InboundSms]], by_service: bool):
    params = {}
    for row, (index, sms) in enumerate(indexed):
        params.update({f"i{row}": index, f"to{row}": sms.to, f"customer{row}": sms.from_, f"sid{row}": sms.sid,
                       f"service{row}": sms.messaging_service_sid})
    return tx.execute(_lookup(len(indexed), by_service), params)


@functools.lru_cache(maxsize=256)
def _lookup(size: int, by_service: bool) -> Select:
    """The lookup of ``size`` texts, built once per size: a reused statement keeps its compiled form.

    The texts come in as a table of bound parameters (one SELECT per text, joined
    by UNION ALL), each with its index in the batch.
    """
    texts = union_all(*(
        select(*(bindparam(f"{name}{row}", type_=kind).label(name) for name, kind in TEXT_COLUMNS.items()))
        for row in range(size)
    )).cte("texts")
    matches = PhoneNumber.messaging_service_sid == texts.c.service if by_service else PhoneNumber.number == texts.c.to
    return (
        select(
            texts.c.i,
            PhoneNumber,
            Assistant,
            Session,
            select(Customer.id).where(Customer.number == texts.c.customer).scalar_subquery(),
            select(Message.id).where(Message.twilio_sid == texts.c.sid).scalar_subquery(),
        )
        .select_from(texts)
        .join(PhoneNumber, matches)
        .outerjoin(Assistant, Assistant.id == PhoneNumber.assistant_id)
        .outerjoin(Session, Session.active_key == PhoneNumber.id + ":" + texts.c.customer)
        # Only the columns storing a text reads; anything else is loaded if ever touched.
        .options(
            load_only(PhoneNumber.assistant_id, PhoneNumber.session_expiration_seconds,
                      PhoneNumber.session_inactivity_seconds),
            load_only(Assistant.server_url, Assistant.server_events),
            load_only(Session.status, Session.expires_at, Session.created_at, Session.expiration_seconds,
                      Session.inactivity_seconds),
        )
    )
