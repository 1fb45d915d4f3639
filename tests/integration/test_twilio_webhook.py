"""POST /twilio/sms: signatures, bad input, deduplication, number lookup (SPEC sections 5 and 6.12)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, update

from gateway.db.models import Customer, Message, Session
from tests.conftest import BUSINESS, CUSTOMER, PUBLIC_URL, inbound_params, sign

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.fixture
def database_url_or_default(database_url):
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


def counts(runtime) -> dict:
    with runtime.db.begin() as tx:
        return {
            # Inbound texts only: the echo reply is written by a worker thread at its own pace.
            "messages": tx.scalar(select(func.count()).select_from(Message).where(Message.role == "user")),
            "sessions": tx.scalar(select(func.count()).select_from(Session)),
            "customers": tx.scalar(select(func.count()).select_from(Customer)),
        }


NOTHING = {"messages": 0, "sessions": 0, "customers": 0}


def test_signed_text_is_stored_and_answered_with_empty_twiml(webhook, runtime, number):
    """A text signed with the real RequestValidator is committed and answered 200 with <Response/>."""
    response = webhook("hi there")
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert response.data == EMPTY_TWIML
    with runtime.db.begin() as tx:
        message = tx.scalar(select(Message).where(Message.role == "user"))
        assert message.content == "hi there"
        assert message.role == "user"
        assert message.channel == "sms"
    assert counts(runtime) == {"messages": 1, "sessions": 1, "customers": 1}


@pytest.mark.parametrize(
    "label, signature",
    [
        ("missing", ""),
        ("garbage", "not-a-signature"),
        ("wrong token", sign("some-other-token", PUBLIC_URL + "/twilio/sms", inbound_params("hi", sid="SM1"))),
        ("another URL", None),
    ],
)
def test_bad_signatures_get_403_and_store_nothing(client, runtime, number, label, signature):
    """Missing, malformed, wrongly keyed or signed-for-another-URL signatures: 403 and nothing stored."""
    params = inbound_params("hi", sid="SM1")
    if signature is None:
        signature = sign(runtime.auth_token, "https://elsewhere.example.com/twilio/sms", params)
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403, label
    assert counts(runtime) == NOTHING


def test_signature_covers_every_parameter(client, runtime, number):
    """Changing one parameter after signing (here the Body) breaks the signature."""
    params = inbound_params("pay me back", sid="SM2")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    params["Body"] = "pay me double"
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert counts(runtime) == NOTHING


def test_unknown_parameters_are_signed_too(webhook, runtime, number):
    """Parameters Twilio adds without notice (AddOns, city fields) are part of the signature, never dropped."""
    response = webhook("hello", AddOns='{"status":"successful"}', FromCity="SAN FRANCISCO", SomethingNew="x")
    assert response.status_code == 200
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message).where(Message.role == "user")).details["FromCity"] == "SAN FRANCISCO"


def test_signature_with_the_default_port_added_is_accepted(client, runtime, number):
    """Twilio sometimes signs the URL with the default port (http://gw.test:80/...): accepted as
    RequestValidator.validate accepts it, though the gateway first checks the URL as configured."""
    params = inbound_params("hi", sid="SM5")
    signature = sign(runtime.auth_token, PUBLIC_URL.replace("gw.test", "gw.test:80") + "/twilio/sms", params)
    assert client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200
    assert counts(runtime)["messages"] == 1


def test_query_string_is_part_of_the_signed_url(client, runtime, number):
    """Twilio signs the URL with its query; the gateway checks against public URL + path + query."""
    params = inbound_params("hi", sid="SM3")
    url = PUBLIC_URL + "/twilio/sms?tenant=blue"
    ok = client.post("/twilio/sms?tenant=blue", data=params, headers={"X-Twilio-Signature": sign(runtime.auth_token, url, params)})
    assert ok.status_code == 200
    params = inbound_params("hi", sid="SM4")
    signed_without_query = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    bad = client.post("/twilio/sms?tenant=blue", data=params, headers={"X-Twilio-Signature": signed_without_query})
    assert bad.status_code == 403


def test_unknown_number_is_acknowledged_and_nothing_stored(webhook, runtime, number):
    """A text to a number the gateway does not serve: 200 empty TwiML, nothing stored or forwarded."""
    response = webhook("hello?", to="+15557770000")
    assert response.status_code == 200
    assert response.data == EMPTY_TWIML
    assert counts(runtime) == NOTHING


@pytest.mark.parametrize(
    "label, changes, expected",
    [
        ("missing From", {"from_": None}, "From is required"),
        ("missing To", {"to": None}, "To is required"),
        ("From not E.164", {"from_": "4155550123"}, "From"),
        ("To not a number", {"to": "+1abc"}, "To"),
        ("From too short", {"from_": "+1555"}, "From"),
        ("missing MessageSid", {"sid": ""}, "MessageSid is required"),
        ("NumMedia not a number", {"NumMedia": "lots"}, "NumMedia"),
        ("MessageSid with symbols", {"sid": "SM'; DROP TABLE messages;--"}, "MessageSid"),
        ("MessageSid with NUL", {"sid": "SM\x00abc"}, "MessageSid"),
    ],
)
def test_malformed_webhooks_get_400_and_store_nothing(client, runtime, number, label, changes, expected):
    """Missing or malformed From/To/MessageSid: a clear 400 and nothing stored."""
    params = inbound_params("hi", **{"sid": "SM5", **changes})
    if changes.get("sid") == "":
        params.pop("MessageSid")
        params.pop("SmsSid")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 400, label
    assert expected in response.get_data(as_text=True)
    assert counts(runtime) == NOTHING


def test_oversized_body_gets_413_and_stores_nothing(client, runtime, number):
    """The service caps request size: a huge body is refused before anything is parsed or stored."""
    params = inbound_params("x" * (runtime.settings.max_request_bytes + 1), sid="SM6")
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    response = client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 413
    assert counts(runtime) == NOTHING


def test_repeated_message_sid_is_stored_once_and_answered_200(webhook, runtime, number):
    """Twilio's retry of the same MessageSid: stored once, both answered with empty TwiML."""
    first = webhook("hello", sid="SM" + "a" * 32)
    second = webhook("hello", sid="SM" + "a" * 32)
    assert first.status_code == second.status_code == 200
    assert second.data == EMPTY_TWIML
    assert counts(runtime)["messages"] == 1


def test_numbers_are_normalised_to_e164(webhook, runtime, number):
    """Spaces and punctuation in From/To are normalised, so the same customer keeps one session."""
    webhook("one", from_="+1 (415) 555-0123", to="+1 555 010 0000")
    webhook("two", from_=CUSTOMER, to=BUSINESS)
    with runtime.db.begin() as tx:
        assert tx.scalar(select(func.count()).select_from(Session)) == 1
        assert tx.scalar(select(Customer.number)) == CUSTOMER


def test_messaging_service_sid_finds_the_number(client, runtime, assistant):
    """A text whose To is not configured is mapped by its MessagingServiceSid."""
    from gateway.schemas import PhoneNumberCreate
    from gateway.services.phone_numbers import create_phone_number

    service_sid = "MG" + "1" * 32
    create_phone_number(runtime, PhoneNumberCreate(number="+15550109999", assistantId=assistant.id, messagingServiceSid=service_sid))
    params = inbound_params("via service", sid="SM7", to="+15550108888", MessagingServiceSid=service_sid)
    signature = sign(runtime.auth_token, PUBLIC_URL + "/twilio/sms", params)
    assert client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200
    assert counts(runtime)["sessions"] == 1


def test_media_is_stored_with_the_message(webhook, runtime, number):
    """MMS media URLs and content types are kept with the message."""
    webhook("look", NumMedia="2", MediaUrl0="https://media.example/a.jpg", MediaContentType0="image/jpeg",
            MediaUrl1="https://media.example/b.png", MediaContentType1="image/png")
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message).where(Message.role == "user")).media == [
            {"url": "https://media.example/a.jpg", "contentType": "image/jpeg"},
            {"url": "https://media.example/b.png", "contentType": "image/png"},
        ]


