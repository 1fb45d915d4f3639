"""gateway.web.twilio.signature_matches: exactly what RequestValidator.validate accepts, with one HMAC
for the URL as configured (SPEC 5)."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from gateway.web.twilio import signature_matches

TOKEN = "12345678901234567890123456789012"
PARAMS = MultiDict([("Body", "hi"), ("From", "+14155550100"), ("MediaUrl0", "a"), ("MediaUrl0", "b")])
SIGNER = RequestValidator(TOKEN)


@pytest.mark.parametrize("configured, signed, accepted", [
    ("https://gw.example.com/twilio/sms", "https://gw.example.com/twilio/sms", True),
    ("https://gw.example.com/twilio/sms", "https://gw.example.com:443/twilio/sms", True),
    ("https://gw.example.com:443/twilio/sms", "https://gw.example.com/twilio/sms", True),
    ("http://127.0.0.1:8000/twilio/sms", "http://127.0.0.1:8000/twilio/sms", True),
    ("http://127.0.0.1:8000/twilio/sms", "http://127.0.0.1/twilio/sms", True),
    ("https://gw.example.com/twilio/sms?a=1", "https://gw.example.com/twilio/sms?a=1", True),
    ("https://gw.example.com/twilio/sms", "https://gw.example.com/twilio/sms?a=1", False),
    ("https://gw.example.com/twilio/sms", "http://gw.example.com/twilio/sms", False),
    ("https://gw.example.com/twilio/sms", "https://elsewhere.example.com/twilio/sms", False),
])
def test_accepts_what_validate_accepts(configured, signed, accepted):
    signature = SIGNER.compute_signature(signed, PARAMS)
    assert SIGNER.validate(configured, PARAMS, signature) is accepted  # the library's own verdict
    assert signature_matches(SIGNER, configured, PARAMS, signature) is accepted


def test_wrong_token_and_changed_parameters_are_refused():
    url = "https://gw.example.com/twilio/sms"
    assert not signature_matches(SIGNER, url, PARAMS, RequestValidator("x" * 32).compute_signature(url, PARAMS))
    changed = MultiDict(PARAMS)
    changed["Body"] = "hi!"
    assert not signature_matches(SIGNER, url, changed, SIGNER.compute_signature(url, PARAMS))
    assert not signature_matches(SIGNER, url, PARAMS, "")
    assert not signature_matches(SIGNER, url, PARAMS, "not base64 at all é")


def test_json_bodies_go_through_validate():
    """A JSON body is checked by its bodySHA256 in the URL, which validate alone handles."""
    body = '{"a": 1}'
    url = "https://gw.example.com/twilio/sms?bodySHA256=" + SIGNER.compute_hash(body)
    signature = SIGNER.compute_signature(url, {})
    assert signature_matches(SIGNER, url, body, signature)
    assert not signature_matches(SIGNER, url, '{"a": 2}', signature)
