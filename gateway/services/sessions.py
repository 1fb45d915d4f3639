"""Opening, touching and completing sessions (SPEC 6.1, 6.2)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, case, select, text, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm.attributes import set_committed_value

from gateway.db.driver import DriverStatement
from gateway.db.models import Customer, Message, PhoneNumber, Session, UTCDateTime
from gateway.db.ops import (
    as_persistent, column_of, insert_many_or_ignore, insert_or_ignore, json_rows, json_value, rows_in,
)
from gateway.domain.expiry import expires_at
from gateway.services import events

log = logging.getLogger("gateway.sessions")


class SessionEnded(Exception):
    """A session read as active was completed (or deleted) by another transaction before its positions were
    reserved: a new text belongs in the conversation's next session (SPEC 6.2: a completed session is never
    reopened)."""


@dataclass(frozen=True)
class Opened:
    session: Session
    created: bool
    completed_id: str | None  # the expired session this text closed, if any
    seqs: tuple[int, ...] = ()  # message positions reserved for the caller


def conversation_key(phone_number_id: str, customer_number: str) -> str:
    return f"{phone_number_id}:{customer_number}"


def ensure_customer(tx: DbSession, number: str, now: datetime) -> str:
    return ensure_customers(tx, [number], now)[number]


def ensure_customers(tx: DbSession, numbers: list[str], now: datetime) -> dict[str, str]:
    """The customer id of each number, creating the customers that do not exist yet."""
    rows = customer_rows(numbers, now)
    ids = {row["number"]: row["id"] for row in rows}
    inserted = set(insert_many_or_ignore(tx, Customer, rows, "number", Customer.number))
    existing = [number for number in ids if number not in inserted]
    if existing:
        ids.update(tx.execute(select(Customer.number, Customer.id).where(Customer.number.in_(existing))).all())
    return ids


def customer_rows(numbers: list[str], now: datetime) -> list[dict]:
    """New customers' rows, one per number, in key order (see insert_many_or_ignore)."""
    return [dict(id=_new_id(), number=number, created_at=now, updated_at=now) for number in sorted(set(numbers))]


@dataclass(frozen=True)
class Conversation:
    """An SMS conversation a batch of texts belongs to, as the webhook found it."""

    number: PhoneNumber
    customer_id: str
    customer_number: str
    active: Session | None  # its active session, expired or not, or None
    texts: int  # message positions to reserve, one per text

    @property
    def key(self) -> str:
        return conversation_key(self.number.id, self.customer_number)


def open_sms_session(
    tx: DbSession, number: PhoneNumber, customer_id: str, customer_number: str, now: datetime, *,
    reserve: int = 0,
) -> Opened:
    """The active session of this conversation, or a new one, with ``reserve`` message positions taken.

    An expired session found here is completed first. Creation is an
    INSERT ... ON CONFLICT on the conversation's active key, so when many
    first texts race, one insert wins and the others read the winner's row.
    """
    key = conversation_key(number.id, customer_number)
    completed_id = None
    for _ in range(3):
        session = tx.scalar(select(Session).where(Session.active_key == key))
        if session is not None and session.expires_at > now:
            try:
                seqs = tuple(next_seqs(tx, session, reserve, now, only_active=True)) if reserve else ()
            except SessionEnded:
                continue  # completed since it was read: read the conversation's active session again
            return Opened(session, False, completed_id, seqs)
        if session is not None:
            if complete(tx, session.id, now):
                completed_id = session.id
        values = _new_session(number, customer_id, customer_number, now, reserve)
        if insert_or_ignore(tx, Session, values, "active_key", Session.id) is not None:
            return Opened(_created(tx, values, now), True, completed_id, tuple(range(1, reserve + 1)))
    raise RuntimeError(f"could not open a session for conversation {key}")


