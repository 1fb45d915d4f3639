"""/api/assistants, /api/phone-numbers and reading /api/sessions: auth, shapes, validation, masking (SPEC 3, 4)."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from gateway.services.api_keys import create_key, revoke_key
from gateway.services.assistants import get_assistant
from gateway.services.sessions import complete
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.api_client import ApiClient

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
EVENT_TYPES = ["session.created", "session.updated", "session.deleted",
               "chat.created", "chat.deleted", "message.status"]
SECRET = "sk-live-1234567890abcdef"
NEW_SECRET = "sk-live-new-key-0000009999"
MASKED = "****cdef"
UNKNOWN_ID = str(uuid.UUID(int=0))

ASSISTANT_FIELDS = {"id", "name", "engine", "firstMessage", "systemPrompt", "variableValues", "fallbackMessage",
                    "serverUrl", "serverEvents", "serverSecret", "createdAt", "updatedAt"}
PHONE_NUMBER_FIELDS = {"id", "number", "name", "assistantId", "sessionExpirationSeconds", "sessionInactivitySeconds",
                       "helpMessage", "optOutMessage", "optInMessage", "messagesPerSecond", "messagingServiceSid",
                       "mergeBurstSeconds", "createdAt", "updatedAt"}
SESSION_FIELDS = {"id", "name", "status", "assistantId", "phoneNumberId", "customer", "expirationSeconds", "expiresAt",
                  "assistantOverrides", "metadata", "cost", "createdAt", "updatedAt"}
MESSAGE_FIELDS = {"id", "sessionId", "role", "content", "media", "channel", "twilioSid", "status", "errorCode",
                  "errorMessage", "segments", "encoding", "createdAt"}

FULL_ASSISTANT = {
    "name": "Front desk",
    "engine": {"provider": "echo", "model": "house-1"},
    "firstMessage": "Hi {{customer.name}}!",
    "systemPrompt": "You are the front desk of {{shop}}.",
    "variableValues": {"shop": "Corner Shop", "floor": 2, "open": True, "rating": 4.5, "closedOn": None},
    "fallbackMessage": "Sorry, try again later.",
    "serverUrl": "https://hooks.example.com/events?tenant=blue",
    "serverEvents": ["session.created", "message.status"],
    "serverSecret": "s" * 32,
}
FULL_PHONE_NUMBER = {
    "number": "+14155550100",
    "name": "Main line",
    "sessionExpirationSeconds": 3600,
    "sessionInactivitySeconds": 600,
    "helpMessage": "Text STOP to leave.",
    "optOutMessage": "You are out.",
    "optInMessage": "Welcome back.",
    "messagesPerSecond": 2.5,
    "messagingServiceSid": "MG" + "a" * 32,
    "mergeBurstSeconds": 1.5,
}
SQL_AND_SCRIPT = "'); DROP TABLE assistants; -- <script>alert(1)</script>"

# Every route, with {id} standing for an id of the right kind.
ROUTES = [
    ("POST", "/api/assistants"),
    ("GET", "/api/assistants"),
    ("GET", "/api/assistants/{id}"),
    ("PATCH", "/api/assistants/{id}"),
    ("DELETE", "/api/assistants/{id}"),
    ("POST", "/api/phone-numbers"),
    ("GET", "/api/phone-numbers"),
    ("GET", "/api/phone-numbers/{id}"),
    ("PATCH", "/api/phone-numbers/{id}"),
    ("DELETE", "/api/phone-numbers/{id}"),
    ("GET", "/api/sessions"),
    ("GET", "/api/sessions/{id}"),
]
LISTS = ["/api/assistants", "/api/phone-numbers", "/api/sessions"]
RESOURCES = [("/api/assistants", "assistant"), ("/api/phone-numbers", "phoneNumber")]


@pytest.fixture
def database_url_or_default(database_url):
    """Every test here runs on SQLite and on PostgreSQL."""
    return database_url


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def api(client, auth) -> ApiClient:
    return ApiClient(client, auth)


def ok(response, status: int = 200) -> dict:
    """The JSON body of a response that must have ``status``."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def error_of(response, status: int) -> dict:
    """The ``error`` object of an error response, checking SPEC 4's shape."""
    body = ok(response, status)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def assert_invalid(response, field: str) -> None:
    """A 422 whose ``error.details.field`` names ``field`` (or an element of it, e.g. serverEvents.1)."""
    error = error_of(response, 422)
    assert error["code"] == "invalid_field"
    named = error["details"]["field"]
    assert named == field or named.startswith(field + "."), named


def new_assistant(api: ApiClient, **fields) -> dict:
    return ok(api.post("/api/assistants", {"name": "Helper", **fields}), 201)["assistant"]


def new_number(api: ApiClient, number: str = "+14155550100", **fields) -> dict:
    return ok(api.post("/api/phone-numbers", {"number": number, **fields}), 201)["phoneNumber"]


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


def listed(api, **query) -> list[str]:
    """Customer numbers of the sessions GET /api/sessions lists for ``query``, in order."""
    return [s["customer"]["number"] for s in ok(api.get("/api/sessions", query_string=query))["sessions"]]



# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_refuses_without_a_key(client, method, path):
    """Each /api route answers 401 with the error body when no key is given, before looking at the id or body."""
    response = client.open(path.format(id=UNKNOWN_ID), method=method, json={"name": "x", "number": "+14155550100"})
    assert error_of(response, 401)["code"] == "unauthorized"


def test_refused_create_stores_nothing(client, api):
    """A create without a key changes nothing."""
    client.post("/api/assistants", json={"name": "sneaky"})
    client.post("/api/phone-numbers", json={"number": "+14155550100"})
    assert ok(api.get("/api/assistants"))["totalCount"] == 0
    assert ok(api.get("/api/phone-numbers"))["totalCount"] == 0


