"""JSON shapes of the API's objects (SPEC section 3), built from the models."""

from __future__ import annotations

from gateway.db.models import Assistant, Chat, Customer, Message, PhoneNumber, Session
from gateway.domain.secrets import masked
from gateway.domain.timestamps import iso


def assistant_view(assistant: Assistant) -> dict:
    return {
        "id": assistant.id,
        "name": assistant.name,
        "engine": masked(assistant.engine),
        "firstMessage": assistant.first_message,
        "systemPrompt": assistant.system_prompt,
        "variableValues": assistant.variable_values or {},
        "fallbackMessage": assistant.fallback_message,
        "serverUrl": assistant.server_url,
        "serverEvents": assistant.server_events or [],
        "serverSecret": assistant.server_secret,
        "createdAt": iso(assistant.created_at),
        "updatedAt": iso(assistant.updated_at),
    }


def phone_number_view(number: PhoneNumber) -> dict:
    return {
        "id": number.id,
        "number": number.number,
        "name": number.name,
        "assistantId": number.assistant_id,
        "sessionExpirationSeconds": number.session_expiration_seconds,
        "sessionInactivitySeconds": number.session_inactivity_seconds,
        "helpMessage": number.help_message,
        "optOutMessage": number.opt_out_message,
        "optInMessage": number.opt_in_message,
        "messagesPerSecond": number.messages_per_second,
        "messagingServiceSid": number.messaging_service_sid,
        "mergeBurstSeconds": number.merge_burst_seconds,
        "createdAt": iso(number.created_at),
        "updatedAt": iso(number.updated_at),
    }


def session_view(session: Session, customer: Customer | None, messages: list[Message] | None = None) -> dict:
    view = {
        "id": session.id,
        "name": session.name,
        "status": session.status,
        "assistantId": session.assistant_id,
        "phoneNumberId": session.phone_number_id,
        "customer": {"number": customer.number, "name": customer.name} if customer else None,
        "expirationSeconds": session.expiration_seconds,
        "expiresAt": iso(session.expires_at),
        "assistantOverrides": session.assistant_overrides or {},
        "metadata": session.metadata_ or {},
        "cost": session.cost,
        "createdAt": iso(session.created_at),
        "updatedAt": iso(session.updated_at),
    }
    if messages is not None:
        view["messages"] = [message_view(m) for m in messages]
    return view


def message_view(message: Message) -> dict:
    return {
        "id": message.id,
        "sessionId": message.session_id,
        "role": message.role,
        "content": message.content,
        "media": message.media or [],
        "channel": message.channel,
        "twilioSid": message.twilio_sid,
        "status": message.status,
        "errorCode": message.error_code,
        "errorMessage": message.error_message,
        "segments": message.segments,
        "encoding": message.encoding,
        "createdAt": iso(message.created_at),
    }


def chat_view(chat: Chat) -> dict:
    return {
        "id": chat.id,
        "sessionId": chat.session_id,
        "input": chat.input,
        "output": chat.output or [],
        "status": chat.status,
        "cost": chat.cost,
        "createdAt": iso(chat.created_at),
        "updatedAt": iso(chat.updated_at),
    }