def open_sms_sessions(tx: DbSession, conversations: list[Conversation], now: datetime) -> list[Opened]:
    """``open_sms_session`` for many conversations, in the order given; the new sessions in one INSERT.

    Rows are locked in the order of their conversation keys, so batches in
    several processes that share conversations cannot deadlock. A conversation
    whose session another transaction opened first takes the one-by-one path,
    which reads the winner's row.
    """
    opened, to_create = reserve_sessions(tx, conversations, now)
    inserted = set(insert_many_or_ignore(tx, Session, [new.values for new in to_create], "active_key",
                                         Session.active_key))
    for new in to_create:
        conversation = conversations[new.index]
        if new.values["active_key"] in inserted:
            opened[new.index] = created_session(tx, new, now)
        else:
            won = open_sms_session(tx, conversation.number, conversation.customer_id, conversation.customer_number,
                                   now, reserve=conversation.texts)
            opened[new.index] = Opened(won.session, won.created, new.completed_id or won.completed_id, won.seqs)
    return opened  # type: ignore[return-value]  # every index was filled above


@dataclass(frozen=True)
class NewSession:
    """A session a conversation needs, not inserted yet; its first ``texts`` positions are reserved."""

    index: int  # of its conversation
    completed_id: str | None  # the expired session it replaces, completed already
    values: dict
    texts: int


def reserve_sessions(
    tx: DbSession, conversations: list[Conversation], now: datetime
) -> tuple[list[Opened | None], list[NewSession]]:
    """Positions in each conversation's live session, reserved together (``reserve_positions``: their
    rows locked); an expired session is completed first, in key order. The conversations without a live
    session get None, and their new sessions to insert."""
    opened: list[Opened | None] = [None] * len(conversations)
    to_create = []
    live = []  # (index, session, positions wanted)
    for index in sorted(range(len(conversations)), key=lambda i: conversations[i].key):
        conversation = conversations[index]
        session = conversation.active
        if session is not None and session.expires_at > now:
            live.append((index, session, conversation.texts))
            continue
        completed_id = session.id if session is not None and complete(tx, session.id, now) else None
        values = _new_session(conversation.number, conversation.customer_id, conversation.customer_number, now,
                              conversation.texts)
        to_create.append(NewSession(index, completed_id, values, conversation.texts))
    positions = reserve_positions(tx, [(session, count) for _, session, count in live], now)
    for (index, session, _), seqs in zip(live, positions):
        opened[index] = Opened(session, False, None, seqs)
    return opened, to_create


def reserve_positions(tx: DbSession, wanted: list[tuple[Session, int]], now: datetime) -> list[tuple[int, ...]]:
    """``next_seqs`` for several live sessions, in the order given: on PostgreSQL in one UPDATE.
    On PostgreSQL a session may also be any object with the same columns as attributes (the webhook
    reads them as plain values).

    The sessions' rows are locked until commit, as by ``next_seqs``. The
    statement's text never changes: the ids come as one array, matched
    through the primary key (an index scan even on a small table, which the
    planner could not promise for a join to a set of JSON rows), and each
    session's count and new expiry as one JSON object keyed by id.
    """
    if not wanted:
        return []
    if tx.get_bind().dialect.name != "postgresql":
        return [tuple(next_seqs(tx, session, count, now, only_active=True)) for session, count in wanted]
    tx.flush()  # as the ORM's UPDATE would: changes made earlier in this transaction go first
    new_expiry = {session.id: expires_at(session.created_at, session.expiration_seconds, now, session.inactivity_seconds)
                  for session, _ in wanted}
    changes = {session.id: [count, new_expiry[session.id]] for session, count in wanted}
    parameters = {"ids": sorted(changes), "changes": json.dumps(changes, default=json_value), "now": now}
    last = dict(tx.connection().execute(_RESERVE_POSITIONS, parameters).all())
    if len(last) != len(changes):
        raise SessionEnded(sorted(set(changes) - set(last)))
    reserved = []
    for session, count in wanted:
        if isinstance(session, Session):  # loaded objects see the new values, as after the ORM's UPDATE
            for name, value in (("last_seq", last[session.id]), ("last_activity_at", now),
                                ("expires_at", new_expiry[session.id]), ("updated_at", now)):
                set_committed_value(session, name, value)
        reserved.append(tuple(range(last[session.id] - count + 1, last[session.id] + 1)))
    return reserved