@pytest.mark.parametrize(
    "label, headers",
    [
        ("no headers", {}),
        ("empty x-api-key", {"x-api-key": ""}),
        ("wrong x-api-key", {"x-api-key": "gk_not-a-real-key"}),
        ("wrong Bearer", {"Authorization": "Bearer gk_not-a-real-key"}),
        ("Bearer with nothing", {"Authorization": "Bearer "}),
        ("right key under Basic", {"Authorization": "Basic {key}"}),
        ("right key without a scheme", {"Authorization": "{key}"}),
        ("right key with a prefix", {"x-api-key": "x{key}"}),
        ("right key truncated", {"x-api-key": "{key_truncated}"}),
        ("very long key", {"x-api-key": "k" * 10_000}),
    ],
)
def test_bad_keys_get_401(client, api_key, label, headers):
    """Missing, wrong, truncated or wrongly presented keys: 401 with the error body."""
    headers = {name: value.format(key=api_key, key_truncated=api_key[:-1]) for name, value in headers.items()}
    assert error_of(client.get("/api/assistants", headers=headers), 401)["code"] == "unauthorized", label


@pytest.mark.parametrize(
    "label, headers",
    [
        ("x-api-key", {"x-api-key": "{key}"}),
        ("X-API-KEY spelled in capitals", {"X-API-KEY": "{key}"}),
        ("Authorization: Bearer", {"Authorization": "Bearer {key}"}),
        ("lower-case bearer", {"Authorization": "bearer {key}"}),
    ],
)
def test_good_keys_are_accepted(client, api_key, label, headers):
    """The key works in x-api-key or as a Bearer token."""
    headers = {name: value.format(key=api_key) for name, value in headers.items()}
    assert ok(client.get("/api/assistants", headers=headers)) == {"assistants": [], "totalCount": 0}, label


def test_revoked_key_gets_401(client, runtime):
    """A key works until it is revoked, then gets 401 on both headers."""
    key, plaintext = create_key(runtime, "temporary")
    assert client.get("/api/assistants", headers={"x-api-key": plaintext}).status_code == 200
    revoke_key(runtime, key.id)
    error_of(client.get("/api/assistants", headers={"x-api-key": plaintext}), 401)
    error_of(client.get("/api/assistants", headers={"Authorization": f"Bearer {plaintext}"}), 401)


# -- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label, data",
    [
        ("invalid JSON", b'{"name": "x",'),
        ("JSON array", b'[{"name": "x"}]'),
        ("JSON string", b'"x"'),
        ("JSON null", b"null"),
        ("no body", b""),
        ("not UTF-8", b'{"name": "\xff\xfe"}'),
    ],
)
@pytest.mark.parametrize("method, path", [("POST", "/api/assistants"), ("PATCH", "/api/assistants/{id}"),
                                          ("POST", "/api/phone-numbers"), ("PATCH", "/api/phone-numbers/{id}")])
def test_malformed_bodies_get_400(api, label, data, method, path):
    """Bodies that are not one JSON object: 400 bad_request, on create and on update."""
    if "{id}" in path:
        created = new_assistant(api) if "assistants" in path else new_number(api)
        path = path.format(id=created["id"])
    response = api.request(method, path, data=data, content_type="application/json")
    assert error_of(response, 400)["code"] == "bad_request", label


# -- assistants -------------------------------------------------------------------------------


def test_create_assistant_with_defaults(api):
    """Only a name: faq engine, all six event types, a generated readable serverSecret, ISO-Z timestamps."""
    body = ok(api.post("/api/assistants", {"name": "Helper"}), 201)
    assert set(body) == {"assistant"}
    assistant = body["assistant"]
    assert set(assistant) == ASSISTANT_FIELDS
    assert assistant["name"] == "Helper"
    assert assistant["engine"] == {"provider": "faq"}
    assert assistant["serverEvents"] == EVENT_TYPES
    assert assistant["variableValues"] == {}
    for field in ("firstMessage", "systemPrompt", "fallbackMessage", "serverUrl"):
        assert assistant[field] is None, field
    assert isinstance(assistant["serverSecret"], str) and len(assistant["serverSecret"]) >= 32
    assert ISO_Z.match(assistant["createdAt"]) and ISO_Z.match(assistant["updatedAt"])
    assert assistant["createdAt"] == assistant["updatedAt"]
    uuid.UUID(assistant["id"])


def test_generated_server_secrets_differ_and_stay_readable(api):
    """Each assistant gets its own secret, and GET shows it in full (the receiver needs it to verify)."""
    first, second = new_assistant(api), new_assistant(api)
    assert first["serverSecret"] != second["serverSecret"]
    assert ok(api.get(f"/api/assistants/{first['id']}"))["assistant"]["serverSecret"] == first["serverSecret"]


def test_create_assistant_round_trips_every_field(api):
    """Every SPEC 3 field given in camelCase comes back as given, on create and on GET."""
    created = new_assistant(api, **FULL_ASSISTANT)
    fetched = ok(api.get(f"/api/assistants/{created['id']}"))["assistant"]
    assert fetched == created
    for field, value in FULL_ASSISTANT.items():
        assert created[field] == value, field


