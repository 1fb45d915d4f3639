"""Creating, changing and removing business phone numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from gateway.db.models import Assistant, PhoneNumber, new_id
from gateway.errors import Conflict, InvalidField, NotFound

if TYPE_CHECKING:
    # Annotations only: listing or removing numbers (CLI) needs no pydantic.
    from gateway.bootstrap import Runtime
    from gateway.schemas import PhoneNumberCreate, PhoneNumberUpdate

DEFAULTS = {
    "sessionExpirationSeconds": 86400,
    "messagesPerSecond": 1.0,
    "mergeBurstSeconds": 0.0,
}
COLUMNS = {
    "number": "number",
    "name": "name",
    "assistantId": "assistant_id",
    "sessionExpirationSeconds": "session_expiration_seconds",
    "sessionInactivitySeconds": "session_inactivity_seconds",
    "helpMessage": "help_message",
    "optOutMessage": "opt_out_message",
    "optInMessage": "opt_in_message",
    "messagesPerSecond": "messages_per_second",
    "messagingServiceSid": "messaging_service_sid",
    "mergeBurstSeconds": "merge_burst_seconds",
}
REQUIRED = ("number", "sessionExpirationSeconds", "messagesPerSecond", "mergeBurstSeconds")


def create_phone_number(runtime: "Runtime", data: PhoneNumberCreate) -> PhoneNumber:
    now = runtime.clock.now()
    number = PhoneNumber(id=new_id(), created_at=now, updated_at=now)
    defaults = dict(DEFAULTS, sessionExpirationSeconds=runtime.settings.session_expiration)
    for field, column in COLUMNS.items():
        value = getattr(data, field)
        setattr(number, column, defaults.get(field) if value is None else value)
    with _saving(runtime) as tx:
        _check_assistant(tx, number.assistant_id)
        tx.add(number)
    return number


def update_phone_number(runtime: "Runtime", number_id: str, data: PhoneNumberUpdate) -> PhoneNumber:
    with _saving(runtime) as tx:
        number = _get(tx, number_id)
        if "assistantId" in data.model_fields_set:
            _check_assistant(tx, data.assistantId)  # before any change is flushed
        for field in data.model_fields_set:
            value = getattr(data, field)
            if value is None and field in REQUIRED:
                raise InvalidField(field, f"{field} cannot be null")
            setattr(number, COLUMNS[field], value)
        number.updated_at = runtime.clock.now()
    return number


def delete_phone_number(runtime: "Runtime", number_id: str) -> None:
    with runtime.db.begin() as tx:
        tx.delete(_get(tx, number_id))


def get_phone_number(runtime: "Runtime", number_id: str) -> PhoneNumber:
    with runtime.db.begin() as tx:
        return _get(tx, number_id)


def list_phone_numbers(runtime: "Runtime", limit: int, offset: int) -> tuple[list[PhoneNumber], int]:
    with runtime.db.begin() as tx:
        total = tx.scalar(select(func.count()).select_from(PhoneNumber))
        rows = list(
            tx.scalars(select(PhoneNumber).order_by(PhoneNumber.created_at.desc(), PhoneNumber.id).limit(limit).offset(offset))
        )
    return rows, total


class _saving:
    """A write transaction that turns unique-constraint clashes into 409s."""

    def __init__(self, runtime: "Runtime"):
        self.context = runtime.db.begin()

    def __enter__(self):
        return self.context.__enter__()

    def __exit__(self, kind, error, traceback):
        try:
            return self.context.__exit__(kind, error, traceback)
        except IntegrityError as clash:
            detail = str(clash.orig).lower()
            field = "messagingServiceSid" if "messaging_service_sid" in detail else "number"
            raise Conflict(f"a phone number with this {field} already exists", {"field": field}) from None


def _check_assistant(tx, assistant_id: str | None) -> None:
    if assistant_id is not None and tx.get(Assistant, assistant_id) is None:
        raise InvalidField("assistantId", f"no assistant with id {assistant_id!r}")


def _get(tx, number_id: str) -> PhoneNumber:
    number = tx.get(PhoneNumber, number_id) if number_id else None
    if number is None:
        raise NotFound(f"no phone number with id {number_id!r}")
    return number
