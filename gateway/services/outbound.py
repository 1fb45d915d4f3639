"""Queuing replies and sending them through Twilio, in order, paced (SPEC 6.7, 6.8).

``send_pending`` is the send job. Like the turn job it owns its session's send
lane through a lease, so a session's messages leave one at a time in the
order they were queued, however many workers run. A message is marked as
handed over (``send_started_at``) before the call to Twilio; if the worker
dies during the call, the message is not sent blindly again: the next owner
waits for a status callback and then asks Twilio whether it went out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, case, false, func, insert, or_, select, update
from sqlalchemy.orm import Session as DbSession

from adapters.base import RetryPolicy
from gateway.config import DEFAULT_PORT
from gateway.db.models import Assistant, Customer, Message, OptOut, PhoneNumber, Session, new_id
from gateway.db.ops import LockingSelect, execute_alone, lock_rows, read_rows, rowcount_in, rows_in
from gateway.domain.phone import mask
from gateway.domain.segments import describe, split_body
from gateway.ports import OutboundSms, SendError
from gateway import metrics
from gateway.services import events, optouts
from gateway.services.leases import Lease, work_lane
from gateway.services.sessions import next_seqs

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

log = logging.getLogger("gateway.outbound")

# Forward-only delivery states (SPEC 6.8). Terminal states share the top rank,
# so once a message is delivered, undelivered, failed or blocked it stays so.
STATUS_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3, "blocked": 3}
TWILIO_STATUSES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "partially_delivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
# A wait this short is slept through while holding the lane; longer ones go
# back to the queue as a delayed job, so a burst on one number never keeps
# the workers from other numbers' sessions.
SHORT_WAIT = 0.05
OPT_OUT_CODE = 21610
LOOP_PROTECTION_CODE = 14107
_MESSAGES = Message.__table__
_INSERT_MESSAGES = insert(_MESSAGES)


def queue_replies(
    tx: DbSession, session: Session, texts: list[str], kind: str, chat_id: str | None, now: datetime,
    reply_to_seq: int | None = None, channel: str | None = None,
) -> list[str]:
    """Store reply texts as outbound messages, split into parts of at most 1600 characters.

    ``reply_to_seq`` is the position of the text they answer, kept so engines
    see each reply right after its text (see turns._turn_order).
    """
    parts = [part for text in texts if text and text.strip() for part in split_body(text.strip())]
    if not parts:
        return []
    sms = (channel or ("sms" if session.phone_number_id else "api")) == "sms"
    rows = []
    for seq, part in zip(next_seqs(tx, session, len(parts), now), parts):
        info = describe(part)
        rows.append(dict(
            id=new_id(),
            session_id=session.id,
            seq=seq,
            role="assistant",
            content=part,
            media=[],
            channel="sms" if sms else "api",
            twilio_sid=None,
            status="queued" if sms else "delivered",
            error_code=None,
            error_message=None,
            segments=info.segments,
            encoding=info.encoding,
            chat_id=chat_id,
            kind=kind,
            details={"replyToSeq": reply_to_seq} if reply_to_seq is not None else {},
            attempts=0,
            throttled=0,
            slot_reserved=False,
            created_at=now,
            updated_at=now,
        ))
    # A Core INSERT (one statement for all parts) skips the ORM's unit of work; next_seqs flushed before it.
    # One part, the usual reply, goes on the driver's cursor (rowcount_in); several are one executemany.
    if len(rows) == 1:
        rowcount_in(tx, _INSERT_MESSAGES, rows[0])
    else:
        tx.execute(_INSERT_MESSAGES, rows)
    return [row["id"] for row in rows]


def send_pending(runtime: "Runtime", session_id: str) -> None:
    work_lane(runtime, session_id, "send", "send_pending", _drain, _has_unsent)


def _has_unsent(runtime: "Runtime", session_id: str) -> bool:
    return _next_unsent(runtime, session_id) is not None


def _drain(runtime: "Runtime", lease: Lease) -> float | None:
    """Send due messages in order; returns the delay until the head message is due, if it is not."""
    clock = runtime.clock
    while True:
        message = _next_unsent(runtime, lease.session_id)
        if message is None:
            return None
        now = clock.now()
        if message.next_attempt_at is not None and message.next_attempt_at > now:
            wait = (message.next_attempt_at - now).total_seconds()
            if wait > SHORT_WAIT:
                return wait
            clock.sleep(wait)
        if message.send_started_at is not None:
            _resolve_interrupted(runtime, lease, message)
            continue
        wait, handover = _hand_over(runtime, lease, message)
        if wait is not None:
            if wait > SHORT_WAIT:
                return wait
            # Its slot (now next_attempt_at) comes in a moment: the loop's head waits for it.
            continue
        if handover is not None:
            _send(runtime, lease, message, handover)
        if lease.ran_long():
            return 0.0  # the rest in a fresh job (see leases.LANE_BUDGET_SECONDS)


# Built once, like the other statements the send path runs per message: building a statement costs
# more CPU than running it, and a prebuilt one computes its cache key once.
# The columns the send lane uses, not an ORM object: the lane reads this three times per message.
_NEXT_UNSENT = (
    select(Message.id, Message.session_id, Message.content, Message.media, Message.kind, Message.attempts,
           Message.error_code, Message.error_message, Message.next_attempt_at, Message.slot_reserved,
           Message.send_started_at)
    .where(
        Message.session_id == bindparam("session_id"),
        Message.role == "assistant",
        Message.channel == "sms",
        Message.status == "queued",
        Message.twilio_sid.is_(None),
    )
    .order_by(Message.seq)
    .limit(1)
)
# Where the session's messages go, and whether they may: its numbers, and the customer's opt-out.
_ADDRESSES = (
    select(
        Session.phone_number_id,
        Session.customer_id,
        Session.assistant_id,
        Assistant.server_url,
        Assistant.server_events,
        Customer.number.label("customer_number"),
        select(OptOut.customer_id)
        .where(OptOut.customer_id == Session.customer_id, OptOut.phone_number_id == Session.phone_number_id)
        .exists()
        .label("opted_out"),
    )
    .outerjoin(Customer, Customer.id == Session.customer_id)
    .outerjoin(Assistant, Assistant.id == Session.assistant_id)
    .where(Session.id == bindparam("session_id"))
)
# The sending number; its row is locked while its pace is read and advanced.
_SENDER = LockingSelect(
    select(PhoneNumber.id, PhoneNumber.number, PhoneNumber.messaging_service_sid, PhoneNumber.next_send_at,
           PhoneNumber.messages_per_second)
    .where(PhoneNumber.id == bindparam("number_id"))
)
_NEXT_SEND_AT = update(PhoneNumber.__table__).where(PhoneNumber.__table__.c.id == bindparam("number_id"))
# Handed over only while still unsent: the lane read the message in autocommit, and a status callback
# of an earlier try (which Twilio had after all) may have settled it since.
_HANDED_OVER = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"), _MESSAGES.c.status == "queued", _MESSAGES.c.twilio_sid.is_(None))
    .values(attempts=_MESSAGES.c.attempts + 1)
)
# Twilio took the message. One UPDATE, whose every SET sees the row as it was: the sid unless a
# status callback that beat us here set it already, and an earlier try's error cleared unless such
# a callback reported a delivery failure of this very message.
_FAILED_ALREADY = or_(_MESSAGES.c.status == "undelivered", _MESSAGES.c.status == "failed")  # not IN: see _ADVANCE
_ACCEPTED = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"))
    .values(
        twilio_sid=func.coalesce(_MESSAGES.c.twilio_sid, bindparam("sid")),
        error_code=case((_FAILED_ALREADY, _MESSAGES.c.error_code), else_=None),
        error_message=case((_FAILED_ALREADY, _MESSAGES.c.error_message), else_=None),
    )
)
_SET_BY_ID = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message_id"))  # SET from the parameters' keys


def _next_unsent(runtime: "Runtime", session_id: str):
    """The session's next message to send (a row with _NEXT_UNSENT's columns), or None."""
    found = read_rows(runtime.engine, _NEXT_UNSENT, {"session_id": session_id})
    return found[0] if found else None


@dataclass
class _Handover:
    sms: OutboundSms
    customer_id: str | None
    number_id: str
    assistant: "events.Subscriber"  # whose subscriptions the status changes are checked against


def _hand_over(runtime: "Runtime", lease: Lease, message: Message) -> tuple[float | None, _Handover | None]:
    """Take the message's place in its number's pace and, when that is now, hand it over; one transaction.

    Returns (wait, None) when the slot is still ahead, (None, what to send) when it is handed over, and
    (None, None) when it was failed or blocked instead. The slot is taken once per message
    (``slot_reserved``) under the number's row lock, so concurrent sessions of one number queue behind
    each other instead of racing, and nothing is ever dropped. A message never leaves before its slot;
    waiting is a delayed job, never a sleeping worker, so its precision is the queue's: milliseconds in
    process, whole seconds on RQ (messages whose slots share a second may then leave together at its end).
    """
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        lease.renew(tx)
        addresses = _first(rows_in(tx, _ADDRESSES, {"session_id": message.session_id}))
        number = None
        if addresses is not None and addresses.phone_number_id is not None:
            found = {"number_id": addresses.phone_number_id}
            number = _first(rows_in(tx, _SENDER.plain, found)) if message.slot_reserved else lock_rows(tx, _SENDER, found).first()
        if number is not None and not message.slot_reserved:
            slot = _reserve_slot(tx, runtime, message.session_id, addresses, number, now)
            if slot > now:
                _set(tx, message.id, now, slot_reserved=True, next_attempt_at=slot)
                return (slot - now).total_seconds(), None
        return None, _mark_handed_over(tx, runtime, message, addresses, number, now)


def _reserve_slot(tx: DbSession, runtime: "Runtime", session_id: str, addresses, number, now: datetime) -> datetime:
    """The moment the session's next message may leave: its number's next free slot, which it then takes."""
    slot = max(now, number.next_send_at) if number.next_send_at is not None else now
    rowcount_in(tx, _NEXT_SEND_AT, {"number_id": number.id,
                                    "next_send_at": slot + timedelta(seconds=1.0 / number.messages_per_second)})
    # Loop protection holds this conversation only, not the number's pace.
    return _after_loop_protection(tx, runtime, session_id, addresses, slot)


# The latest replies from one number to one customer, over all their sessions.
_RECENT_SENDS = (
    select(Message.sent_at)
    .join(Session, Session.id == Message.session_id)
    .where(
        Session.phone_number_id == bindparam("number_id"),
        Session.customer_id == bindparam("customer_id"),
        Message.role == "assistant",
        Message.sent_at.is_not(None),
    )
    .order_by(Message.sent_at.desc())
    .limit(bindparam("limit"))
)


def _after_loop_protection(tx: DbSession, runtime: "Runtime", session_id: str, addresses, slot: datetime) -> datetime:
    """Hold the slot back when it would be one reply too many in a fast exchange (Twilio error 14107).

    Twilio blocks a pair of numbers for 30 s after more than 30 replies, each
    under 30 s after the one before. When the last ``loop_replies`` replies to
    this customer from this number form such a run, the next waits until
    ``loop_window`` seconds after the last; it is queued, never dropped.
    """
    limit, window = runtime.settings.loop_replies, timedelta(seconds=runtime.settings.loop_window)
    recent = [row[0] for row in rows_in(tx, _RECENT_SENDS, {"number_id": addresses.phone_number_id,
                                                            "customer_id": addresses.customer_id, "limit": limit})]
    if len(recent) < limit or slot - recent[0] >= window:
        return slot
    if all(newer - older < window for newer, older in zip(recent, recent[1:])):
        log.info("event=send.loop_protection session=%s wait_until=%s", session_id, (recent[0] + window).isoformat())
        return recent[0] + window
    return slot


def _mark_handed_over(tx: DbSession, runtime: "Runtime", message: Message, addresses, number,
                      now: datetime) -> _Handover | None:
    """Checks that the message may go, and marks it handed over; None if it was failed or blocked instead."""
    if number is None or addresses.customer_number is None:
        _set_failed(tx, message.id, None, "the session's phone number no longer exists", now)
        return None
    if message.kind != "opt_out" and addresses.opted_out:
        _set(tx, message.id, now, status="blocked", error_message="customer opted out")
        log.info("event=send.blocked message=%s session=%s", message.id, message.session_id)
        return None
    # Handed over: from here on a crash leaves an unknown outcome. The next
    # owner of the lane waits until the lease is surely gone (next_attempt_at)
    # and then asks Twilio before sending again (_resolve_interrupted).
    settle_at = now + timedelta(seconds=runtime.settings.lease_seconds)
    if rowcount_in(tx, _HANDED_OVER, {"message_id": message.id, "slot_reserved": True, "send_started_at": now,
                                      "next_attempt_at": settle_at, "updated_at": now}) != 1:
        log.info("event=send.settled_meanwhile message=%s session=%s", message.id, message.session_id)
        return None
    sms = OutboundSms(
        message_id=message.id,
        to=addresses.customer_number,
        from_=number.number,
        messaging_service_sid=number.messaging_service_sid,
        body=message.content,
        media_urls=tuple(m["url"] for m in (message.media or [])),
        status_callback=status_callback_url(runtime, message.id),
    )
    return _Handover(sms, addresses.customer_id, number.id, events.Subscriber.of(addresses))


def _send(runtime: "Runtime", lease: Lease, message: Message, handover: _Handover) -> None:
    try:
        receipt = runtime.sender.send(handover.sms)
    except SendError as error:
        _after_error(runtime, lease, message, error, handover.customer_id, handover.number_id)
        return
    with runtime.db.begin() as tx:
        now = runtime.clock.now()
        events.known_assistant_of(tx, message.id, handover.assistant)
        rowcount_in(tx, _ACCEPTED, {"message_id": message.id, "sid": receipt.sid, "sent_at": now, "updated_at": now})
        _advance(tx, message.id, "sending", None, now)
        reported = TWILIO_STATUSES.get(receipt.status)
        if reported is not None and STATUS_RANK[reported] > STATUS_RANK["sending"]:  # Twilio mostly says "queued"
            _advance(tx, message.id, reported, None, now)
    log.info(
        "event=send.accepted message=%s session=%s sid=%s to=%s sender=%s",
        message.id, message.session_id, receipt.sid, mask(handover.sms.to), runtime.sender.name,
    )


def _after_error(runtime, lease, message: Message, error: SendError, customer_id, number_id) -> None:
    now = runtime.clock.now()
    settings = runtime.settings
    with runtime.db.begin() as tx:
        lease.renew(tx)
        current = _still_unsent(tx, message)
        if current is None:
            # Twilio took this try after all (a timeout or 5xx lost only its answer): this error must neither
            # overwrite a delivery's error code nor leave a delivered message showing an error.
            return
        if not error.transient:
            _set_failed(tx, message.id, error.code, error.reason, now)
            if error.code == OPT_OUT_CODE and customer_id:
                optouts.opt_out(tx, customer_id, number_id, "twilio_21610", now)
            log.warning("event=send.failed message=%s code=%s reason=%s", message.id, error.code, error.reason)
            return
        policy = RetryPolicy(settings.send_tries, settings.send_retry_delay, settings.send_retry_cap)
        attempts, throttled = current.attempts, current.throttled
        loop_blocked = error.code == LOOP_PROTECTION_CODE
        if error.throttled or loop_blocked:
            # Twilio refused without processing (429, or 14107 loop protection):
            # give the try back to the budget; the message waits, it is not dropped.
            attempts -= 1
            throttled += 1
        elif attempts >= policy.tries and not error.maybe_sent:
            _set_failed(tx, message.id, error.code, f"gave up after {attempts} tries: {error.reason}", now)
            log.warning("event=send.failed message=%s code=%s reason=%s", message.id, error.code, error.reason)
            return
        delay = policy.delay(max(1, throttled if error.throttled else attempts))
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if loop_blocked:
            delay = max(delay, settings.loop_window)  # Twilio's block lasts the loop window
        _set(
            tx, message.id, now,
            attempts=attempts, throttled=throttled, slot_reserved=False,
            # A maybe-sent message keeps send_started_at: before trying again the
            # lane asks Twilio whether it has it (_resolve_interrupted).
            send_started_at=current.send_started_at if error.maybe_sent else None,
            next_attempt_at=now + timedelta(seconds=delay), error_code=error.code, error_message=error.reason,
        )
    log.info("event=send.retry message=%s in=%.2fs reason=%s", message.id, delay, error.reason)


def _resolve_interrupted(runtime: "Runtime", lease: Lease, message: Message) -> None:
    """An earlier try of this message may have reached Twilio: a worker died during the call, or it
    timed out or got a 5xx. Sent or not?

    A status callback carries our message id and settles it by itself (the
    message then has a sid and is no longer picked up here). Otherwise, once
    ``next_attempt_at`` has passed (the lease period for a dead worker, the
    backoff for an error), Twilio is asked; only if it has no record of the
    message is it sent again, within the retry budget. If Twilio cannot be
    asked, we ask again later.
    """
    now = runtime.clock.now()
    try:
        found = _ask_sender(runtime, message)
    except SendError as error:
        with runtime.db.begin() as tx:
            lease.renew(tx)
            _set(tx, message.id, now, next_attempt_at=now + timedelta(seconds=runtime.settings.send_retry_delay))
        log.warning("event=send.lookup_failed message=%s reason=%s", message.id, error.reason)
        return
    with runtime.db.begin() as tx:
        lease.renew(tx)
        if _still_unsent(tx, message) is None:
            # Its callbacks came while Twilio was asked (its list can lag behind them): giving it up now
            # would turn a delivered message into a failed one.
            return
        if found is not None:
            tx.execute(
                update(Message).where(Message.id == message.id, Message.twilio_sid.is_(None)).values(twilio_sid=found.sid)
            )
            _set(tx, message.id, now, sent_at=message.send_started_at, error_code=None, error_message=None)
            _advance(tx, message.id, "sending", None, now)
            _advance(tx, message.id, TWILIO_STATUSES.get(found.status, "sending"), None, now)
            log.info("event=send.recovered message=%s sid=%s", message.id, found.sid)
        elif message.attempts >= runtime.settings.send_tries:
            reason = message.error_message or "the send was interrupted"
            _set_failed(tx, message.id, message.error_code, f"gave up after {message.attempts} tries: {reason}", now)
            log.warning("event=send.failed message=%s reason=%s", message.id, reason)
        else:
            # Sent again as a new message: it takes its place in the number's pace and passes loop
            # protection again, as its first try did.
            _set(tx, message.id, now, send_started_at=None, next_attempt_at=None, slot_reserved=False)
            log.info("event=send.resend message=%s reason=no record at Twilio", message.id)


def _still_unsent(tx: DbSession, message) -> Message | None:
    """The message, locked, if Twilio has still not been known to take it; None (and logged) when a status
    callback, which carries our id, gave it a sid or moved it past queued since the lane read it: the
    callbacks' outcome stands. Locked on PostgreSQL; on SQLite the lease renewal before this already holds
    the writer lock. So no callback settles it between this read and the caller's write."""
    current = tx.get(Message, message.id, with_for_update=True)
    if current is not None and current.twilio_sid is None and current.status == "queued":
        return current
    log.info("event=send.settled_meanwhile message=%s session=%s", message.id, message.session_id)
    return None