@pytest.mark.parametrize(
    "label, body, field",
    [
        ("unknown provider", {"engine": {"provider": "skynet"}}, "engine.provider"),
        ("engine without provider", {"engine": {"model": "x"}}, "engine.provider"),
        ("provider not a string", {"engine": {"provider": 7}}, "engine.provider"),
        ("engine not an object", {"engine": "echo"}, "engine"),
        ("name empty", {"name": ""}, "name"),
        ("name too long", {"name": "x" * 201}, "name"),
        ("name not a string", {"name": 42}, "name"),
        ("unknown extra field", {"colour": "blue"}, "colour"),
        ("snake_case instead of camelCase", {"first_message": "hi"}, "first_message"),
        ("serverUrl ftp", {"serverUrl": "ftp://hooks.example.com"}, "serverUrl"),
        ("serverUrl javascript", {"serverUrl": "javascript:alert(1)"}, "serverUrl"),
        ("serverUrl without scheme", {"serverUrl": "hooks.example.com/events"}, "serverUrl"),
        ("serverUrl not a string", {"serverUrl": 80}, "serverUrl"),
        ("serverEvents unknown type", {"serverEvents": ["session.created", "call.started"]}, "serverEvents"),
        ("serverEvents not a list", {"serverEvents": "session.created"}, "serverEvents"),
        ("variableValues a list", {"variableValues": ["shop"]}, "variableValues"),
        ("variableValues a string", {"variableValues": "shop=Corner"}, "variableValues"),
        ("variableValues nested object", {"variableValues": {"shop": {"name": "x"}}}, "variableValues"),
        ("serverSecret too short", {"serverSecret": "short"}, "serverSecret"),
        ("firstMessage too long", {"firstMessage": "x" * 1601}, "firstMessage"),
        ("fallbackMessage not a string", {"fallbackMessage": ["x"]}, "fallbackMessage"),
    ],
)
@pytest.mark.parametrize("operation", ["create", "update"])
def test_invalid_assistant_fields_get_422(api, operation, label, body, field):
    """Bad values get 422 naming the field, on POST and PATCH; a refused PATCH changes nothing."""
    if operation == "create":
        assert_invalid(api.post("/api/assistants", {"name": "Helper", **body}), field)
        assert ok(api.get("/api/assistants"))["totalCount"] == 0
    else:
        before = new_assistant(api)
        assert_invalid(api.patch(f"/api/assistants/{before['id']}", body), field)
        assert ok(api.get(f"/api/assistants/{before['id']}"))["assistant"] == before


@pytest.mark.parametrize("label, body", [("name missing", {}), ("name null", {"name": None})])
def test_create_assistant_needs_a_name(api, label, body):
    """POST without a name (or with null): 422 naming name."""
    assert_invalid(api.post("/api/assistants", body), "name")


@pytest.mark.parametrize("read", ["create", "get", "list", "patch"])
def test_engine_credentials_are_masked_on_every_read(api, read):
    """An engine apiKey is shown as ****<last 4> in every response, never in full."""
    response = api.post("/api/assistants", {"name": "Helper", "engine": {"provider": "echo", "apiKey": SECRET}})
    assistant = ok(response, 201)["assistant"]
    if read == "get":
        response = api.get(f"/api/assistants/{assistant['id']}")
    elif read == "list":
        response = api.get("/api/assistants")
    elif read == "patch":
        response = api.patch(f"/api/assistants/{assistant['id']}", {"name": "Renamed"})
    assert SECRET not in response.get_data(as_text=True)
    body = ok(response, 201 if read == "create" else 200)
    shown = body["assistants"][0] if read == "list" else body["assistant"]
    assert shown["engine"] == {"provider": "echo", "apiKey": MASKED}


@pytest.mark.parametrize("key", ["apiKey", "api_key", "authToken", "clientSecret", "password", "Authorization"])
def test_secret_looking_engine_settings_are_masked(api, key):
    """Settings named like credentials, in any spelling, are masked too."""
    assistant = new_assistant(api, engine={"provider": "echo", key: SECRET})
    assert assistant["engine"][key] == MASKED


@pytest.mark.parametrize(
    "key, value",
    [
        ("model", "gpt-4o-mini"),
        ("baseUrl", "https://llm.example.com/v1"),
        ("temperature", 0.2),
        pytest.param("maxTokens", 512),
    ],
)
def test_ordinary_engine_settings_are_shown_as_given(api, key, value):
    """Engine settings that are not credentials come back unmasked."""
    assistant = new_assistant(api, engine={"provider": "echo", key: value})
    assert assistant["engine"][key] == value


def test_patch_with_the_masked_key_keeps_the_stored_secret(api, runtime):
    """Sending back the engine as read (masked) keeps the real secret; a new value replaces it."""
    assistant = new_assistant(api, engine={"provider": "echo", "apiKey": SECRET})
    path = f"/api/assistants/{assistant['id']}"

    kept = ok(api.patch(path, {"engine": assistant["engine"]}))["assistant"]
    assert kept["engine"] == {"provider": "echo", "apiKey": MASKED}
    assert get_assistant(runtime, assistant["id"]).engine == {"provider": "echo", "apiKey": SECRET}

    replaced = ok(api.patch(path, {"engine": {"provider": "echo", "apiKey": NEW_SECRET}}))["assistant"]
    assert replaced["engine"]["apiKey"] == "****9999"
    assert get_assistant(runtime, assistant["id"]).engine == {"provider": "echo", "apiKey": NEW_SECRET}


def test_patch_changes_only_the_given_fields(api):
    """PATCH one field: that field changes, updatedAt moves forward, everything else stays."""
    before = new_assistant(api, **FULL_ASSISTANT)
    time.sleep(0.002)
    after = ok(api.patch(f"/api/assistants/{before['id']}", {"firstMessage": "Hello again"}))["assistant"]
    assert after["firstMessage"] == "Hello again"
    assert after["updatedAt"] > before["updatedAt"]
    assert after["createdAt"] == before["createdAt"]
    unchanged = ASSISTANT_FIELDS - {"firstMessage", "updatedAt"}
    assert {f: after[f] for f in unchanged} == {f: before[f] for f in unchanged}
    assert ok(api.get(f"/api/assistants/{before['id']}"))["assistant"] == after


