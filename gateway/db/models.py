"""SQLAlchemy 2 models. The Alembic migrations in ``migrations/`` create exactly this schema.

Columns that enforce a guarantee of SPEC section 6 say so where they are declared.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zones, so values are stored as naive UTC and given
    their zone back on the way out; PostgreSQL stores them as ``timestamp``.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Assistant(Base):
    __tablename__ = "assistants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    engine: Mapped[dict] = mapped_column(JSON, default=dict)
    first_message: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    variable_values: Mapped[dict] = mapped_column(JSON, default=dict)
    fallback_message: Mapped[str | None] = mapped_column(Text)
    server_url: Mapped[str | None] = mapped_column(String(2000))
    server_events: Mapped[list] = mapped_column(JSON, default=list)
    server_secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PhoneNumber(Base):
    __tablename__ = "phone_numbers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    assistant_id: Mapped[str | None] = mapped_column(ForeignKey("assistants.id", ondelete="SET NULL"))
    session_expiration_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    session_inactivity_seconds: Mapped[int | None] = mapped_column(Integer)
    help_message: Mapped[str | None] = mapped_column(Text)
    opt_out_message: Mapped[str | None] = mapped_column(Text)
    opt_in_message: Mapped[str | None] = mapped_column(Text)
    messages_per_second: Mapped[float] = mapped_column(Float, default=1.0)
    messaging_service_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    merge_burst_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Pacing (SPEC 6.7): the earliest moment the next outbound message of this
    # number may leave; senders reserve slots by advancing it under a row lock.
    next_send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OptOut(Base):
    """A row means the customer opted out of that business number (SPEC 6.9)."""

    __tablename__ = "opt_outs"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    phone_number_id: Mapped[str] = mapped_column(ForeignKey("phone_numbers.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_status_expires_at", "status", "expires_at"),
        Index("ix_sessions_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="active")
    assistant_id: Mapped[str | None] = mapped_column(ForeignKey("assistants.id", ondelete="SET NULL"), index=True)
    phone_number_id: Mapped[str | None] = mapped_column(ForeignKey("phone_numbers.id", ondelete="SET NULL"), index=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    # One active session per conversation (SPEC 6.1): "<phone number id>:<customer E.164>"
    # while active, NULL once completed. NULLs never collide, so the unique
    # constraint admits any number of completed sessions and exactly one active one.
    active_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    expiration_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    inactivity_seconds: Mapped[int | None] = mapped_column(Integer)
    # The effective expiry: the earlier of creation + expiration and last
    # activity + inactivity. Kept current so the sweep is one indexed range scan.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assistant_overrides: Mapped[dict] = mapped_column(JSON, default=dict)
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    engine_state: Mapped[dict] = mapped_column(JSON, default=dict)
    # Per-session message counter: every message takes the next value under the
    # session's row lock, so seq order is commit order (SPEC 6.3).
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Leases: the worker that holds one owns the session's turn lane or send
    # lane until it expires; a dead worker's lease simply runs out (SPEC 6.4).
    turn_lease_token: Mapped[str | None] = mapped_column(String(36))
    turn_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    send_lease_token: Mapped[str | None] = mapped_column(String(36))
    send_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("session_id", "seq"),
        Index("ix_messages_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list] = mapped_column(JSON, default=list)
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    # Inbound: Twilio's MessageSid; the unique constraint is the atomic
    # duplicate check of SPEC 6.4. Outbound: the sid Twilio gave this part.
    twilio_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None] = mapped_column(Integer)
    encoding: Mapped[str | None] = mapped_column(String(8))
    chat_id: Mapped[str | None] = mapped_column(String(36))
    # Why an outbound message exists: "reply", "fallback", "help", "opt_out",
    # "opt_in" or "first". Only "opt_out" may reach an opted-out customer.
    kind: Mapped[str | None] = mapped_column(String(16))
    # Channel extras worth keeping: Twilio's OptOutType, NumSegments, From city...
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    # Outbound delivery bookkeeping.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    slot_reserved: Mapped[bool] = mapped_column(Boolean, default=False)
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When Twilio accepted it: the loop-protection pacing (error 14107) counts these.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Chat(Base):
    __tablename__ = "chats"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    input: Mapped[str] = mapped_column(Text, default="")
    output: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    engine: Mapped[str | None] = mapped_column(String(20))
    engine_ms: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the key: keys are 256-bit random strings, so a fast hash is
    # enough and lets every request look its key up by an index.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    """Outbox of lifecycle events (SPEC 6.11).

    Written in the same transaction as the change it reports, so an event
    exists exactly when its change does; delivered by jobs, retried with the
    same id, at least once.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    assistant_id: Mapped[str | None] = mapped_column(ForeignKey("assistants.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