def _ask_sender(runtime: "Runtime", message: Message):
    """Ask the sender for a record of this message; None when it has none (or cannot keep records).

    A record is a message from this one's number (or messaging service) to its customer with its body,
    created since its first try was handed over, whose sid no message of the gateway's holds yet: the
    same customer may have had the same words (a fallback, a help text) from another number, another
    session, or this one before.
    """
    finder = getattr(runtime.sender, "find_sent", None)
    if finder is None:
        return None  # the sandbox keeps no records beyond the database
    with runtime.db.begin() as tx:
        addresses = _first(rows_in(tx, _ADDRESSES, {"session_id": message.session_id}))
        number = None
        if addresses is not None and addresses.phone_number_id is not None:
            number = _first(rows_in(tx, _SENDER.plain, {"number_id": addresses.phone_number_id}))
    if number is None or addresses.customer_number is None:
        return None  # nothing was sent from a number that no longer exists: the hand-over fails it
    sms = OutboundSms(message_id=message.id, to=addresses.customer_number, from_=number.number,
                      messaging_service_sid=number.messaging_service_sid, body=message.content, media_urls=(),
                      status_callback=None)
    candidates = finder(sms, message.send_started_at - timedelta(minutes=1))  # a minute for clocks that differ
    if not candidates:
        return None
    with runtime.db.begin() as tx:
        known = set(tx.scalars(select(Message.twilio_sid).where(Message.twilio_sid.in_([c.sid for c in candidates]))))
    return next((candidate for candidate in candidates if candidate.sid not in known), None)