def test_patch_with_nulls(api):
    """null resets serverEvents and variableValues to defaults and clears optional texts; name and serverSecret stay."""
    before = new_assistant(api, **FULL_ASSISTANT)
    nulls = {"name": None, "serverSecret": None, "serverEvents": None, "variableValues": None,
             "firstMessage": None, "serverUrl": None}
    after = ok(api.patch(f"/api/assistants/{before['id']}", nulls))["assistant"]
    assert after["name"] == before["name"]
    assert after["serverSecret"] == before["serverSecret"]
    assert after["serverEvents"] == EVENT_TYPES
    assert after["variableValues"] == {}
    assert after["firstMessage"] is None and after["serverUrl"] is None
    assert after["systemPrompt"] == before["systemPrompt"]


def test_delete_assistant(api):
    """DELETE answers 200 with the object; then it is gone and a number that pointed at it has assistantId null."""
    assistant = new_assistant(api, engine={"provider": "echo", "apiKey": SECRET})
    number = new_number(api, assistantId=assistant["id"])
    response = api.delete(f"/api/assistants/{assistant['id']}")
    assert ok(response)["assistant"] == assistant
    assert SECRET not in response.get_data(as_text=True)
    assert error_of(api.get(f"/api/assistants/{assistant['id']}"), 404)["code"] == "not_found"
    assert ok(api.get("/api/assistants"))["totalCount"] == 0
    assert ok(api.get(f"/api/phone-numbers/{number['id']}"))["phoneNumber"]["assistantId"] is None


# -- one-object routes on both resources --------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", [path for path, _ in RESOURCES])
def test_unknown_ids_get_404(api, path, method):
    """GET/PATCH/DELETE of an id that does not exist: 404 not_found with the error body."""
    response = api.request(method, f"{path}/{UNKNOWN_ID}", {} if method == "PATCH" else None)
    assert error_of(response, 404)["code"] == "not_found"


@pytest.mark.parametrize("path, key", RESOURCES)
def test_lists_are_newest_first_and_paged(api, path, key):
    """A list answers {<plural>: [...], totalCount}, newest first; limit/offset take a slice, totalCount stays."""
    if key == "assistant":
        created = [new_assistant(api, name=f"A{i}") for i in range(3)]
    else:
        created = [new_number(api, f"+1415555010{i}") for i in range(3)]
    plural = key + "s"
    everything = ok(api.get(path))
    assert set(everything) == {plural, "totalCount"}
    assert ids(everything[plural]) == ids(reversed(created))
    assert everything["totalCount"] == 3
    page = ok(api.get(path, query_string={"limit": 1, "offset": 1}))
    assert ids(page[plural]) == [created[1]["id"]]
    assert page["totalCount"] == 3


# -- phone numbers -------------------------------------------------------------------------------


def test_create_phone_number_with_defaults(api):
    """Only a number: normalised to E.164, SPEC 3 defaults, ISO-Z timestamps."""
    body = ok(api.post("/api/phone-numbers", {"number": "+1 (415) 555-0100"}), 201)
    assert set(body) == {"phoneNumber"}
    number = body["phoneNumber"]
    assert set(number) == PHONE_NUMBER_FIELDS
    assert number["number"] == "+14155550100"
    assert number["sessionExpirationSeconds"] == 86400
    assert number["messagesPerSecond"] == 1
    assert number["mergeBurstSeconds"] == 0
    for field in ("sessionInactivitySeconds", "name", "assistantId", "helpMessage", "optOutMessage", "optInMessage",
                  "messagingServiceSid"):
        assert number[field] is None, field
    assert ISO_Z.match(number["createdAt"]) and ISO_Z.match(number["updatedAt"])


def test_create_phone_number_round_trips_every_field(api):
    """Every SPEC 3 field given in camelCase comes back as given, on create and on GET."""
    assistant = new_assistant(api)
    created = new_number(api, **{**FULL_PHONE_NUMBER, "assistantId": assistant["id"]})
    assert ok(api.get(f"/api/phone-numbers/{created['id']}"))["phoneNumber"] == created
    for field, value in FULL_PHONE_NUMBER.items():
        assert created[field] == value, field
    assert created["assistantId"] == assistant["id"]


@pytest.mark.parametrize("raw", ["+1 (415) 555-0100", "+1-415-555-0100", "  +14155550100  ", "0014155550100"])
def test_numbers_are_normalised_to_e164(api, raw):
    """Spaces, dashes, brackets and a 00 prefix are normalised to E.164."""
    assert new_number(api, raw)["number"] == "+14155550100"


