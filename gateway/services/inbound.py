"""Accepting an inbound text from Twilio's webhook (SPEC section 5).

The webhook's whole job: parse, store the text and its session in one
transaction, enqueue the turn, answer. Engine and send work happen in jobs.

Texts that reach one web process at the same moment share that transaction
(group commit, ``runtime.inbound``): ``commit_texts`` stores a batch exactly as
the texts would have been stored one by one, in arrival order, and each
webhook answers only once its batch has committed. The batch's jobs
(``jobs_for``) are queued after that, once the webhook has answered; when the
queue is down, or the process dies first, the sweep finds the work later.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Mapping

from sqlalchemy import Integer, Select, String, bindparam, select, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as DbSession, load_only

from gateway import metrics
from gateway.services import events
from gateway.db.models import Assistant, Customer, Event, Message, PhoneNumber, Session, new_id
from gateway.db.driver import DriverStatement
from gateway.db.ops import autocommit, insert_many_or_ignore, insert_together
from gateway.domain.phone import InvalidNumber, mask, to_e164
from gateway.domain.storable import storable
from gateway.errors import BadRequest
from gateway.views import session_view
from gateway.services.sessions import (
    Conversation, NewSession, conversation_key, created_session, customer_rows, ensure_customers, insert_reserving_positions,
    SessionEnded, new_session_values, open_sms_sessions, reserve_sessions,
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
    # "stored", "duplicate", "unknown_number", or "failed": a text stored on its own after its batch failed
    # (see _each_alone) that failed again; ``error`` says why, and accept_inbound raises it to its caller.
    outcome: str
    message_id: str | None = None
    session_id: str | None = None
    session_created: bool = False
    completed_id: str | None = None  # the expired session this text closed, if any
    # Events written with the text outside an ORM transaction (see _store), to be enqueued with its turn.
    events: tuple[str, ...] = ()
    error: Exception | None = None


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
    stored = _StoredParameters(form)
    return InboundSms(
        sid=sid,
        from_=numbers["From"],
        to=numbers["To"],
        body=stored.get("Body"),
        media=_media(stored),
        messaging_service_sid=stored.get("MessagingServiceSid") or None,
        opt_out_type=stored.get("OptOutType").upper() or None,
        details={name: value for name in KEPT_PARAMETERS if (value := stored.get(name))},
    )


class _StoredParameters:
    """The webhook's parameters as they are stored: whatever Twilio (or anyone) sent, the database takes
    it (no NUL, no lone surrogate; see domain.storable). A missing one reads as ""."""

    def __init__(self, form: Mapping[str, str]):
        self.form = form

    def get(self, name: str) -> str:
        return storable(self.form.get(name) or "")


def _media(form: _StoredParameters) -> list[dict]:
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
NOT_NULL_VIOLATION = "23502"
UNIQUE_VIOLATION = "23505"


def accept_inbound(runtime: "Runtime", sms: InboundSms, deferred: list | None = None) -> Accepted:
    """Store one text and enqueue its turn, in one batch with the texts that arrive at the same time.

    With ``deferred`` (a list), queueing the jobs of a batch this caller stored is added to it instead,
    for the caller to run once it has answered (the webhook: after its response is sent). The text is
    committed either way; a job never queued (the process died first) is the sweep's to recover.
    """
    accepted = runtime.inbound.submit(sms, deferred)
    if accepted.error is not None:
        raise accepted.error
    return accepted


def commit_texts(runtime: "Runtime", batch: list[InboundSms]) -> list[Accepted]:
    """Store texts, their customers and sessions in one transaction: one result per text, in order.

    The unit of group commit (``runtime.inbound``), whose ``after`` queues ``jobs_for`` the results.
    """
    metrics.inbound_batch(len(batch))
    # On PostgreSQL the new rows of all three tables go in one statement (see _store).
    accepted = _store_batch(runtime, batch, together=runtime.engine.dialect.name == "postgresql")
    for sms, result in zip(batch, accepted):
        if result.outcome == "stored":
            log.info(
                "event=webhook.stored message=%s session=%s from=%s to=%s new_session=%s",
                result.message_id, result.session_id, mask(sms.from_), mask(sms.to), result.session_created,
            )
            if result.completed_id:
                log.info("event=session.completed session=%s reason=expired", result.completed_id)
        elif result.outcome == "duplicate":
            log.info("event=webhook.duplicate sid=%s", sms.sid)
        elif result.outcome == "unknown_number":
            log.info("event=webhook.unknown_number to=%s sid=%s", mask(sms.to), sms.sid)
        # A "failed" text's error reaches its own webhook, which logs it as any request that fails.
    return accepted


def jobs_for(accepted: list[Accepted]) -> list[tuple[str, tuple]]:
    """The jobs of texts just committed: one turn job per session, one delivery per event written with them."""
    turns, deliveries = [], []
    for result in accepted:
        if result.outcome == "stored":
            if result.session_id not in turns:
                turns.append(result.session_id)
            deliveries.extend(result.events)
    return [("process_turns", (session_id,)) for session_id in turns] + [("deliver_event", (event_id,))
                                                                          for event_id in deliveries]


def _store_batch(runtime: "Runtime", batch: list[InboundSms], together: bool, tries: int = 3) -> list[Accepted]:
    try:
        if together:
            return _store_together(runtime, batch)
        with runtime.db.begin() as tx:
            return _store(tx, batch, _look_up(tx, batch), runtime.clock.now(), together)
    except SessionEnded:
        # A session the lookup found active was completed before its positions were taken (ended by
        # hand, or swept): nothing was written. Looked up again, its texts open the next session.
        if tries <= 1:
            raise
        return _store_batch(runtime, batch, together=False, tries=tries - 1)
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
        return _each_alone(runtime, batch)
    except DBAPIError as error:
        sqlstate = getattr(error.orig, "sqlstate", None)
        # Stored together, a session or text refers to a customer or session that the same
        # statement skipped, its key taken by another transaction (or the session was deleted),
        # or, in autocommit, a text's MessageSid was committed elsewhere after the lookup: the
        # careful way again. So does a text of a session completed after the lookup, which gets no
        # position (see sessions._reserving_statement); any other NULL is an error of its own.
        if together and (sqlstate in (FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION) or _no_position(error)):
            return _store_batch(runtime, batch, together=False)
        # Batches take their row locks in one fixed order (keys, session ids) so as not to deadlock
        # with each other, but other work locks sessions too; PostgreSQL then aborts one side.
        # Alone, each text cannot deadlock.
        if len(batch) == 1 or sqlstate != DEADLOCK:
            raise
        return _each_alone(runtime, batch)


def _each_alone(runtime: "Runtime", batch: list[InboundSms]) -> list[Accepted]:
    """Each text of a batch that failed as a whole, stored in a transaction of its own.

    A text that fails again on its own (the database gone meanwhile, say) gets its error as its result
    instead of raising it: the texts committed before and after it are stored, and their webhooks
    answer 200, while only its own answers 500 (nothing of it committed, so Twilio's report is true).
    """
    results = []
    for sms in batch:
        try:
            results.append(_store_batch(runtime, [sms], together=False)[0])
        except Exception as error:  # noqa: BLE001 - handed to this text's own caller by accept_inbound
            results.append(Accepted("failed", error=error))
    return results


def _no_position(error: DBAPIError) -> bool:
    """Whether ``error`` is the one write statement refusing a text without a position (messages.seq NULL)."""
    diag = getattr(error.orig, "diag", None)
    return (getattr(error.orig, "sqlstate", None) == NOT_NULL_VIOLATION and diag is not None
            and diag.table_name == "messages" and diag.column_name == "seq")


def _needs_transaction(found: "_Found", now) -> bool:
    """Whether storing a text takes more than inserting rows and reserving positions: completing an
    expired session (and the events of both sessions, read from the rows)."""
    return found.session is not None and found.session.expires_at <= now


def _store_together(runtime: "Runtime", batch: list[InboundSms]) -> list[Accepted]:
    """PostgreSQL: the lookup as one autocommit read, then the batch's writes.

    When no text finds an expired session (nearly always), the writes are one statement, atomic by
    itself: it reserves the positions of the live sessions and inserts the new customers, sessions,
    their session.created events (for assistants that subscribe) and texts. It runs in autocommit
    too, so a webhook costs two round trips (no BEGIN, no COMMIT; a text to a live session used to
    take five, a first text to a subscriber's number one per row and event).
    Otherwise the writes run in one transaction. Under READ COMMITTED the lookup saw no more
    inside a transaction than it does outside.
    """
    with autocommit(runtime.engine) as connection:  # one checkout for the lookup and the write
        found = _look_up(connection, batch)
        now = runtime.clock.now()
        if not any(f is not None and f.duplicate_id is None and _needs_transaction(f, now) for f in found):
            return _store(connection, batch, found, now, together=True)
    with runtime.db.begin() as tx:
        return _store(tx, batch, found, now, together=True)


@dataclass
class _Conversation:
    found: "_Found"
    customer_number: str
    texts: list[int] = field(default_factory=list)  # indexes into the batch, in arrival order


def _store(tx, batch: list[InboundSms], found: list["_Found | None"], now, together: bool) -> list[Accepted]:
    """Store what the lookup ``found`` for the batch. ``tx`` is the batch's ORM transaction, or, stored
    together with no expired session and no event to write (see _store_together), an autocommit connection."""
    in_transaction = isinstance(tx, DbSession)
    accepted: list[Accepted | None] = [None] * len(batch)
    conversations: dict[str, _Conversation] = {}
    seen: set[str] = set()
    for index, (sms, found_one) in enumerate(zip(batch, found)):
        if found_one is None:
            accepted[index] = Accepted("unknown_number")
        # A cheap read first so that a redelivered text never touches its session (it could
        # otherwise complete an expired one); the atomic check is the ON CONFLICT insert below.
        elif found_one.duplicate_id is not None or sms.sid in seen:
            accepted[index] = Accepted("duplicate")
        else:
            seen.add(sms.sid)
            if in_transaction:  # read with the number: event checks need not read it again
                events.known_subscriber(tx, found_one.subscriber)
            key = conversation_key(found_one.number.id, sms.from_)
            conversations.setdefault(key, _Conversation(found_one, sms.from_)).texts.append(index)
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
    # Per conversation: (session id, positions, whether the session is new, the expired one it replaced)
    if together and not in_transaction:
        # Every session is live or new. A live one's positions are reserved by the one statement
        # below: its texts carry their places among its new texts (1, 2, ...) instead.
        live = [(c.active, c.texts) for c in wanted if c.active is not None]
        to_create = [NewSession(index, None, new_session_values(c, now), c.texts)
                     for index, c in enumerate(wanted) if c.active is None]
        places = [(c.active.id, tuple(range(1, c.texts + 1)), False, None) if c.active is not None else None
                  for c in wanted]
    elif together:
        opened, to_create = reserve_sessions(tx, wanted, now)
        places = [(o.session.id, o.seqs, False, None) if o is not None else None for o in opened]
    else:
        places = [(o.session.id, o.seqs, o.created, o.completed_id) for o in open_sms_sessions(tx, wanted, now)]
    if together:
        for new in to_create:
            places[new.index] = (new.values["id"], tuple(range(1, new.texts + 1)), True, new.completed_id)
    rows = []
    for group, (session_id, seqs, _, _) in zip(groups, places):
        rows.extend(_message_row(batch[index], session_id, seq, now) for index, seq in zip(group.texts, seqs))
    rows.sort(key=lambda row: row["twilio_sid"])  # in key order: see insert_many_or_ignore
    written: dict[int, tuple[str, ...]] = {}  # per conversation, the events written by the one statement
    if together:
        sessions = sorted((new.values for new in to_create), key=lambda values: values["active_key"])  # key order
        if in_transaction:
            parts = [(Customer, new_customers, "number", Customer.number),
                     (Session, sessions, "active_key", Session.active_key),
                     (Message, rows, "twilio_sid", Message.twilio_sid)]
            inserted = insert_together(tx, parts)
        else:
            # No ORM transaction to write the session.created events: they join the statement.
            created_events = {new.index: _created_event(groups[new.index], new.values, now) for new in to_create
                              if "session.created" in groups[new.index].found.subscriber.event_types}
            written = {index: (row["id"],) for index, row in created_events.items()}
            # Autocommit: a text whose MessageSid is taken must fail the statement (a unique
            # violation, see _store_batch), not be skipped: nothing could roll back the rest.
            parts = [(Customer, new_customers, "number", Customer.number),
                     (Session, sessions, "active_key", Session.active_key),
                     (Event, list(created_events.values()), None, Event.id),
                     (Message, rows, None, Message.twilio_sid)]
            inserted = insert_reserving_positions(tx, live, now, parts)
        if [len(values) for values in inserted] != [len(part[1]) for part in parts]:
            raise _LostRace  # rolls back the whole batch, session work included
        if in_transaction:
            for new in to_create:
                created_session(tx, new, now)  # its session.created event, in this transaction
    elif len(insert_many_or_ignore(tx, Message, rows, "twilio_sid", Message.twilio_sid)) != len(rows):
        raise _LostRace  # rolls back the whole batch, session work included
    ids = {row["twilio_sid"]: row["id"] for row in rows}
    for conversation, (group, (session_id, _, created, completed_id)) in enumerate(zip(groups, places)):
        for position, index in enumerate(group.texts):
            # As if the texts had come one by one: the first of them opened the session.
            first = position == 0
            accepted[index] = Accepted("stored", ids[batch[index].sid], session_id, created and first,
                                       completed_id if first else None, written.get(conversation, ()) if first else ())
    return accepted  # type: ignore[return-value]  # all filled


def _created_event(conversation: _Conversation, values: dict, now) -> dict:
    """The session.created event row of a session about to be inserted with ``values``: the view an ORM
    transaction would build of it (events.session_event), from the same values."""
    found = conversation.found
    customer = SimpleNamespace(number=conversation.customer_number,
                               name=found.customer_name if found.customer_id is not None else None)
    return events.event_row(values["assistant_id"], "session.created", "session",
                            session_view(SimpleNamespace(**values), customer), now)


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
    number: "PhoneNumber | _Number"
    # Its assistant's serverUrl and serverEvents, read with the number: _store hands them to the
    # event checks, which then read no subscription of their own (see events.known_subscriber).
    subscriber: events.Subscriber
    session: "Session | _ActiveSession | None"  # the conversation's active session, expired or not
    customer_id: str | None
    duplicate_id: str | None  # an earlier message with this MessageSid
    customer_name: str | None = None  # read by the plain lookup, for a session.created event's view


@dataclass(frozen=True, slots=True)
class _Number:
    """What storing a text needs of its number, read as plain columns (see _look_up)."""

    id: str
    assistant_id: str | None
    session_expiration_seconds: int
    session_inactivity_seconds: int | None


@dataclass(frozen=True, slots=True)
class _ActiveSession:
    """What storing a text needs of the conversation's active session, read as plain columns."""

    id: str
    status: str
    expires_at: datetime
    created_at: datetime
    expiration_seconds: int
    inactivity_seconds: int | None


def _look_up(source, batch: list[InboundSms]) -> list[_Found | None]:
    """Everything the webhook reads for a batch of texts, in one query: each text's number (by To,
    else, in a second query, by MessagingServiceSid) with its assistant, the conversation's
    active session, the customer and whether the MessageSid was seen before.

    ``source`` is the batch's ORM transaction (the number and session come as ORM objects), or
    an autocommit connection (PostgreSQL, see _store_together): then plain columns."""
    found: list[_Found | None] = [None] * len(batch)
    plain = not isinstance(source, DbSession)
    for index, row in _run_lookup(source, list(enumerate(batch)), False, plain):
        found[index] = row
    by_service = [(index, sms) for index, sms in enumerate(batch) if found[index] is None and sms.messaging_service_sid]
    if by_service:
        for index, row in _run_lookup(source, by_service, True, plain):
            found[index] = row
    return found


NO_SUBSCRIBER = events.Subscriber(None, frozenset())
TEXT_COLUMNS = {"i": Integer, "to": String, "customer": String, "sid": String, "service": String}


def _run_lookup(source, indexed: list[tuple[int, InboundSms]], by_service: bool, plain: bool):
    params = {}
    for row, (index, sms) in enumerate(indexed):
        params.update({f"i{row}": index, f"to{row}": sms.to, f"customer{row}": sms.from_, f"sid{row}": sms.sid,
                       f"service{row}": sms.messaging_service_sid})
    if not plain:
        for index, number, assistant, session, customer_id, duplicate_id in source.execute(
                _lookup(len(indexed), by_service, plain), params):
            subscriber = events.Subscriber.of_assistant(assistant) if assistant is not None else NO_SUBSCRIBER
            yield index, _Found(number, subscriber, session, customer_id, duplicate_id)
        return
    for row in _driver_lookup(len(indexed), by_service, source.dialect).rows(source, params):
        number = _Number(row.number_id, row.assistant_id, row.session_expiration_seconds, row.session_inactivity_seconds)
        session = (_ActiveSession(row.session_id, row.status, row.expires_at, row.created_at, row.expiration_seconds,
                                  row.inactivity_seconds) if row.session_id is not None else None)
        yield row.i, _Found(number, events.Subscriber.of(row), session, row.customer_id, row.duplicate_id,
                            row.customer_name)


@functools.lru_cache(maxsize=512)
def _driver_lookup(size: int, by_service: bool, dialect) -> DriverStatement:
    """The plain lookup, run on the driver's cursor (PostgreSQL autocommit, see _store_together)."""
    return DriverStatement(_lookup(size, by_service, True), dialect)


@functools.lru_cache(maxsize=512)
def _lookup(size: int, by_service: bool, plain: bool) -> Select:
    """The lookup of ``size`` texts, built once per size: a reused statement keeps its compiled form.

    The texts come in as a table of bound parameters (one SELECT per text, joined
    by UNION ALL), each with its index in the batch.
    """
    texts = union_all(*(
        select(*(bindparam(f"{name}{row}", type_=kind).label(name) for name, kind in TEXT_COLUMNS.items()))
        for row in range(size)
    )).cte("texts")
    matches = PhoneNumber.messaging_service_sid == texts.c.service if by_service else PhoneNumber.number == texts.c.to
    duplicate_id = select(Message.id).where(Message.twilio_sid == texts.c.sid).scalar_subquery()
    if plain:
        # Only the columns storing a text reads, as plain values: no ORM objects to build.
        columns = (
            texts.c.i, PhoneNumber.id.label("number_id"), PhoneNumber.assistant_id, PhoneNumber.session_expiration_seconds,
            PhoneNumber.session_inactivity_seconds, Assistant.server_url, Assistant.server_events,
            Session.id.label("session_id"), Session.status, Session.expires_at, Session.created_at,
            Session.expiration_seconds, Session.inactivity_seconds,
            Customer.id.label("customer_id"), Customer.name.label("customer_name"), duplicate_id.label("duplicate_id"),
        )
    else:
        columns = (texts.c.i, PhoneNumber, Assistant, Session, Customer.id, duplicate_id)
    statement = (
        select(*columns)
        .select_from(texts)
        .join(PhoneNumber, matches)
        .outerjoin(Assistant, Assistant.id == PhoneNumber.assistant_id)
        .outerjoin(Session, Session.active_key == PhoneNumber.id + ":" + texts.c.customer)
        .outerjoin(Customer, Customer.number == texts.c.customer)
    )
    if plain:
        return statement
    # Only the columns storing a text reads; anything else is loaded if ever touched.
    return statement.options(
        load_only(PhoneNumber.assistant_id, PhoneNumber.session_expiration_seconds,
                  PhoneNumber.session_inactivity_seconds),
        load_only(Assistant.server_url, Assistant.server_events),
        load_only(Session.status, Session.expires_at, Session.created_at, Session.expiration_seconds,
                  Session.inactivity_seconds),
    )