# What a status callback needs of its message, found by our id or by Twilio's sid.
_CALLBACK = (
    select(Message.id, Message.role, Message.session_id, Message.twilio_sid, Session.assistant_id,
           Assistant.server_url, Assistant.server_events)
    .join(Session, Session.id == Message.session_id)
    .outerjoin(Assistant, Assistant.id == Session.assistant_id)
)
_CALLBACK_BY_ID = _CALLBACK.where(Message.id == bindparam("message_id"))
_CALLBACK_BY_SID = _CALLBACK.where(Message.twilio_sid == bindparam("sid"))
# A callback that names a sid the message lacks: Twilio took it, so it counts as sent from its hand-over
# (loop protection counts sent replies), also when the worker that sent it died before the answer.
_SID_IF_NONE = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"), _MESSAGES.c.twilio_sid.is_(None))
    .values(twilio_sid=bindparam("sid"), sent_at=func.coalesce(_MESSAGES.c.sent_at, _MESSAGES.c.send_started_at))
)


def apply_status(runtime: "Runtime", message_id: str | None, sid: str | None, twilio_status: str, error_code) -> bool:
    """A delivery status callback: move the message forward, never back. False if unknown."""
    status = TWILIO_STATUSES.get((twilio_status or "").lower())
    now = runtime.clock.now()
    if runtime.engine.dialect.name == "postgresql":
        applied = _apply_alone(runtime, message_id, sid, status, _int(error_code), now)
        if applied is not None:
            return applied
    with runtime.db.begin() as tx:
        message = tx.execute(_CALLBACK_BY_ID, {"message_id": message_id}).first() if message_id else None
        if message is None and sid:
            message = tx.execute(_CALLBACK_BY_SID, {"sid": sid}).first()
        if message is None or message.role != "assistant":
            return False
        events.known_assistant_of(tx, message.id, events.Subscriber.of(message))
        if sid and message.twilio_sid is None:
            tx.execute(_SID_IF_NONE, {"message_id": message.id, "sid": sid})
        if status is not None:
            code = _int(error_code)
            _advance(tx, message.id, status, code, now)
            if code == OPT_OUT_CODE:
                session = tx.get(Session, message.session_id)
                if session.customer_id and session.phone_number_id:
                    optouts.opt_out(tx, session.customer_id, session.phone_number_id, "twilio_21610", now)
    return True