@pytest.mark.parametrize(
    "label, body, field",
    [
        ("number null", {"number": None}, "number"),
        ("number without country code", {"number": "4155550100"}, "number"),
        ("number of letters", {"number": "+1abc"}, "number"),
        ("number with letters", {"number": "+1415CALLNOW"}, "number"),
        ("number too short", {"number": "+1555"}, "number"),
        ("number empty", {"number": ""}, "number"),
        ("sessionExpirationSeconds 59", {"sessionExpirationSeconds": 59}, "sessionExpirationSeconds"),
        ("sessionExpirationSeconds 2592001", {"sessionExpirationSeconds": 2592001}, "sessionExpirationSeconds"),
        ("sessionExpirationSeconds fractional", {"sessionExpirationSeconds": 90.5}, "sessionExpirationSeconds"),
        ("sessionExpirationSeconds a word", {"sessionExpirationSeconds": "a day"}, "sessionExpirationSeconds"),
        ("sessionInactivitySeconds 59", {"sessionInactivitySeconds": 59}, "sessionInactivitySeconds"),
        ("sessionInactivitySeconds 2592001", {"sessionInactivitySeconds": 2592001}, "sessionInactivitySeconds"),
        ("messagesPerSecond 0.05", {"messagesPerSecond": 0.05}, "messagesPerSecond"),
        ("messagesPerSecond 1001", {"messagesPerSecond": 1001}, "messagesPerSecond"),
        ("messagesPerSecond negative", {"messagesPerSecond": -1}, "messagesPerSecond"),
        ("mergeBurstSeconds 11", {"mergeBurstSeconds": 11}, "mergeBurstSeconds"),
        ("mergeBurstSeconds negative", {"mergeBurstSeconds": -0.5}, "mergeBurstSeconds"),
        ("messagingServiceSid too short", {"messagingServiceSid": "MG123"}, "messagingServiceSid"),
        ("messagingServiceSid wrong prefix", {"messagingServiceSid": "PN" + "a" * 32}, "messagingServiceSid"),
        ("messagingServiceSid not hex", {"messagingServiceSid": "MG" + "z" * 32}, "messagingServiceSid"),
        ("name too long", {"name": "x" * 201}, "name"),
        ("helpMessage too long", {"helpMessage": "x" * 1601}, "helpMessage"),
        ("unknown extra field", {"voiceUrl": "https://example.com"}, "voiceUrl"),
    ],
)
@pytest.mark.parametrize("operation", ["create", "update"])
def test_invalid_phone_number_fields_get_422(api, operation, label, body, field):
    """Out-of-range or malformed values get 422 naming the field, on POST and PATCH; nothing changes."""
    if operation == "create":
        assert_invalid(api.post("/api/phone-numbers", {"number": "+14155550100", **body}), field)
        assert ok(api.get("/api/phone-numbers"))["totalCount"] == 0
    else:
        before = new_number(api, "+14155550199")
        assert_invalid(api.patch(f"/api/phone-numbers/{before['id']}", body), field)
        assert ok(api.get(f"/api/phone-numbers/{before['id']}"))["phoneNumber"] == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("sessionExpirationSeconds", 60),
        ("sessionExpirationSeconds", 2592000),
        ("sessionInactivitySeconds", 60),
        ("sessionInactivitySeconds", 2592000),
        ("messagesPerSecond", 0.1),
        ("messagesPerSecond", 1000),
        ("mergeBurstSeconds", 0),
        ("mergeBurstSeconds", 10),
    ],
)
def test_range_limits_are_accepted(api, field, value):
    """The ends of each SPEC 3 range are valid values."""
    assert new_number(api, **{field: value})[field] == value


@pytest.mark.parametrize("operation", ["create", "update"])
def test_unknown_assistant_id_gets_422(api, operation):
    """An assistantId that names no assistant: 422 naming assistantId, on POST and PATCH; nothing changes."""
    if operation == "create":
        response = api.post("/api/phone-numbers", {"number": "+14155550100", "assistantId": UNKNOWN_ID})
        assert_invalid(response, "assistantId")
        assert ok(api.get("/api/phone-numbers"))["totalCount"] == 0
    else:
        before = new_number(api)
        assert_invalid(api.patch(f"/api/phone-numbers/{before['id']}", {"assistantId": UNKNOWN_ID}), "assistantId")
        assert ok(api.get(f"/api/phone-numbers/{before['id']}"))["phoneNumber"] == before


@pytest.mark.parametrize("field", ["number", "sessionExpirationSeconds", "messagesPerSecond", "mergeBurstSeconds"])
def test_patch_null_on_a_required_field_gets_422(api, field):
    """A required field cannot be set to null."""
    before = new_number(api)
    assert_invalid(api.patch(f"/api/phone-numbers/{before['id']}", {field: None}), field)
    assert ok(api.get(f"/api/phone-numbers/{before['id']}"))["phoneNumber"] == before


def test_patch_null_clears_optional_fields(api):
    """Optional fields (assistantId, name, inactivity, messagingServiceSid...) are cleared by null."""
    assistant = new_assistant(api)
    before = new_number(api, **{**FULL_PHONE_NUMBER, "assistantId": assistant["id"]})
    cleared = ("assistantId", "name", "sessionInactivitySeconds", "messagingServiceSid", "helpMessage")
    after = ok(api.patch(f"/api/phone-numbers/{before['id']}", dict.fromkeys(cleared)))["phoneNumber"]
    for field in cleared:
        assert after[field] is None, field
    assert after["sessionExpirationSeconds"] == before["sessionExpirationSeconds"]


def test_patch_phone_number_changes_only_the_given_fields(api):
    """PATCH one field (number, normalised): that field changes, updatedAt moves forward, the rest stays."""
    before = new_number(api, **FULL_PHONE_NUMBER)
    time.sleep(0.002)
    after = ok(api.patch(f"/api/phone-numbers/{before['id']}", {"number": "+1 415 555 0111"}))["phoneNumber"]
    assert after["number"] == "+14155550111"
    assert after["updatedAt"] > before["updatedAt"]
    unchanged = PHONE_NUMBER_FIELDS - {"number", "updatedAt"}
    assert {f: after[f] for f in unchanged} == {f: before[f] for f in unchanged}


