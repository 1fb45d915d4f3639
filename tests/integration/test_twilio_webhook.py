"""POST /twilio/sms: signatures, bad input, deduplication, number lookup (SPEC sections 5 and 6.12)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

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
