"""Request bodies of the REST API and the CLI: one set of pydantic models validates both.

Field names are the API's camelCase names (SPEC section 3), so a model's
fields read like the JSON they accept.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.domain.expiry import MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS
from gateway.domain.phone import InvalidNumber, to_e164
from gateway.errors import BadRequest, InvalidField

EVENT_TYPES = (
    "session.created",
    "session.updated",
    "session.deleted",
    "chat.created",
    "chat.deleted",
    "message.status",
)
EventType = Literal[
    "session.created", "session.updated", "session.deleted", "chat.created", "chat.deleted", "message.status"
]
VariableValue = str | int | float | bool | None

URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/$.?#][^\s]*$"
_URL = re.compile(URL_PATTERN)
# What the OpenAPI document promises about a URL field; the validator below enforces it (and the length).
URL_SCHEMA = {"format": "uri", "pattern": URL_PATTERN, "maxLength": 2000}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class EngineConfig(BaseModel):
    """``provider`` plus that provider's own settings (checked by the adapter registry)."""

    model_config = ConfigDict(extra="allow")
    provider: str

    @field_validator("provider")
    @classmethod
    def known_provider(cls, value: str) -> str:
        from adapters import available_providers

        if value not in available_providers():
            raise ValueError(f"unknown provider {value!r}; available: {', '.join(available_providers())}")
        return value

    @model_validator(mode="after")
    def provider_settings(self) -> "EngineConfig":
        from adapters import check_engine_config

        check_engine_config(self.model_dump())
        return self


