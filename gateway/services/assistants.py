"""Creating, changing and removing assistants."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from gateway.db.models import Assistant, new_id
from gateway.errors import NotFound
from gateway.domain.secrets import unmask

if TYPE_CHECKING:
    # The schemas (pydantic) are for annotations and defaults only: listing or removing assistants (CLI)
    # needs no pydantic.
    from gateway.bootstrap import Runtime
    from gateway.schemas import AssistantCreate, AssistantUpdate

DEFAULT_ENGINE = {"provider": "faq"}

# API field -> model column, for the fields copied as they are.
COLUMNS = {
    "name": "name",
    "firstMessage": "first_message",
    "systemPrompt": "system_prompt",
    "variableValues": "variable_values",
    "fallbackMessage": "fallback_message",
    "serverUrl": "server_url",
    "serverEvents": "server_events",
    "serverSecret": "server_secret",
}


def create_assistant(runtime: "Runtime", data: AssistantCreate) -> Assistant:
    now = runtime.clock.now()
    assistant = Assistant(
        id=new_id(),
        name=data.name,
        engine=data.engine.model_dump() if data.engine else dict(DEFAULT_ENGINE),
        first_message=data.firstMessage,
        system_prompt=data.systemPrompt,
        variable_values=data.variableValues or {},
        fallback_message=data.fallbackMessage,
        server_url=data.serverUrl,
        server_events=list(data.serverEvents) if data.serverEvents is not None else _defaults()["serverEvents"],
        server_secret=data.serverSecret or secrets.token_hex(32),
        created_at=now,
        updated_at=now,
    )
    with runtime.db.begin() as tx:
        tx.add(assistant)
    return assistant


def update_assistant(runtime: "Runtime", assistant_id: str, data: AssistantUpdate) -> Assistant:
    given = data.model_fields_set
    with runtime.db.begin() as tx:
        assistant = _get(tx, assistant_id)
        for field, column in COLUMNS.items():
            if field not in given:
                continue
            value = getattr(data, field)
            if value is None:
                if field in ("name", "serverSecret"):
                    continue  # required: null leaves them as they are
                value = _defaults().get(field)  # null resets lists and maps to their default
            setattr(assistant, column, value)
        if "engine" in given and data.engine is not None:
            assistant.engine = unmask(assistant.engine or {}, data.engine.model_dump())
        assistant.updated_at = runtime.clock.now()
    return assistant


def _defaults() -> dict:
    from gateway.schemas import EVENT_TYPES

    return {"variableValues": {}, "serverEvents": list(EVENT_TYPES)}


def delete_assistant(runtime: "Runtime", assistant_id: str) -> None:
    with runtime.db.begin() as tx:
        tx.delete(_get(tx, assistant_id))


def get_assistant(runtime: "Runtime", assistant_id: str) -> Assistant:
    with runtime.db.begin() as tx:
        return _get(tx, assistant_id)


def list_assistants(runtime: "Runtime", limit: int, offset: int) -> tuple[list[Assistant], int]:
    with runtime.db.begin() as tx:
        total = tx.scalar(select(func.count()).select_from(Assistant))
        rows = list(tx.scalars(select(Assistant).order_by(Assistant.created_at.desc(), Assistant.id).limit(limit).offset(offset)))
    return rows, total


def _get(tx, assistant_id: str) -> Assistant:
    assistant = tx.get(Assistant, assistant_id) if assistant_id else None
    if assistant is None:
        raise NotFound(f"no assistant with id {assistant_id!r}")
    return assistant