# Built once: the statement's text never changes, whatever the number of sessions.
_RESERVE_POSITIONS = text(
    "UPDATE sessions SET last_seq = sessions.last_seq + CAST(CAST(:changes AS jsonb) -> sessions.id ->> 0 AS integer), "
    "expires_at = CAST(CAST(:changes AS jsonb) -> sessions.id ->> 1 AS timestamp), "
    "last_activity_at = :now, updated_at = :now "
    "WHERE sessions.id = ANY(CAST(:ids AS varchar[])) AND sessions.status = 'active' "
    "RETURNING sessions.id, sessions.last_seq"
).bindparams(bindparam("now", type_=UTCDateTime()))


def insert_reserving_positions(
    connection: Connection, live: list[tuple[object, int]], now: datetime,
    parts: list[tuple[type, list[dict], str | None, object]],
) -> list[list]:
    """``reserve_positions`` for the ``live`` sessions and ``insert_together`` of ``parts``, in one
    statement (PostgreSQL), which is atomic by itself: the webhook runs it in autocommit.

    The last part holds the texts. A text of a live session carries its place among that session's
    new texts (1, 2, ...) as ``seq`` and is stored at the position reserved for it; a text of a new
    session carries its position. The positions' UPDATE runs first, then each part in order, so
    rows are locked in the order the separate statements would lock them. A text whose session was
    deleted meanwhile fails the statement (a foreign key), as does a key a plain part finds taken.
    Returns, per part, the returned values of its rows inserted.
    """
    present = [(index, part) for index, part in enumerate(parts) if part[1]]
    # Live sessions are matched by ``id IN (:id0, :id1, ...)``, one parameter each, up to
    # LISTED_SESSIONS_MAX of them, not by ``id = ANY(:ids)``: PostgreSQL's generic plan for an array
    # assumes ten ids and looks costlier than a plan for the few a batch holds, so it would plan the
    # prepared statement afresh on every execution (measured: 0.1-1.4 ms of planning against 0.3-1.2
    # ms of execution). With one parameter per id, the generic plan's estimate is exact and is kept.
    listed = len(live) if len(live) <= LISTED_SESSIONS_MAX else None
    shape = (listed, *((model, tuple(rows[0]), conflict, returning.key)
                       for _, (model, rows, conflict, returning) in present))
    key = (connection.dialect, shape)  # a DriverStatement holds its dialect's type conversions
    statement = _RESERVING_STATEMENTS.get(key)
    if statement is None:
        statement = _RESERVING_STATEMENTS[key] = DriverStatement(_reserving_statement(shape), connection.dialect)
    changes = {session.id: [count, expires_at(session.created_at, session.expiration_seconds, now,
                                              session.inactivity_seconds)] for session, count in live}
    parameters = {"changes": json.dumps(changes, default=json_value), "now": now}
    if listed is None:
        parameters["ids"] = sorted(changes)
    else:
        parameters.update({f"id{n}": session_id for n, session_id in enumerate(sorted(changes))})
    parameters.update({f"rows{position}": json_rows(model, rows) for position, (_, (model, rows, _, _)) in enumerate(present)})
    inserted: list[list] = [[] for _ in parts]
    for position, value in statement.rows(connection, parameters):
        if position >= 0:  # -1: a session whose positions were reserved
            inserted[present[position][0]].append(value)
    return inserted


_RESERVING_STATEMENTS: dict[tuple, DriverStatement] = {}
# Up to this many live sessions in a batch are listed one parameter each (see insert_reserving_positions):
# a statement per count, prepared on each connection, and batches under load rarely hold more.
LISTED_SESSIONS_MAX = 8
_CHANGE = "CAST(CAST(:changes AS jsonb) -> {id} ->> {field} AS {kind})"