def _apply_alone(runtime: "Runtime", message_id: str | None, sid: str | None, status: str | None,
                 code: int | None, now: datetime) -> bool | None:
    """PostgreSQL: a callback that writes nothing but the message's row, as autocommit statements: no
    BEGIN or COMMIT round trips (callbacks come two or three per reply). None when it needs the
    transaction: its assistant takes message.status events (written with the change) or Twilio
    reports the customer opted out (recorded with it).

    Each statement is safe alone: the sid is set only where none is, the status only moves forward.
    The subscription is read with the message, as the transaction's own read would have seen it.
    """
    found = read_rows(runtime.engine, _CALLBACK_BY_ID, {"message_id": message_id}) if message_id else []
    if not found and sid:
        found = read_rows(runtime.engine, _CALLBACK_BY_SID, {"sid": sid})
    if not found or found[0].role != "assistant":
        return False
    message = found[0]
    if code == OPT_OUT_CODE or "message.status" in events.Subscriber.of(message).event_types:
        return None
    if sid and message.twilio_sid is None:
        execute_alone(runtime.engine, _SID_IF_NONE, {"message_id": message.id, "sid": sid})
    if status is not None and execute_alone(runtime.engine, _ADVANCE[status], _advance_values(message.id, status, code, now)):
        metrics.message_status(status)
    return True


