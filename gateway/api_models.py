"""Response bodies of the REST API as pydantic models.

gateway.views builds the JSON; these models describe it for the OpenAPI
document (and the schemathesis run checks every response against them), so a
view and its model must change together. Request bodies live in
gateway.schemas and are the very models that validate requests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas import EventType, MessageStatus, VariableValue

Timestamp = Field(description="ISO 8601 UTC timestamp, e.g. 2026-11-23T10:00:00.000Z")


class Out(BaseModel):
    # Responses carry exactly these fields; a view that grows one must grow its model too.
    model_config = ConfigDict(extra="forbid")


class MediaOut(Out):
    url: str
    contentType: str | None


class AssistantOut(Out):
    id: str
    name: str
    engine: dict[str, Any] = Field(description="provider and its settings; credentials are masked (****1234)")
    firstMessage: str | None
    systemPrompt: str | None
    variableValues: dict[str, VariableValue]
    fallbackMessage: str | None
    serverUrl: str | None
    serverEvents: list[EventType]
    serverSecret: str | None = Field(description="HMAC key of X-Gateway-Signature on events")
    createdAt: str = Timestamp
    updatedAt: str = Timestamp


class PhoneNumberOut(Out):
    id: str
    number: str = Field(description="E.164")
    name: str | None
    assistantId: str | None
    sessionExpirationSeconds: int
    sessionInactivitySeconds: int | None
    helpMessage: str | None
    optOutMessage: str | None
    optInMessage: str | None
    messagesPerSecond: float
    messagingServiceSid: str | None
    mergeBurstSeconds: float
    createdAt: str = Timestamp
    updatedAt: str = Timestamp


class CustomerOut(Out):
    number: str | None
    name: str | None


class MessageOut(Out):
    id: str
    sessionId: str
    role: Literal["user", "assistant"]
    content: str
    media: list[MediaOut]
    channel: Literal["sms", "api"]
    twilioSid: str | None
    status: MessageStatus
    errorCode: int | None
    errorMessage: str | None
    segments: int | None
    encoding: Literal["GSM-7", "UCS-2"] | None
    createdAt: str = Timestamp


class SessionOut(Out):
    id: str
    name: str | None
    status: Literal["active", "completed"]
    assistantId: str | None
    phoneNumberId: str | None = Field(description="null for sessions created through the API")
    customer: CustomerOut | None
    expirationSeconds: int
    expiresAt: str = Timestamp
    assistantOverrides: dict[str, Any]
    metadata: dict[str, Any]
    cost: float
    createdAt: str = Timestamp
    updatedAt: str = Timestamp


class SessionWithMessages(SessionOut):
    messages: list[MessageOut] = Field(description="oldest first")


class ChatTurnOut(Out):
    role: Literal["assistant"]
    content: str


class ChatOut(Out):
    id: str
    sessionId: str
    input: str
    output: list[ChatTurnOut] = Field(description="the engine's reply; output[0].content is the first text")
    status: Literal["completed", "failed"]
    cost: float
    createdAt: str = Timestamp
    updatedAt: str = Timestamp


class IdOnly(Out):
    id: str


# -- envelopes, as SPEC section 4 gives them ---------------------------------------------------

class AssistantEnvelope(Out):
    assistant: AssistantOut


class AssistantList(Out):
    assistants: list[AssistantOut]
    totalCount: int


class PhoneNumberEnvelope(Out):
    phoneNumber: PhoneNumberOut


class PhoneNumberList(Out):
    phoneNumbers: list[PhoneNumberOut]
    totalCount: int


class SessionCreated(Out):
    message: Literal["Session created successfully"]
    session: SessionOut


class SessionEnvelope(Out):
    session: SessionOut


class SessionWithMessagesEnvelope(Out):
    session: SessionWithMessages


class SessionList(Out):
    sessions: list[SessionOut]
    totalCount: int


class SessionDeleted(Out):
    session: IdOnly


class DeletedCount(Out):
    deleted: int


class ChatCreated(Out):
    message: Literal["Chat created successfully"]
    chat: ChatOut


class ChatList(Out):
    chats: list[ChatOut]
    totalCount: int


class ChatDeleted(Out):
    chat: IdOnly


class MessageList(Out):
    messages: list[MessageOut]
    totalCount: int


class ErrorDetail(Out):
    code: str = Field(description="bad_request, unauthorized, not_found, conflict, invalid_field, ...")
    message: str
    details: dict[str, Any] | None = Field(description='for 422: {"field": "<name of the offending field>"}')


class ErrorBody(Out):
    error: ErrorDetail