def test_script_and_sql_text_is_stored_as_plain_text(webhook, runtime, number):
    """SQL or script in a text is data: stored exactly as sent, nothing executed."""
    body = "'); DROP TABLE messages; -- <script>alert(1)</script>"
    assert webhook(body).status_code == 200
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message.content).where(Message.role == "user")) == body


def test_nul_characters_in_a_text_are_dropped_not_fatal(webhook, runtime, number):
    """A NUL in Body (which PostgreSQL text cannot hold) is dropped; the rest of the text is kept."""
    assert webhook("a\x00b").status_code == 200
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Message.content).where(Message.role == "user")) == "ab"


def test_nul_characters_in_any_stored_parameter_are_dropped_not_fatal(webhook, runtime, number):
    """Media URLs, their types, the kept parameters and MessagingServiceSid (a parameter of the number's
    lookup) are stored or read too, on PostgreSQL as text or jsonb, which hold no NUL: a 500 would fail
    every text stored in the same batch."""
    response = webhook("look", NumMedia="1", MediaUrl0="https://media.example/a\x00.jpg",
                       MediaContentType0="image/\x00jpeg", FromCity="SAN\x00 FRANCISCO",
                       MessagingServiceSid="MG\x00" + "2" * 32)
    assert response.status_code == 200
    with runtime.db.begin() as tx:
        message = tx.scalar(select(Message).where(Message.role == "user"))
        assert message.media == [{"url": "https://media.example/a.jpg", "contentType": "image/jpeg"}]
        assert message.details["FromCity"] == "SAN FRANCISCO"
        assert message.details["MessagingServiceSid"] == "MG" + "2" * 32