# One conditional UPDATE per target status: it moves only messages whose status ranks below it. The
# lower statuses are compared one by one, not by IN: SQLAlchemy renders an IN list at execution time,
# which keeps the statement off the driver's cursor (see gateway.db.ops.execute_alone).
_ADVANCE = {
    status: update(_MESSAGES).where(
        _MESSAGES.c.id == bindparam("message_id"),
        or_(false(), *(_MESSAGES.c.status == name for name, rank in STATUS_RANK.items() if rank < STATUS_RANK[status])),
    )
    for status in STATUS_RANK
}


def _advance_values(message_id: str, status: str, error_code: int | None, now: datetime) -> dict:
    """_ADVANCE's parameters: the columns it sets (the statement SETs what it is given)."""
    values: dict = {"message_id": message_id, "status": status, "updated_at": now}
    if error_code is not None:
        values["error_code"] = error_code
    elif status in ("sent", "delivered"):
        # This message got through: an earlier try's error (a 14107, a 429) is history now. The send
        # path clears it too, but a callback may come first and a message must not show "sent" with it.
        values.update(error_code=None, error_message=None)
    return values


def _advance(tx: DbSession, message_id: str, status: str, error_code: int | None, now: datetime) -> None:
    """Set ``status`` only if it ranks above the current one: one conditional UPDATE, race-free."""
    if rowcount_in(tx, _ADVANCE[status], _advance_values(message_id, status, error_code, now)):
        events.message_status_event(tx, message_id, now)
        metrics.message_status(status)


def _set(tx: DbSession, message_id: str, now: datetime, **values) -> None:
    tx.execute(_SET_BY_ID, {"message_id": message_id, "updated_at": now, **values})
    if "status" in values:
        events.message_status_event(tx, message_id, now)
        metrics.message_status(values["status"])


def _set_failed(tx: DbSession, message_id: str, code: int | None, reason: str, now: datetime) -> None:
    _set(tx, message_id, now, status="failed", error_code=code, error_message=reason, next_attempt_at=None)


def status_callback_url(runtime: "Runtime", message_id: str) -> str:
    base = (runtime.settings.public_url or f"http://localhost:{DEFAULT_PORT}").rstrip("/")
    return f"{base}/twilio/status?messageId={message_id}"


def _first(rows: list):
    return rows[0] if rows else None


# error_code is an INTEGER column: a larger "code" would fail the callback's UPDATE with a 500.
_MAX_ERROR_CODE = 2**31 - 1


def _int(value) -> int | None:
    """A status callback's ErrorCode; None when it is missing or is not a code (a number the column holds)."""
    try:
        code = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return code if code is None or 0 <= code <= _MAX_ERROR_CODE else None