def _reserving_statement(shape: tuple):
    listed, *parts = shape
    if listed is None:
        matched = "sessions.id = ANY(CAST(:ids AS varchar[]))"
    elif listed == 0:
        matched = "false"  # no live session: nothing to reserve
    else:
        matched = "sessions.id IN (" + ", ".join(f"CAST(:id{n} AS varchar)" for n in range(listed)) + ")"
    ctes = [
        "reserved AS (UPDATE sessions SET last_seq = sessions.last_seq + "
        + _CHANGE.format(id="sessions.id", field=0, kind="integer")
        + ", expires_at = " + _CHANGE.format(id="sessions.id", field=1, kind="timestamp")
        + ", last_activity_at = :now, updated_at = :now WHERE "
        + matched
        # With its status: one completed after the lookup fails the statement (see the texts), which
        # undoes this UPDATE too. (Matching on status here instead cost PostgreSQL a quarter more CPU
        # per text to a live session: bench/webhook_path.py, 2026-12-03.)
        + " RETURNING sessions.id, sessions.last_seq, sessions.status)"
    ]
    # The reserved sessions come first in the result, so that their UPDATE runs before the inserts.
    selects = ["SELECT -1 AS part, CAST(reserved.id AS varchar) AS value FROM reserved"]
    last = len(parts) - 1
    for position, (model, columns, conflict, returning) in enumerate(parts):
        table = model.__table__
        names = [column_of(model, key).name for key in columns]
        values = [f'rows."{name}"' for name in names]
        source = f"json_populate_recordset(NULL::{table.name}, CAST(:rows{position} AS json)) AS rows"
        if position == last and model is Message:
            # A new session's text carries its position; a live session's, its place among the
            # session's new texts. A live session completed since the lookup (ended by hand, or
            # expired and swept) gives its texts no position: NOT NULL fails the whole statement,
            # and the webhook stores the batch the careful way, in the conversation's next session.
            change = _CHANGE.format(id="rows.session_id", field=0, kind="integer")
            values[names.index("seq")] = (
                f"CASE WHEN reserved.status = 'active' THEN reserved.last_seq - {change} "
                f'WHEN {change} IS NULL THEN 0 END + rows."seq"')
            source += " LEFT OUTER JOIN reserved ON reserved.id = rows.session_id"
        on_conflict = f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else ""
        returned = column_of(model, returning).name
        ctes.append(f"inserted{position} AS (INSERT INTO {table.name} ({', '.join(names)}) "
                    f"SELECT {', '.join(values)} FROM {source}{on_conflict} RETURNING {table.name}.{returned})")
        selects.append(f"SELECT {position}, CAST(inserted{position}.{returned} AS varchar) FROM inserted{position}")
    return text("WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects)).bindparams(
        bindparam("now", type_=UTCDateTime()))


def new_session_values(conversation: Conversation, now: datetime) -> dict:
    """The row of a conversation's new session, its first positions taken by the conversation's texts."""
    return _new_session(conversation.number, conversation.customer_id, conversation.customer_number, now,
                        conversation.texts)


def created_session(tx: DbSession, new: NewSession, now: datetime) -> Opened:
    """A new session once its row is inserted: in the transaction's identity map, its event written."""
    return Opened(_created(tx, new.values, now), True, new.completed_id, tuple(range(1, new.texts + 1)))


def _new_session(number: PhoneNumber, customer_id: str, customer_number: str, now: datetime, reserve: int) -> dict:
    """The column values of a conversation's new SMS session, with its first ``reserve`` positions taken."""
    return dict(
        id=_new_id(),
        name=customer_number,
        status="active",
        assistant_id=number.assistant_id,
        phone_number_id=number.id,
        customer_id=customer_id,
        active_key=conversation_key(number.id, customer_number),
        expiration_seconds=number.session_expiration_seconds,
        inactivity_seconds=number.session_inactivity_seconds,
        expires_at=expires_at(now, number.session_expiration_seconds, now, number.session_inactivity_seconds),
        last_activity_at=now,
        assistant_overrides={},
        metadata_={},
        cost=0.0,
        engine_state={},
        # A new row is invisible to others until commit: its first positions need no lock.
        last_seq=reserve,
        turn_lease_token=None,
        turn_lease_until=None,
        send_lease_token=None,
        send_lease_until=None,
        completed_at=None,
        created_at=now,
        updated_at=now,
    )


def _created(tx: DbSession, values: dict, now: datetime) -> Session:
    """The session just inserted with ``values``, in the transaction's identity map, its event written."""
    created = as_persistent(tx, Session, values)
    events.session_event(tx, created, "session.created", now)
    return created


def complete(tx: DbSession, session_id: str, now: datetime) -> bool:
    """Mark a session completed; False if it already was. Completed sessions never reopen."""
    return bool(complete_many(tx, [session_id], now))