# -- POST /twilio/status: odd input gets a clear answer, never a 500 (SPEC 5, 6.8, 6.12) -------------------


def answered(runtime, webhook) -> Message:
    """Text the echo assistant and wait until its reply is delivered (the sandbox sender delivers at once)."""
    assert webhook("hello").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with runtime.db.begin() as tx:
            reply = tx.scalar(select(Message).where(Message.role == "assistant"))
            if reply is not None and reply.status == "delivered":
                tx.expunge(reply)
                return reply
        time.sleep(0.02)
    raise AssertionError("no delivered reply")


def status_callback(client, runtime, params: dict, message_id: str | None = None):
    path = "/twilio/status" + (f"?messageId={message_id}" if message_id is not None else "")
    signature = sign(runtime.auth_token, PUBLIC_URL + path, params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def reply_state(runtime, message_id: str) -> tuple:
    with runtime.db.begin() as tx:
        message = tx.get(Message, message_id)
        return message.status, message.twilio_sid, message.error_code, message.error_message



def in_flight(runtime, webhook) -> Message:
    """A reply as it is while Twilio still has it: sending, and (its callback beating the create's answer) no sid yet."""
    reply = answered(runtime, webhook)
    with runtime.db.begin() as tx:
        tx.execute(update(Message).where(Message.id == reply.id).values(status="sending", twilio_sid=None))
    return reply


ODD_ERROR_CODES = {
    "not a number": "thirty",
    "30 digits": "9" * 30,
    "over 32 bits": str(2**31),
    "negative": "-30003",
}


@pytest.mark.parametrize("code", ODD_ERROR_CODES.values(), ids=ODD_ERROR_CODES.keys())
def test_status_callback_with_an_odd_error_code_records_the_status_without_it(client, runtime, number, webhook, code):
    """An ErrorCode that is no Twilio code (not a number, or one no INTEGER column holds) is left out: the
    status is still recorded, and the callback is answered 200, never a 500 (SPEC 6.8, 6.12)."""
    reply = in_flight(runtime, webhook)
    params = {"MessageSid": "SM" + "c" * 32, "MessageStatus": "undelivered", "ErrorCode": code,
              "AccountSid": "AC" + "0" * 32}
    response = status_callback(client, runtime, params, reply.id)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert reply_state(runtime, reply.id) == ("undelivered", "SM" + "c" * 32, None, None)


MALFORMED_CALLBACKS = {
    # label: (the callback's parameters, its messageId: the reply's own unless told)
    "NUL in MessageSid": ({"MessageSid": "SM\x00" + "d" * 32}, True),
    "NUL in MessageSid, no messageId": ({"MessageSid": "SM\x00" + "d" * 32}, False),
    "MessageSid over 64 characters": ({"MessageSid": "SM" + "d" * 200}, True),
    "MessageSid with symbols": ({"MessageSid": "SM'; DROP TABLE messages;--"}, True),
    "NUL in messageId": ({"MessageSid": "SM" + "d" * 32}, "\x00"),
}


@pytest.mark.parametrize("params, message_id", MALFORMED_CALLBACKS.values(), ids=MALFORMED_CALLBACKS.keys())
def test_status_callback_with_a_malformed_sid_or_id_gets_400_and_changes_nothing(client, runtime, number, webhook,
                                                                                  params, message_id):
    """A signed callback whose MessageSid or messageId no message can have (a NUL, which PostgreSQL text cannot
    hold, more than the column's 64 characters, symbols) gets a clear 400, not a 500, and changes nothing."""
    reply = in_flight(runtime, webhook)
    before = reply_state(runtime, reply.id)
    message_id = reply.id if message_id is True else None if message_id is False else reply.id + message_id
    response = status_callback(client, runtime, {"MessageStatus": "delivered", "AccountSid": "AC" + "0" * 32,
                                                 **params}, message_id)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert reply_state(runtime, reply.id) == before == ("sending", None, None, None)


def test_status_callback_without_a_status_or_for_an_unknown_sid_is_acknowledged(client, runtime, number, webhook):
    """No MessageStatus, an unknown one, or an unknown sid: 200 and nothing moves (SPEC 6.8)."""
    reply = in_flight(runtime, webhook)
    sid = "SM" + "e" * 32
    assert status_callback(client, runtime, {"MessageSid": sid}, reply.id).status_code == 200
    assert status_callback(client, runtime, {"MessageSid": sid, "MessageStatus": "warped\x00"}, reply.id).status_code == 200
    assert reply_state(runtime, reply.id) == ("sending", sid, None, None)
    assert status_callback(client, runtime, {"MessageSid": "SM" + "f" * 32, "MessageStatus": "failed"}).status_code == 200
    assert reply_state(runtime, reply.id) == ("sending", sid, None, None)