@pytest.mark.parametrize(
    "label, first, second, field",
    [
        ("same number", {"number": "+14155550100"}, {"number": "+14155550100"}, "number"),
        ("same number written differently", {"number": "+14155550100"}, {"number": "+1 (415) 555-0100"}, "number"),
        ("same messagingServiceSid", {"number": "+14155550100", "messagingServiceSid": "MG" + "1" * 32},
         {"number": "+14155550101", "messagingServiceSid": "MG" + "1" * 32}, "messagingServiceSid"),
    ],
)
def test_duplicates_get_409(api, label, first, second, field):
    """A number or messagingServiceSid already in use: 409 conflict naming the field, nothing stored."""
    new_number(api, **first)
    error = error_of(api.post("/api/phone-numbers", second), 409)
    assert error["code"] == "conflict"
    assert error["details"]["field"] == field
    assert ok(api.get("/api/phone-numbers"))["totalCount"] == 1


@pytest.mark.parametrize("with_assistant", [False, True])
@pytest.mark.parametrize("field, taken", [("number", "+14155550100"), ("messagingServiceSid", "MG" + "1" * 32)])
def test_patch_to_a_value_in_use_gets_409(api, field, taken, with_assistant):
    """Changing number or messagingServiceSid to one another number uses: 409, nothing changes (with or without an
    assistant: checking the assistant must not flush the clashing change early)."""
    assistant_id = new_assistant(api)["id"] if with_assistant else None
    new_number(api, "+14155550100", messagingServiceSid="MG" + "1" * 32)
    other = new_number(api, "+14155550101", assistantId=assistant_id)
    error = error_of(api.patch(f"/api/phone-numbers/{other['id']}", {field: taken}), 409)
    assert error["details"]["field"] == field
    assert ok(api.get(f"/api/phone-numbers/{other['id']}"))["phoneNumber"] == other


def test_delete_phone_number(api):
    """DELETE answers 200 with the object; then GET is 404 and the number can be added again."""
    number = new_number(api)
    assert ok(api.delete(f"/api/phone-numbers/{number['id']}")) == {"phoneNumber": number}
    assert error_of(api.get(f"/api/phone-numbers/{number['id']}"), 404)["code"] == "not_found"
    new_number(api)


def test_pagination_over_25_numbers(api):
    """25 numbers: pages of 10 cover all of them once, the last page has 5, totalCount is 25 on each."""
    created = [new_number(api, f"+1415555{i:04d}") for i in range(25)]
    pages = [ok(api.get(f"/api/phone-numbers?limit=10&offset={offset}")) for offset in (0, 10, 20)]
    assert [len(p["phoneNumbers"]) for p in pages] == [10, 10, 5]
    assert all(p["totalCount"] == 25 for p in pages)
    assert sum((ids(p["phoneNumbers"]) for p in pages), []) == ids(reversed(created))
    assert ok(api.get("/api/phone-numbers?offset=25"))["phoneNumbers"] == []
    assert len(ok(api.get("/api/phone-numbers"))["phoneNumbers"]) == 20  # the default limit


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
    ],
)
@pytest.mark.parametrize("path", LISTS)
def test_bad_paging_gets_422(api, path, query, field):
    """limit below 1 or above 1000, a negative offset, or non-integers: 422 naming the parameter."""
    assert_invalid(api.get(f"{path}?{query}"), field)


# -- sessions ----------------------------------------------------------------------------------

OTHER = "+14155550124"
THIRD = "+14155550125"
TEXTS = {  # customer -> the text each sends, oldest first
    CUSTOMER: "I'd like a refund please",
    OTHER: "Is the 50% discount_code still valid?",
    THIRD: "hello",
}
FIRST_SID = "SM" + "f" * 32


@pytest.fixture
def conversations(api, webhook, runtime, number) -> dict[str, dict]:
    """Three customers text the business number, in TEXTS order; their sessions by customer number."""
    for customer, body in TEXTS.items():
        sid = FIRST_SID if customer == CUSTOMER else None
        assert webhook(body, from_=customer, to=BUSINESS, sid=sid).status_code == 200
        time.sleep(0.005)
    assert runtime.queue.wait_idle(10)
    return {s["customer"]["number"]: s for s in ok(api.get("/api/sessions"))["sessions"]}


def test_session_list_shape(api, conversations, number, assistant):
    """{sessions, totalCount}; newest first; customer {number, name}; no messages in the list."""
    body = ok(api.get("/api/sessions"))
    assert set(body) == {"sessions", "totalCount"}
    assert body["totalCount"] == 3
    assert [s["customer"] for s in body["sessions"]] == [{"number": c, "name": None} for c in (THIRD, OTHER, CUSTOMER)]
    for session in body["sessions"]:
        assert set(session) == SESSION_FIELDS
        assert session["name"] == session["customer"]["number"]
        assert session["status"] == "active"
        assert session["assistantId"] == assistant.id
        assert session["phoneNumberId"] == number.id
        assert session["expirationSeconds"] == 86400
        assert ISO_Z.match(session["createdAt"]) and ISO_Z.match(session["expiresAt"])
        assert session["expiresAt"] > session["createdAt"]


def test_session_paging(api, conversations):
    """limit and offset take a slice of the newest-first list; totalCount counts every match."""
    body = ok(api.get("/api/sessions?limit=1&offset=1"))
    assert [s["customer"]["number"] for s in body["sessions"]] == [OTHER]
    assert body["totalCount"] == 3


def test_empty_filters_are_ignored(api, conversations):
    """The SPEC's example query, with every filter empty, lists everything."""
    query = "limit=20&offset=0&search=&status=&assistantId=&phoneNumberId=&customerNumber="
    assert ok(api.get(f"/api/sessions?{query}"))["totalCount"] == 3