def complete_many(tx: DbSession, session_ids: list[str], now: datetime) -> list[str]:
    """Complete the sessions that are still active, in one UPDATE; the ids of those it completed.

    Each completed session reports ``session.updated``; only sessions whose
    assistant subscribes to it are read back to build the event. Session
    objects already in the transaction see the new status (the ORM applies
    the UPDATE's values to them).
    """
    if not session_ids:
        return []
    completed = tx.execute(
        update(Session)
        .where(Session.id.in_(session_ids), Session.status == "active")
        .values(status="completed", active_key=None, completed_at=now, updated_at=now)
        .returning(Session.id, Session.assistant_id)
    ).all()
    reported = [session_id for session_id, assistant_id in completed
                if events.subscribes(tx, assistant_id, "session.updated")]
    if reported:
        for session in tx.scalars(select(Session).where(Session.id.in_(reported))
                                  .execution_options(populate_existing=True)):
            events.session_event(tx, session, "session.updated", now)
    return [session_id for session_id, _ in completed]


def next_seqs(tx: DbSession, session: Session, count: int, now: datetime, only_active: bool = False) -> list[int]:
    """Reserve the session's next message positions and record the activity.

    ``session`` is an ORM object or anything with its columns (id, status, created_at and the two
    lifetimes; a turn passes the columns it read). With ``only_active``, for a new text, a session
    completed since it was read takes nothing and raises SessionEnded; replies (the default) still go
    into a session that ended while its turn ran.

    The UPDATE takes the session's row lock until commit, so positions are
    handed out in commit order: a turn can never see position n+1 committed
    while n is still in flight (SPEC 6.3).
    """
    tx.flush()  # as the ORM's UPDATE would: changes made earlier in this transaction go first
    active = session.status == "active"
    new_expiry = expires_at(session.created_at, session.expiration_seconds, now, session.inactivity_seconds)
    if only_active and not active:
        raise SessionEnded(session.id)
    statement = _NEXT_SEQS_IF_ACTIVE if only_active else _NEXT_SEQS[active]
    returned = rows_in(tx, statement, {"session_id": session.id, "count": count, "now": now, "new_expiry": new_expiry})
    if len(returned) != 1:
        if only_active:
            raise SessionEnded(session.id)
        raise NoResultFound(f"session {session.id} is gone")
    last, expiry = returned[0]
    if isinstance(session, Session) and session in tx:  # the loaded object sees the new values, as after the ORM's UPDATE
        changed = {"last_seq": last, "last_activity_at": now, "updated_at": now, "expires_at": expiry}
        for name, value in changed.items():
            set_committed_value(session, name, value)
    return list(range(last - count + 1, last + 1))


def _next_seqs_statement(active: bool, only_active: bool = False):
    sessions = Session.__table__
    values = dict(last_seq=sessions.c.last_seq + bindparam("count"), last_activity_at=bindparam("now"),
                  updated_at=bindparam("now"))
    if active:  # a session still open lives longer with each message; a completed one keeps its end
        # Decided by the row, not by the caller's read: a turn reads its session before the engine call,
        # and the sweep (or an API end) may complete it meanwhile. The reply still goes in, but the
        # completed session must not be given a new expiry (with inactivity set, one in the future).
        values["expires_at"] = case((sessions.c.status == "active", bindparam("new_expiry", type_=UTCDateTime())),
                                    else_=sessions.c.expires_at)
    matched = sessions.c.id == bindparam("session_id")
    if only_active:
        matched = matched & (sessions.c.status == "active")
    return update(sessions).where(matched).values(values).returning(sessions.c.last_seq, sessions.c.expires_at)


# Built once: every text and every reply reserves positions.
_NEXT_SEQS = {active: _next_seqs_statement(active) for active in (True, False)}
_NEXT_SEQS_IF_ACTIVE = _next_seqs_statement(True, only_active=True)


def _new_id() -> str:
    from gateway.db.models import new_id

    return new_id()


def end_session(runtime, session_id: str) -> tuple[Session, bool]:
    """Complete a session by hand; ending a completed one changes nothing. Returns (session, changed)."""
    from gateway.errors import NotFound

    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        session = tx.get(Session, session_id) if session_id else None
        if session is None:
            raise NotFound(f"no session with id {session_id!r}")
        changed = complete(tx, session_id, now)
        tx.refresh(session)
    if changed:
        log.info("event=session.completed session=%s reason=ended", session_id)
    return session, changed
