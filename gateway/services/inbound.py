"""Accepting an inbound text from Twilio's webhook (SPEC section 5).

The webhook's whole job: parse, store the text and its session in one
transaction, enqueue the turn, answer. Engine and send work happen in jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from sqlalchemy import Select, bindparam, select

from gateway.db.models import Assistant, Customer, Message, PhoneNumber, Session, new_id
from gateway.db.ops import insert_or_ignore
from gateway.domain.phone import InvalidNumber, mask, to_e164
from gateway.errors import BadRequest
from gateway.services.sessions import ensure_customer, open_sms_session

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


class _Duplicate(Exception):
    pass


def accept_inbound(runtime: "Runtime", sms: InboundSms) -> Accepted:
    try:
        with runtime.db.begin() as tx:
            found = _look_up(tx, sms)
            if found is None:
                log.info("event=webhook.unknown_number to=%s sid=%s", mask(sms.to), sms.sid)
                return Accepted("unknown_number")
            # A cheap read first so that a redelivered text never touches its
            # session (it could otherwise complete an expired one); the
            # atomic check is the ON CONFLICT insert below.
            if found.duplicate_id is not None:
                raise _Duplicate
            now = runtime.clock.now()
            customer_id = found.customer_id or ensure_customer(tx, sms.from_, now)
            opened = open_sms_session(tx, found.number, customer_id, sms.from_, now, active=found.session, reserve=1)
            message_id = insert_or_ignore(
                tx,
                Message,
                dict(
                    id=new_id(),
                    session_id=opened.session.id,
                    seq=opened.seqs[0],
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
                ),
                "twilio_sid",
                Message.id,
            )
            if message_id is None:
                raise _Duplicate  # rolls back the session work of this request too
    except _Duplicate:
        log.info("event=webhook.duplicate sid=%s", sms.sid)
        return Accepted("duplicate")

    session_id = opened.session.id
    log.info(
        "event=webhook.stored message=%s session=%s from=%s to=%s new_session=%s",
        message_id, session_id, mask(sms.from_), mask(sms.to), opened.created,
    )
    if opened.completed_id:
        log.info("event=session.completed session=%s reason=expired", opened.completed_id)
    runtime.enqueue("process_turns", session_id)
    return Accepted("stored", message_id, session_id, opened.created)


@dataclass(frozen=True)
class _Found:
    number: PhoneNumber
    # Held so that it stays in the transaction's identity map (a weak one),
    # where event checks find it without a query of their own.
    assistant: Assistant | None
    session: Session | None  # the conversation's active session, expired or not
    customer_id: str | None
    duplicate_id: str | None  # an earlier message with this MessageSid


def _look_up(tx, sms: InboundSms) -> _Found | None:
    """Everything the webhook reads, in one query: the number (by To, else by
    MessagingServiceSid) with its assistant, the conversation's active session,
    the customer and whether the MessageSid was seen before."""
    row = tx.execute(_LOOKUP_BY_NUMBER, {"to": sms.to, "customer": sms.from_, "sid": sms.sid}).first()
    if row is None and sms.messaging_service_sid:
        row = tx.execute(
            _LOOKUP_BY_SERVICE, {"service": sms.messaging_service_sid, "customer": sms.from_, "sid": sms.sid}
        ).first()
    if row is None:
        return None
    return _Found(*row)


def _lookup(number_matches) -> Select:
    customer = bindparam("customer")
    return (
        select(
            PhoneNumber,
            Assistant,
            Session,
            select(Customer.id).where(Customer.number == customer).scalar_subquery(),
            select(Message.id).where(Message.twilio_sid == bindparam("sid")).scalar_subquery(),
        )
        .outerjoin(Assistant, Assistant.id == PhoneNumber.assistant_id)
        .outerjoin(Session, Session.active_key == PhoneNumber.id + ":" + customer)
        .where(number_matches)
    )


# Built once: a reused statement keeps its compiled form.
_LOOKUP_BY_NUMBER = _lookup(PhoneNumber.number == bindparam("to"))
_LOOKUP_BY_SERVICE = _lookup(PhoneNumber.messaging_service_sid == bindparam("service"))