def _url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > 2000 or not _URL.match(value) or not _reachable_form(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _reachable_form(value: str) -> bool:
    """Whether an HTTP client can even try ``value``: its host and port parse, and the host's name can be
    looked up (IDNA: labels of 1 to 63 characters). Stored otherwise, every request to it (each event
    delivery) would fail before reaching the network, the same way, for ever."""
    try:
        url = httpx.URL(value)
        url.host.encode("idna")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return False
    return bool(url.host) and (url.port is None or 0 < url.port < 65536)


class AssistantFields(Strict):
    engine: EngineConfig | None = None
    firstMessage: str | None = Field(default=None, max_length=1600)
    systemPrompt: str | None = Field(default=None, max_length=100_000)
    variableValues: dict[str, VariableValue] | None = None
    fallbackMessage: str | None = Field(default=None, max_length=1600)
    serverUrl: str | None = Field(default=None, json_schema_extra=URL_SCHEMA,
                                  description="where events are POSTed; empty or null for none")
    serverEvents: list[EventType] | None = None
    serverSecret: str | None = Field(default=None, min_length=16, max_length=200)

    @field_validator("serverUrl")
    @classmethod
    def http_url(cls, value: str | None) -> str | None:
        return _url(value)


class AssistantCreate(AssistantFields):
    name: str = Field(min_length=1, max_length=200)


class AssistantUpdate(AssistantFields):
    name: str | None = Field(default=None, min_length=1, max_length=200)


def _e164(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return to_e164(value)
    except InvalidNumber as error:
        raise ValueError(str(error)) from None


class PhoneNumberFields(Strict):
    name: str | None = Field(default=None, max_length=200)
    assistantId: str | None = Field(default=None, max_length=36)
    sessionExpirationSeconds: int | None = Field(default=None, ge=MIN_EXPIRATION_SECONDS, le=MAX_EXPIRATION_SECONDS)
    sessionInactivitySeconds: int | None = Field(default=None, ge=MIN_EXPIRATION_SECONDS, le=MAX_EXPIRATION_SECONDS)
    helpMessage: str | None = Field(default=None, max_length=1600)
    optOutMessage: str | None = Field(default=None, max_length=1600)
    optInMessage: str | None = Field(default=None, max_length=1600)
    messagesPerSecond: float | None = Field(default=None, ge=0.1, le=1000)
    messagingServiceSid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    mergeBurstSeconds: float | None = Field(default=None, ge=0, le=10)


class PhoneNumberCreate(PhoneNumberFields):
    number: str

    @field_validator("number")
    @classmethod
    def e164(cls, value: str) -> str:
        return _e164(value)


class PhoneNumberUpdate(PhoneNumberFields):
    number: str | None = None

    @field_validator("number")
    @classmethod
    def e164(cls, value: str | None) -> str | None:
        return _e164(value)


class Page(BaseModel):
    """Paging for list routes. Query models ignore parameters they do not know (cache-busters and the like)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=20, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)


# -- sessions and chats (SPEC section 4) ------------------------------------------------------

SessionName = Field(default=None, max_length=40)
Metadata = dict[str, Any]


class AssistantOverrides(Strict):
    """Per-session (or per-chat) changes: variables, and engine settings for engines that take them."""

    variableValues: dict[str, VariableValue] | None = Field(default=None, description="values for {{name}} "
                                                            "placeholders; win over the assistant's")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    maxTokens: int | None = Field(default=None, ge=1, le=1_000_000)


class CustomerIn(Strict):
    number: str | None = Field(default=None, description="E.164, or a form that normalises to it")
    name: str | None = Field(default=None, max_length=200)

    @field_validator("number")
    @classmethod
    def e164(cls, value: str | None) -> str | None:
        return _e164(value)


class SessionCreate(Strict):
    name: str | None = SessionName
    assistantId: str | None = Field(default=None, max_length=36, description="the assistant that answers")
    expirationSeconds: int | None = Field(default=None, ge=MIN_EXPIRATION_SECONDS, le=MAX_EXPIRATION_SECONDS,
                                          description="seconds from creation until the session expires; default 86400")
    assistantOverrides: AssistantOverrides | None = Field(default=None, description="per-session variables and "
                                                          "engine settings")
    customer: CustomerIn | None = None
    phoneNumberId: str | None = Field(default=None, max_length=36)
    metadata: Metadata | None = Field(default=None, description="any JSON object, kept and returned as given")


class SessionUpdate(Strict):
    name: str | None = SessionName
    status: Literal["active", "completed"] | None = None
    expirationSeconds: int | None = Field(default=None, ge=MIN_EXPIRATION_SECONDS, le=MAX_EXPIRATION_SECONDS)
    assistantOverrides: AssistantOverrides | None = None
    metadata: Metadata | None = None


class RequiredCustomer(CustomerIn):
    number: str


class SessionGetOrCreate(Strict):
    assistantId: str = Field(max_length=36)
    customer: RequiredCustomer
    phoneNumberId: str | None = Field(default=None, max_length=36)


class DeleteMany(Strict):
    ids: list[str] = Field(min_length=1, max_length=1000)


class ChatCreate(Strict):
    # One of the two is required: the schema says so with anyOf, the chat service checks it.
    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["sessionId"]}, {"required": ["assistantId"]}]})

    sessionId: str = Field(default=None, min_length=1, max_length=36, description="the session to continue")
    assistantId: str = Field(default=None, min_length=1, max_length=36,
                             description="without sessionId: start a new session with this assistant")
    input: str = Field(min_length=1, max_length=20_000, description="the user's message (not only whitespace)")

    @field_validator("input")
    @classmethod
    def has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain text, not only whitespace")
        return value
    assistantOverrides: AssistantOverrides | None = None


class SessionQuery(Page):
    search: str | None = Field(default=None, max_length=200)
    status: Literal["active", "completed"] | None = None
    assistantId: str | None = Field(default=None, max_length=36)
    phoneNumberId: str | None = Field(default=None, max_length=36)
    customerNumber: str | None = None

    @field_validator("customerNumber")
    @classmethod
    def e164(cls, value: str | None) -> str | None:
        return _e164(value)


class ChatQuery(Page):
    sessionId: str | None = Field(default=None, max_length=36)


MESSAGE_STATUSES = ("received", "processed", "failed", "queued", "sending", "sent", "delivered", "undelivered",
                    "blocked")
MessageStatus = Literal[MESSAGE_STATUSES]  # type: ignore[valid-type]


class MessageQuery(Page):
    sessionId: str | None = Field(default=None, max_length=36)
    status: MessageStatus | None = None


def parse_query(model: type[BaseModel], args) -> Any:
    """Validate query parameters; empty values count as absent (``?search=&status=``)."""
    return parse(model, {name: value for name, value in args.items() if value != ""})


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` against ``model``; the first problem becomes a 422 naming its field."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_field(error) from None


def invalid_field(error: ValidationError) -> InvalidField:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        message = f"{field} is not a known field"
    elif first["type"] == "missing":
        message = f"{field} is required"
    else:
        message = f"{field}: {first['msg'].removeprefix('Value error, ')}"
    return InvalidField(field, message)