def test_status_filter(api, runtime, conversations):
    """status=completed / active splits the sessions; an unknown status is 422."""
    with runtime.db.begin() as tx:
        complete(tx, conversations[CUSTOMER]["id"], runtime.clock.now())
    assert listed(api, status="completed") == [CUSTOMER]
    assert listed(api, status="active") == [THIRD, OTHER]
    assert ok(api.get("/api/sessions?status=completed"))["totalCount"] == 1
    assert_invalid(api.get("/api/sessions?status=bogus"), "status")


@pytest.mark.parametrize(
    "label, customer, expected",
    [
        ("E.164", CUSTOMER, [CUSTOMER]),
        ("written with spaces and brackets", "+1 (415) 555-0123", [CUSTOMER]),
        ("a customer with no session", "+14155550999", []),
    ],
)
def test_customer_number_filter(api, conversations, label, customer, expected):
    """customerNumber is normalised before matching."""
    assert listed(api, customerNumber=customer) == expected, label


@pytest.mark.parametrize("value", ["4155550123", "abc", "+1"])
def test_invalid_customer_number_gets_422(api, conversations, value):
    """A customerNumber that is not a phone number: 422 naming customerNumber."""
    assert_invalid(api.get("/api/sessions", query_string={"customerNumber": value}), "customerNumber")


def test_assistant_and_phone_number_filters(api, conversations, assistant, number):
    """assistantId and phoneNumberId filter by id; an id nothing uses lists nothing."""
    assert len(listed(api, assistantId=assistant.id)) == 3
    assert len(listed(api, phoneNumberId=number.id)) == 3
    assert listed(api, assistantId=UNKNOWN_ID) == []
    assert listed(api, phoneNumberId=UNKNOWN_ID) == []
    assert listed(api, phoneNumberId=number.id, customerNumber=OTHER, status="active") == [OTHER]


@pytest.mark.parametrize(
    "label, search, expected",
    [
        ("a word of a message", "refund", [CUSTOMER]),
        ("any case", "REFUND", [CUSTOMER]),
        ("the session name", THIRD, [THIRD]),
        ("matches nothing", "no such words", []),
        ("% is literal", "%", [OTHER]),
        ("_ is literal", "_", [OTHER]),
        ("50% as typed", "50% disc", [OTHER]),
        ("% does not match anything between", "refund%please", []),
        ("_ does not match any one character", "hell_", []),
        ("a backslash", "\\", []),
        ("SQL text", "' OR '1'='1", []),
    ],
)
def test_search(api, conversations, label, search, expected):
    """search matches session names and message content, with % and _ taken literally."""
    assert listed(api, search=search) == expected, label
    assert ok(api.get("/api/sessions", query_string={"search": search}))["totalCount"] == len(expected)


def test_get_session_with_messages_in_order(api, webhook, runtime, conversations):
    """GET one: the session plus its messages in order, with roles, statuses and the inbound MessageSid."""
    webhook("and a receipt", from_=CUSTOMER, to=BUSINESS, sid="SM" + "e" * 32)
    assert runtime.queue.wait_idle(10)
    body = ok(api.get(f"/api/sessions/{conversations[CUSTOMER]['id']}"))
    assert set(body) == {"session"}
    session = body["session"]
    assert set(session) == SESSION_FIELDS | {"messages"}
    messages = session["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", TEXTS[CUSTOMER]), ("assistant", TEXTS[CUSTOMER]),
        ("user", "and a receipt"), ("assistant", "and a receipt"),
    ]
    for message in messages:
        assert set(message) == MESSAGE_FIELDS
        assert message["sessionId"] == session["id"]
        assert message["channel"] == "sms"
        assert ISO_Z.match(message["createdAt"])
    assert [m["twilioSid"] for m in messages[::2]] == [FIRST_SID, "SM" + "e" * 32]
    assert [m["status"] for m in messages[::2]] == ["processed", "processed"]
    assert all(m["status"] in ("sent", "delivered") for m in messages[1::2])
    assert [m["createdAt"] for m in messages] == sorted(m["createdAt"] for m in messages)


def test_unknown_session_gets_404(api, conversations):
    """GET of a session id that does not exist: 404 with the error body."""
    assert error_of(api.get(f"/api/sessions/{UNKNOWN_ID}"), 404)["code"] == "not_found"


def test_deleting_the_assistant_keeps_its_sessions(api, conversations, assistant):
    """Sessions outlive their assistant, with assistantId null."""
    ok(api.delete(f"/api/assistants/{assistant.id}"))
    session = ok(api.get(f"/api/sessions/{conversations[CUSTOMER]['id']}"))["session"]
    assert session["assistantId"] is None
    assert len(session["messages"]) == 2


# -- hostile and odd input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body, key",
    [
        ("/api/assistants", {"name": SQL_AND_SCRIPT, "firstMessage": SQL_AND_SCRIPT, "systemPrompt": SQL_AND_SCRIPT,
                             "variableValues": {SQL_AND_SCRIPT: SQL_AND_SCRIPT}}, "assistant"),
        ("/api/phone-numbers", {"number": "+14155550100", "name": SQL_AND_SCRIPT, "helpMessage": SQL_AND_SCRIPT},
         "phoneNumber"),
    ],
)
def test_sql_and_script_text_is_stored_as_plain_text(api, path, body, key):
    """SQL or script in any text field is data: stored and shown exactly, as JSON, nothing executed."""
    response = api.post(path, body)
    created = ok(response, 201)[key]
    for field, value in body.items():
        assert created[field] == value, field
    fetched = api.get(f"{path}/{created['id']}")
    assert fetched.mimetype == "application/json"
    assert ok(fetched)[key] == created
    assert ok(api.get(path))["totalCount"] == 1  # the table is still there


UNICODE = "Ünïcødé ✓ 名前 🤖 \u202eRTL"
TOO_BIG_FOR_64_BITS = str(2**63)


