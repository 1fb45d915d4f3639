"""Each provider's settings are checked before they are stored (SPEC section 3), and credentials are masked on reads."""

from __future__ import annotations

import pytest

from adapters import check_engine_config, create_engine
from adapters.base import PermanentEngineError
from gateway.domain.secrets import masked

KEY = "sk-config-test-5555aaaa9999"
VALID = {
    "callhq": {"provider": "callhq", "baseUrl": "https://api.callhq.example", "apiKey": KEY, "assistantId": "a1"},
    "vapi": {"provider": "vapi", "baseUrl": "https://api.vapi.ai", "apiKey": KEY, "assistantId": "a1"},
    "openai": {"provider": "openai", "baseUrl": "https://api.openai.com/v1", "apiKey": KEY, "model": "gpt-4o-mini",
               "maxHistoryChars": 0, "temperature": 2, "maxTokens": 1, "pricePerMillionInputTokens": 0.15},
    "webhook": {"provider": "webhook", "url": "https://bot.example.com/turn"},
}


def without(provider: str, key: str) -> dict:
    return {k: v for k, v in VALID[provider].items() if k != key}


def changed(provider: str, **settings) -> dict:
    return {**VALID[provider], **settings}


INVALID = {
    # label: (settings, what the message must say)
    "callhq without baseUrl": (without("callhq", "baseUrl"), "the callhq engine needs baseUrl"),
    "callhq without apiKey": (without("callhq", "apiKey"), "the callhq engine needs apiKey"),
    "callhq without assistantId": (without("callhq", "assistantId"), "the callhq engine needs assistantId"),
    "callhq with a blank apiKey": (changed("callhq", apiKey="  "), "needs apiKey"),
    "vapi without baseUrl": (without("vapi", "baseUrl"), "the vapi engine needs baseUrl"),
    "vapi without apiKey": (without("vapi", "apiKey"), "the vapi engine needs apiKey"),
    "vapi without assistantId": (without("vapi", "assistantId"), "the vapi engine needs assistantId"),
    "openai without baseUrl": (without("openai", "baseUrl"), "the openai engine needs baseUrl"),
    "openai without apiKey": (without("openai", "apiKey"), "the openai engine needs apiKey"),
    "openai without model": (without("openai", "model"), "the openai engine needs model"),
    "openai with a negative maxHistoryChars": (changed("openai", maxHistoryChars=-1), "maxHistoryChars"),
    "openai with a fractional maxHistoryChars": (changed("openai", maxHistoryChars=10.5), "whole number"),
    "openai with temperature 3": (changed("openai", temperature=3), "at most 2"),
    "openai with maxTokens 0": (changed("openai", maxTokens=0), "maxTokens"),
    "openai with a negative price": (changed("openai", pricePerMillionOutputTokens=-1), "pricePerMillionOutputTokens"),
    "webhook without url": (without("webhook", "url"), "the webhook engine needs url"),
    "a URL that is not http(s)": (changed("webhook", url="ftp://bot.example.com"), "http:// or https://"),
    "a URL without a host": (changed("vapi", baseUrl="https://"), "http:// or https://"),
    "credentials in the URL": (changed("vapi", baseUrl="https://user:pw@api.vapi.ai"), "must not carry credentials"),
    "a key in the query string": (changed("openai", baseUrl="https://x.example/v1?api_key=abc"), "query string"),
    "a URL that is a number": (changed("callhq", baseUrl=42), "needs baseUrl"),
}


@pytest.mark.parametrize("provider", list(VALID))
def test_complete_settings_are_accepted(provider):
    """Each provider's full settings pass the check and build an engine."""
    check_engine_config(VALID[provider])
    assert create_engine(VALID[provider]).provider == provider


@pytest.mark.parametrize("settings, message", list(INVALID.values()), ids=list(INVALID))
def test_incomplete_or_unsafe_settings_are_refused(settings, message):
    """A missing or wrong setting raises ValueError naming it, without quoting the key."""
    with pytest.raises(ValueError) as refused:
        check_engine_config(settings)
    assert message in str(refused.value)
    assert KEY not in str(refused.value)


def test_an_engine_built_from_bad_stored_settings_fails_permanently():
    """Settings stored before these checks existed fail the turn with the same clear reason, not a crash."""
    with pytest.raises(PermanentEngineError, match="the openai engine needs model"):
        create_engine(without("openai", "model"))


def test_api_keys_are_masked_by_the_secrets_rules():
    """apiKey (any spelling) is masked; baseUrl, model, maxTokens and price settings are not."""
    shown = masked({**VALID["openai"], "api_key": KEY})
    assert shown["apiKey"] == shown["api_key"] == "****9999"
    assert {k: shown[k] for k in ("baseUrl", "model", "maxTokens", "pricePerMillionInputTokens")} == {
        k: VALID["openai"][k] for k in ("baseUrl", "model", "maxTokens", "pricePerMillionInputTokens")}


def test_the_api_refuses_bad_settings_with_422_naming_engine(client, auth):
    """POST /api/assistants with a callhq engine lacking apiKey: 422, field engine, a message naming apiKey."""
    response = client.post("/api/assistants", headers=auth,
                           json={"name": "CallHQ", "engine": without("callhq", "apiKey")})
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["details"]["field"] == "engine"
    assert "apiKey" in error["message"]


@pytest.mark.parametrize("provider", ["callhq", "vapi", "openai"])
def test_the_api_never_returns_the_key_and_keeps_it_when_sent_back_masked(client, auth, runtime, provider):
    """Create, read, and PATCH back the masked engine: reads show ****9999, the stored key is unchanged."""
    from gateway.services.assistants import get_assistant

    created = client.post("/api/assistants", headers=auth, json={"name": provider, "engine": VALID[provider]})
    assert created.status_code == 201, created.get_json()
    assert KEY not in created.get_data(as_text=True)
    assistant = created.get_json()["assistant"]
    assert assistant["engine"]["apiKey"] == "****9999"

    read = client.get(f"/api/assistants/{assistant['id']}", headers=auth)
    assert KEY not in read.get_data(as_text=True)
    patched = client.patch(f"/api/assistants/{assistant['id']}", headers=auth, json={"engine": assistant["engine"]})
    assert patched.status_code == 200, patched.get_json()
    assert get_assistant(runtime, assistant["id"]).engine["apiKey"] == KEY