@pytest.mark.parametrize(
    "label, method, path, body, statuses",
    [
        ("unicode name", "POST", "/api/assistants", {"name": UNICODE, "variableValues": {UNICODE: UNICODE}}, {201}),
        ("100k-character name", "POST", "/api/assistants", {"name": "n" * 100_000}, {422}),
        ("100k-character systemPrompt", "POST", "/api/assistants", {"name": "x", "systemPrompt": "p" * 100_000}, {201}),
        ("long unknown field name", "POST", "/api/assistants", {"name": "x", "f" * 10_000: 1}, {422}),
        ("null engine", "POST", "/api/assistants", {"name": "x", "engine": None}, {201}),
        ("null variableValues", "POST", "/api/assistants", {"name": "x", "variableValues": None}, {201}),
        ("null serverEvents", "POST", "/api/assistants", {"name": "x", "serverEvents": None}, {201}),
        ("engine list", "POST", "/api/assistants", {"name": "x", "engine": ["echo"]}, {422}),
        ("null provider", "POST", "/api/assistants", {"name": "x", "engine": {"provider": None}}, {422}),
        ("name object", "POST", "/api/assistants", {"name": {"first": "x"}}, {422}),
        ("huge integer variable", "POST", "/api/assistants", {"name": "x", "variableValues": {"n": 10**400}},
         {201, 422}),
        ("NUL in a variable value", "POST", "/api/assistants", {"name": "x", "variableValues": {"v": "a\u0000b"}},
         {201, 400, 422}),
        ("NUL in a name", "POST", "/api/assistants", {"name": "a\u0000b"}, {201, 400, 422}),
        ("NUL in a number's name", "POST", "/api/phone-numbers", {"number": "+14155550100", "name": "a\u0000b"},
         {201, 400, 422}),
        # JSON may escape half a surrogate pair ("\\ud800"); UTF-8, and so neither database, can hold one.
        ("lone surrogate in a name", "POST", "/api/assistants", {"name": "a\ud800b"}, {400, 422}),
        ("lone surrogate in a variable key", "POST", "/api/assistants", {"name": "x", "variableValues": {"\udfff": "v"}},
         {201, 400, 422}),
        ("lone surrogate in a chat input", "POST", "/api/chats", {"assistantId": "x", "input": "hi \udc00"}, {400, 422}),
        ("NUL in an assistant id", "GET", "/api/assistants/a%00b", None, {400, 404}),
        ("NUL in a session id", "GET", "/api/sessions/a%00b", None, {400, 404}),
        ("NUL in search", "GET", "/api/sessions?search=a%00b", None, {200, 400, 422}),
        ("NUL in assistantId filter", "GET", "/api/sessions?assistantId=a%00b", None, {200, 400, 422}),
        ("NUL in status filter", "GET", "/api/sessions?status=a%00b", None, {400, 422}),
        pytest.param("NaN variable", "POST", "/api/assistants", {"name": "x", "variableValues": {"v": float("nan")}},
                     {400, 422}),
        pytest.param("Infinity variable", "POST", "/api/assistants",
                     {"name": "x", "variableValues": {"v": float("inf")}}, {400, 422}),
        ("NaN messagesPerSecond", "POST", "/api/phone-numbers",
         {"number": "+14155550100", "messagesPerSecond": float("nan")}, {400, 422}),
        ("null everywhere in a number", "POST", "/api/phone-numbers",
         {"number": "+14155550100", "name": None, "assistantId": None, "sessionExpirationSeconds": None,
          "messagesPerSecond": None, "mergeBurstSeconds": None}, {201}),
        ("number object", "POST", "/api/phone-numbers", {"number": {"e164": "+14155550100"}}, {422}),
        ("huge sessionExpirationSeconds", "POST", "/api/phone-numbers",
         {"number": "+14155550100", "sessionExpirationSeconds": 10**30}, {422}),
        ("long assistantId", "POST", "/api/phone-numbers", {"number": "+14155550100", "assistantId": "a" * 5000},
         {422}),
        ("non-ASCII digits", "POST", "/api/phone-numbers", {"number": "+١٤١٥٥٥٥٠١٠٠"}, {201, 422}),
        ("long id", "GET", "/api/assistants/" + "a" * 5000, None, {404}),
        ("unicode id", "GET", "/api/phone-numbers/名前", None, {404}),
        ("long search", "GET", "/api/sessions?search=" + "s" * 10_000, None, {422}),
        ("unicode search", "GET", "/api/sessions?search=" + UNICODE, None, {200}),
        ("huge limit", "GET", "/api/sessions?limit=" + TOO_BIG_FOR_64_BITS, None, {422}),
        pytest.param("huge offset of assistants", "GET", "/api/assistants?offset=" + TOO_BIG_FOR_64_BITS, None,
                     {200, 422}),
        pytest.param("huge offset of sessions", "GET", "/api/sessions?offset=" + TOO_BIG_FOR_64_BITS, None,
                     {200, 422}),
        ("long status", "GET", "/api/sessions?status=" + "s" * 10_000, None, {422}),
        ("long customerNumber", "GET", "/api/sessions?customerNumber=" + "1" * 10_000, None, {422}),
    ],
)
def test_odd_input_never_gives_500(api, request, database_url, label, method, path, body, statuses):
    """Long, unicode, NUL, NaN, null or wrongly typed input gets a 2xx or a 4xx with the error body, never a 500."""
    response = api.request(method, path, body)
    assert response.status_code in statuses, (label, response.status_code, response.get_data(as_text=True)[:300])
    if response.status_code >= 400:
        error_of(response, response.status_code)
    elif label == "unicode name":
        assert ok(response, 201)["assistant"]["name"] == UNICODE
