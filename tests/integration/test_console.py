"""The operator console under /console (SPEC section 8), through the Flask test client: sign-in and its
checks, CSRF refusals, the forms' validation (the API's own models), credential masking, escaping, the
session list and transcript, ending a session and the simulator."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest
from sqlalchemy import select, update

from gateway.db.models import ApiKey, Assistant, Message, PhoneNumber, Session
from gateway.schemas import AssistantCreate, SessionCreate
from gateway.services.api_keys import create_key, revoke_key
from gateway.services.assistants import create_assistant, get_assistant
from gateway.services.session_api import create_session
from gateway.services.sessions import end_session
from gateway.web.console.auth import MAX_SIGN_IN_AGE
from tests.conftest import BUSINESS, CUSTOMER
from tests.support.clock import ManualClock
from tests.support.observe import wait_until

SQL_AND_SCRIPT = "'); DROP TABLE sessions; -- <script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECRET = "sk-live-1234567890abcdef"
MASKED = "****cdef"
UNKNOWN_ID = str(uuid.UUID(int=0))

PAGES = ["/console/", "/console/sessions", "/console/sessions/rows", f"/console/sessions/{UNKNOWN_ID}",
         f"/console/sessions/{UNKNOWN_ID}/transcript", "/console/numbers", "/console/numbers/new",
         f"/console/numbers/{UNKNOWN_ID}/edit", "/console/assistants", "/console/assistants/new",
         f"/console/assistants/{UNKNOWN_ID}/edit", "/console/simulator"]
FORMS = ["/console/assistants/new", "/console/numbers/new", "/console/simulator",
         f"/console/sessions/{UNKNOWN_ID}/end", "/console/sign-out"]


# -- helpers ---------------------------------------------------------------------------------------


class FormFields(HTMLParser):
    """The name/value pairs a browser would submit for the first <form> with a given action."""

    def __init__(self, action: str):
        super().__init__()
        self.action, self.inside, self.pairs = action, False, []
        self._textarea = self._select = None
        self._first_option = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("action") == self.action and not self.pairs
        if not self.inside:
            return
        if tag == "input" and attrs.get("name") and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") != "checkbox" or "checked" in attrs:
                self.pairs.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "textarea":
            self._textarea = [attrs["name"], ""]
        elif tag == "select":
            self._select, self._first_option = attrs["name"], None
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = attrs.get("value", "")
            if "selected" in attrs:
                self.pairs.append((self._select, attrs.get("value", "")))
                self._select = "chosen:" + self._select

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "textarea" and self._textarea is not None:
            self.pairs.append(tuple(self._textarea))
            self._textarea = None
        elif tag == "select" and self._select:
            if not self._select.startswith("chosen:"):
                self.pairs.append((self._select, self._first_option or ""))
            self._select = None
        elif tag == "form":
            self.inside = False


def form_of(html: str, action: str) -> dict[str, list[str]]:
    parser = FormFields(action)
    parser.feed(html)
    fields: dict[str, list[str]] = {}
    for name, value in parser.pairs:
        fields.setdefault(name, []).append(value)
    return fields


def field_error(html: str, name: str) -> str | None:
    """The error shown inside the field named ``name``, or None."""
    match = re.search(rf'id="f-{re.escape(name)}".*?(?:<p class="error"[^>]*>([^<]*)</p>|</div>)', html, re.S)
    return match.group(1) if match and match.group(1) else None


class Console:
    """A test client signed in to the console, posting forms with the session's CSRF token."""

    def __init__(self, client):
        self.client = client

    def sign_in(self, key: str, next_url: str | None = None):
        self.client.get("/console/sign-in")
        data = {"key": key, "csrf_token": self.token}
        if next_url is not None:
            data["next"] = next_url
        return self.client.post("/console/sign-in", data=data)

    @property
    def token(self) -> str:
        with self.client.session_transaction() as session:
            return session.get("csrf", "")

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict):
        return self.client.post(path, data={**data, "csrf_token": self.token})


@pytest.fixture
def console(client, api_key) -> Console:
    signed_in = Console(client)
    assert signed_in.sign_in(api_key).status_code == 303
    return signed_in


def sessions_in(runtime) -> list[Session]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Session).order_by(Session.created_at)))


def texted(webhook, runtime, body: str = "hello", **params) -> Session:
    """Text the business number through the signed webhook and wait until the reply is delivered."""
    assert webhook(body, **params).status_code == 200

    def answered():
        with runtime.db.begin() as tx:
            inbound = tx.scalar(select(Message).where(Message.role == "user", Message.content == body))
            replies = list(tx.scalars(select(Message).where(Message.session_id == inbound.session_id,
                                                             Message.role == "assistant",
                                                             Message.status == "delivered")))
            return tx.get(Session, inbound.session_id) if replies else None

    return wait_until(answered, 10, "the reply to be delivered")


# -- signing in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_redirects_to_sign_in_without_a_key(client, path):
    """Without a signed-in key every console page sends the browser to sign-in, remembering where it was going."""
    response = client.get(path)
    assert response.status_code == 303
    assert response.location.startswith("/console/sign-in?next=")


@pytest.mark.parametrize("path", FORMS)
def test_posts_without_a_key_redirect_and_change_nothing(client, runtime, assistant, path):
    """A form posted without a sign-in (even with a token) only redirects to sign-in."""
    response = client.post(path, data={"name": "Sneaky", "number": "+14155550199", "text": "hi"})
    assert response.status_code == 303 and response.location.startswith("/console/sign-in")
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Assistant).where(Assistant.name == "Sneaky")) is None
        assert tx.scalar(select(PhoneNumber)) is None


def test_signing_in_with_a_valid_key_returns_to_the_page_asked_for(client, api_key):
    """A valid key signs in and goes back to the page that asked for it."""
    console = Console(client)
    response = console.sign_in(api_key, next_url="/console/numbers")
    assert response.status_code == 303 and response.location == "/console/numbers"
    page = console.get("/console/numbers")
    assert page.status_code == 200 and "tests" in page.text  # the key's name, shown in the top bar


@pytest.mark.parametrize("key", ["", "gk_not-a-real-key", "x" * 500])
def test_a_wrong_key_is_refused(client, api_key, key):
    """A wrong, empty or absurd key shows the sign-in form again with an error and grants nothing."""
    console = Console(client)
    response = console.sign_in(key)
    assert response.status_code == 401
    assert "not valid" in response.text
    assert client.get("/console/sessions").status_code == 303


def test_a_revoked_key_cannot_sign_in(client, runtime):
    """A revoked key is refused at sign-in."""
    key, plaintext = create_key(runtime, "old")
    revoke_key(runtime, key.id)
    assert Console(client).sign_in(plaintext).status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/api/sessions", "/console\\@evil"])
def test_sign_in_never_redirects_off_the_console(client, api_key, target):
    """The `next` parameter only leads back into the console (no open redirect)."""
    response = Console(client).sign_in(api_key, next_url=target)
    assert response.status_code == 303 and response.location == "/console/sessions"


def test_revoking_the_key_ends_the_sign_in_at_the_next_request(console, runtime):
    """The key is checked on every request: once revoked, the next click lands on sign-in."""
    assert console.get("/console/sessions").status_code == 200
    with runtime.db.begin() as tx:
        key_id = tx.scalar(select(ApiKey.id).where(ApiKey.name == "tests"))
    revoke_key(runtime, key_id)
    response = console.get("/console/sessions")
    assert response.status_code == 303 and response.location.startswith("/console/sign-in")
    assert "revoked" in console.get(response.location).text


def test_a_sign_in_expires(make_runtime, settings):
    """A sign-in lasts MAX_SIGN_IN_AGE; after that the key is asked for again."""
    from gateway import create_app

    clock = ManualClock()
    runtime = make_runtime(settings, clock=clock)
    console = Console(create_app(runtime=runtime).test_client())
    console.sign_in(create_key(runtime, "ops")[1])
    clock.advance(MAX_SIGN_IN_AGE.total_seconds() - 60)
    assert console.get("/console/sessions").status_code == 200
    clock.advance(120)
    assert console.get("/console/sessions").status_code == 303


def test_the_cookie_holds_the_key_id_not_the_key(client, api_key):
    """The session cookie is signed, HttpOnly and SameSite=Lax, and never carries the key itself."""
    console = Console(client)
    response = console.sign_in(api_key)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert api_key not in cookie and api_key[3:20] not in cookie
    with client.session_transaction() as session:
        assert api_key not in str(dict(session))


def test_a_forged_cookie_is_not_a_sign_in(app, client, runtime, api_key):
    """Only a cookie signed with the app's secret signs in: the same content signed with another secret is ignored."""
    from flask import Flask

    with runtime.db.begin() as tx:
        key_id = tx.scalar(select(ApiKey.id))
    content = {"key_id": key_id, "signed_in_at": runtime.clock.now().timestamp()}
    forger = Flask("forger")
    forger.secret_key = "not-the-gateway-secret"
    client.set_cookie("session", app.session_interface.get_signing_serializer(forger).dumps(content))
    assert client.get("/console/sessions").status_code == 303
    client.set_cookie("session", app.session_interface.get_signing_serializer(app).dumps(content))
    assert client.get("/console/sessions").status_code == 200  # the control: the genuine cookie works


def test_signing_out_ends_the_sign_in(console):
    """Sign out (a POST with the token) clears the session; pages redirect to sign-in again."""
    response = console.post("/console/sign-out", {})
    assert response.status_code == 303 and response.location == "/console/sign-in"
    assert console.get("/console/sessions").status_code == 303


def test_console_pages_carry_security_headers(console):
    """Pages are never cached or framed and run only the console's own script and styles."""
    response = console.get("/console/sessions")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in response.text  # no inline script anywhere: CSP would block it


def test_static_files_are_served_by_the_gateway(client):
    """The stylesheet and script come from the gateway itself (no CDN)."""
    assert "text/css" in client.get("/static/console.css").content_type
    assert "javascript" in client.get("/static/console.js").content_type


# -- CSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token", "ünïcode"])
@pytest.mark.parametrize("path", FORMS)
def test_forms_without_the_csrf_token_are_refused(console, runtime, path, token):
    """Every POST needs the session's CSRF token; without it nothing changes."""
    data = {"name": "Forged", "provider": "echo", "number": BUSINESS, "text": "hi", "customer": CUSTOMER}
    if token is not None:
        data["csrf_token"] = token
    response = console.client.post(path, data=data)
    assert response.status_code == 403
    assert "CSRF" in response.text
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Assistant)) is None and tx.scalar(select(PhoneNumber)) is None
    assert console.get("/console/sessions").status_code == 200  # still signed in: sign-out was refused too


def test_sign_in_needs_the_csrf_token(client, api_key):
    """The sign-in form is protected too (no signing a victim in to an attacker's key)."""
    response = client.post("/console/sign-in", data={"key": api_key})
    assert response.status_code == 403
    assert client.get("/console/sessions").status_code == 303


def test_signing_in_renews_the_token(client, api_key):
    """A token seen before sign-in is not the token after it."""
    console = Console(client)
    client.get("/console/sign-in")
    before = console.token
    console.client.post("/console/sign-in", data={"key": api_key, "csrf_token": before})
    assert console.token and console.token != before


# -- assistants ------------------------------------------------------------------------------------


def test_adding_an_assistant(console, runtime):
    """The form creates an assistant as the API would, with the events checked."""
    response = console.post("/console/assistants/new", {
        "name": "Front desk", "provider": "echo", "firstMessage": "Hi!\r\nWelcome.",
        "variableValues": '{"shop": "Corner"}', "serverUrl": "https://hooks.example.com/e",
        "serverEvents": ["session.created", "message.status"], "engineExtra": '{"temperature": 0.2}',
    })
    assert response.status_code == 303 and response.location == "/console/assistants"
    with runtime.db.begin() as tx:
        saved = tx.scalar(select(Assistant).where(Assistant.name == "Front desk"))
    assert saved.engine == {"provider": "echo", "temperature": 0.2}
    assert saved.first_message == "Hi!\nWelcome."  # the browser's CRLF would count as SMS characters
    assert saved.variable_values == {"shop": "Corner"}
    assert saved.server_events == ["session.created", "message.status"]
    assert len(saved.server_secret) >= 16  # generated
    assert "Front desk" in console.get("/console/assistants").text


@pytest.mark.parametrize("changes, field, message", [
    ({"name": ""}, "name", "at least 1 character"),
    ({"name": "n" * 201}, "name", "at most 200 characters"),
    ({"serverUrl": "ftp://files.example"}, "serverUrl", "http:// or https://"),
    ({"serverSecret": "short"}, "serverSecret", "at least 16 characters"),
    ({"variableValues": "[1, 2]"}, "variableValues", "JSON object"),
    ({"variableValues": "{not json"}, "variableValues", "not valid JSON"),
    ({"variableValues": '{"nested": {"a": 1}}'}, "variableValues", "nested"),
    ({"provider": "nope"}, "engine", "unknown provider"),
    ({"provider": "callhq"}, "engine", "callhq engine needs baseUrl"),
    ({"provider": "webhook", "url": "javascript:alert(1)"}, "engine", "http:// or https://"),
    ({"engineExtra": '{"apiKey": "x"}'}, "engineExtra", "own field"),
    ({"firstMessage": "x" * 1601}, "firstMessage", "at most 1600"),
])
def test_an_invalid_assistant_field_shows_its_error_and_keeps_the_values(console, runtime, changes, field, message):
    """The API's validation, shown next to the field, with everything typed still in the form."""
    form = {"name": "Desk", "provider": "echo", "fallbackMessage": "Sorry <b>later</b>", **changes}
    response = console.post("/console/assistants/new", form)
    assert response.status_code == 422
    if field == "engine":
        shown = re.search(r'<p class="error" id="error-engine">([^<]*)</p>', response.text).group(1)
    else:
        shown = field_error(response.text, field)
    assert shown and message in shown
    kept = form_of(response.text, "/console/assistants/new")
    assert kept["fallbackMessage"] == ["Sorry <b>later</b>"]
    assert "Sorry &lt;b&gt;later&lt;/b&gt;" in response.text
    with runtime.db.begin() as tx:
        assert tx.scalar(select(Assistant)) is None


def test_engine_credentials_are_masked_and_kept_when_sent_back(console, runtime):
    """The edit form shows apiKey masked; saving it unchanged keeps the stored key, a new value replaces it."""
    assistant = create_assistant(runtime, AssistantCreate(name="Remote", engine={
        "provider": "callhq", "baseUrl": "https://api.callhq.example", "apiKey": SECRET, "assistantId": "a-1",
        "sessionToken": SECRET}))
    path = f"/console/assistants/{assistant.id}/edit"
    page = console.get(path)
    assert SECRET not in page.text and MASKED in page.text
    form = form_of(page.text, path)
    assert form["apiKey"] == [MASKED]
    form["name"] = ["Remote, renamed"]
    response = console.post(path, form)
    assert response.status_code == 303, response.text
    saved = get_assistant(runtime, assistant.id)
    assert saved.name == "Remote, renamed"
    assert saved.engine["apiKey"] == SECRET and saved.engine["sessionToken"] == SECRET

    form["apiKey"] = ["sk-live-brand-new-key-42"]
    assert console.post(path, form).status_code == 303
    assert get_assistant(runtime, assistant.id).engine["apiKey"] == "sk-live-brand-new-key-42"


def test_editing_an_assistant_can_clear_optional_fields(console, runtime):
    """Emptying a message field clears it; an empty signing secret keeps the current one."""
    assistant = create_assistant(runtime, AssistantCreate(name="Desk", engine={"provider": "echo"},
                                                          fallbackMessage="Sorry", variableValues={"a": 1}))
    path = f"/console/assistants/{assistant.id}/edit"
    form = form_of(console.get(path).text, path)
    form.update(fallbackMessage=[""], variableValues=[""], serverSecret=[""])
    assert console.post(path, form).status_code == 303
    saved = get_assistant(runtime, assistant.id)
    assert saved.fallback_message is None and saved.variable_values == {}
    assert saved.server_secret == assistant.server_secret


# -- numbers ---------------------------------------------------------------------------------------


def test_adding_and_editing_a_number(console, runtime, assistant):
    """A number is added with the API's normalisation and defaults, then edited."""
    response = console.post("/console/numbers/new", {"number": "+1 (415) 555-0100", "name": "Main",
                                                     "assistantId": assistant.id})
    assert response.status_code == 303
    with runtime.db.begin() as tx:
        number = tx.scalar(select(PhoneNumber))
    assert number.number == "+14155550100" and number.session_expiration_seconds == 86400
    assert number.messages_per_second == 1.0 and number.assistant_id == assistant.id

    path = f"/console/numbers/{number.id}/edit"
    form = form_of(console.get(path).text, path)
    assert form["number"] == ["+14155550100"] and form["assistantId"] == [assistant.id]
    form.update(sessionInactivitySeconds=["600"], helpMessage=["Text STOP\r\nto leave"], assistantId=[""])
    assert console.post(path, form).status_code == 303
    with runtime.db.begin() as tx:
        number = tx.get(PhoneNumber, number.id)
    assert number.session_inactivity_seconds == 600 and number.help_message == "Text STOP\nto leave"
    assert number.assistant_id is None
    assert "+14155550100" in console.get("/console/numbers").text


@pytest.mark.parametrize("changes, field, message", [
    ({"number": "4155550100"}, "number", "E.164"),
    ({"number": "+1 415 CALL NOW"}, "number", "not an E.164 number"),
    ({"number": ""}, "number", "required"),
    ({"sessionExpirationSeconds": "59"}, "sessionExpirationSeconds", "greater than or equal to 60"),
    ({"sessionExpirationSeconds": "2592001"}, "sessionExpirationSeconds", "less than or equal to 2592000"),
    ({"sessionInactivitySeconds": "1.5"}, "sessionInactivitySeconds", "valid integer"),
    ({"messagesPerSecond": "fast"}, "messagesPerSecond", "valid number"),
    ({"messagesPerSecond": "0"}, "messagesPerSecond", "greater than or equal to 0.1"),
    ({"mergeBurstSeconds": "11"}, "mergeBurstSeconds", "less than or equal to 10"),
    ({"messagingServiceSid": "MG123"}, "messagingServiceSid", "match pattern"),
    ({"assistantId": UNKNOWN_ID}, "assistantId", "no assistant"),
])
def test_an_invalid_number_field_shows_its_error_and_keeps_the_values(console, runtime, changes, field, message):
    """The API's validation, next to the field, with the typed values kept."""
    form = {"number": "+14155550100", "name": "<b>Main</b> line", **changes}
    response = console.post("/console/numbers/new", form)
    assert response.status_code == 422
    shown = field_error(response.text, field)
    assert shown and message in shown, response.text
    assert form_of(response.text, "/console/numbers/new")["name"] == ["<b>Main</b> line"]
    with runtime.db.begin() as tx:
        assert tx.scalar(select(PhoneNumber)) is None


def test_a_number_that_exists_already_is_refused_on_its_field(console, number):
    """Adding a number twice names the number field (the API's 409)."""
    response = console.post("/console/numbers/new", {"number": BUSINESS})
    assert response.status_code == 422
    assert "already exists" in field_error(response.text, "number")


def test_required_number_fields_cannot_be_emptied_when_editing(console, runtime, number):
    """Emptying a field the number cannot be without is refused, not silently reset."""
    path = f"/console/numbers/{number.id}/edit"
    form = form_of(console.get(path).text, path)
    form.update(messagesPerSecond=[""], sessionExpirationSeconds=[""])
    response = console.post(path, form)
    assert response.status_code == 422
    assert field_error(response.text, "messagesPerSecond") == "this field is required"
    assert field_error(response.text, "sessionExpirationSeconds") == "this field is required"


def test_unknown_ids_get_the_console_404_page(console):
    """An unknown number, assistant or session shows a 404 page inside the console."""
    for path in (f"/console/numbers/{UNKNOWN_ID}/edit", f"/console/assistants/{UNKNOWN_ID}/edit",
                 f"/console/sessions/{UNKNOWN_ID}", f"/console/sessions/{UNKNOWN_ID}/transcript"):
        response = console.get(path)
        assert response.status_code == 404 and "Not found" in response.text
    assert console.post(f"/console/sessions/{UNKNOWN_ID}/end", {}).status_code == 404


# -- escaping --------------------------------------------------------------------------------------


def test_script_and_sql_text_shows_as_plain_text(console, runtime, webhook, number):
    """Names and messages holding script or SQL are stored as given and shown escaped on every page."""
    assert console.post(f"/console/numbers/{number.id}/edit", {
        **{k: v[0] for k, v in form_of(console.get(f"/console/numbers/{number.id}/edit").text,
                                       f"/console/numbers/{number.id}/edit").items() if k != "csrf_token"},
        "name": SQL_AND_SCRIPT}).status_code == 303
    create_assistant(runtime, AssistantCreate(name=SQL_AND_SCRIPT, engine={"provider": "echo"}))
    session = texted(webhook, runtime, SQL_AND_SCRIPT)
    pages = ["/console/numbers", "/console/assistants", "/console/sessions", "/console/sessions/rows",
             f"/console/sessions/{session.id}", f"/console/sessions/{session.id}/transcript",
             f"/console/simulator?session={session.id}", "/console/sessions?search=%3Cscript%3E"]
    for path in pages:
        text = console.get(path).text
        assert "<script>alert(1)</script>" not in text, path
        assert ESCAPED_SCRIPT in text, path
    with runtime.db.begin() as tx:  # the SQL stayed text: the tables are all still there
        assert tx.scalar(select(Message.content).where(Message.role == "user")) == SQL_AND_SCRIPT


def test_media_links_are_only_web_links(console, runtime, webhook, number):
    """A media URL becomes a link only when it is http(s): a javascript: URL is shown as text."""
    session = texted(webhook, runtime, "pics", NumMedia="2", MediaUrl0="https://media.example/cat.jpg",
                     MediaContentType0="image/jpeg", MediaUrl1="javascript:alert(1)", MediaContentType1="text/html")
    text = console.get(f"/console/sessions/{session.id}").text
    assert 'href="https://media.example/cat.jpg"' in text
    assert 'href="javascript' not in text and "javascript:alert(1)" in text


# -- sessions --------------------------------------------------------------------------------------


class TestSessionPages:
    """The session list and transcript read with queries of their own: run them on both databases."""

    @pytest.fixture
    def database_url_or_default(self, database_url):
        return database_url

    def test_the_list_shows_sessions_newest_first_with_their_last_message(self, console, runtime, webhook, number):
        """Each row: customer, business number, status and the latest message (the reply) with its status."""
        texted(webhook, runtime, "first", from_="+14155550101")
        texted(webhook, runtime, "second", from_="+14155550102")
        page = console.get("/console/sessions").text
        assert page.index("+14155550102") < page.index("+14155550101")
        assert BUSINESS in page and "Test assistant" in page
        row = re.search(r'<tr data-session-id.*?</tr>', page, re.S).group(0)
        assert "Assistant:" in row and "second" in row and "delivered" in row and "2 messages" in row
        assert console.get("/console/sessions/rows").text.strip().startswith("<table")

    def test_search_and_status_filter(self, console, runtime, webhook, number):
        """`search` matches names and message content; `status` keeps active or completed sessions."""
        kept = texted(webhook, runtime, "where is my order?", from_="+14155550101")
        ended = texted(webhook, runtime, "opening hours", from_="+14155550102")
        end_session(runtime, ended.id)
        searched = console.get("/console/sessions?search=order").text
        assert "+14155550101" in searched and "+14155550102" not in searched
        completed = console.get("/console/sessions/rows?status=completed").text
        assert ended.id in completed and kept.id not in completed
        active = console.get("/console/sessions?status=active").text
        assert kept.id in active and ended.id not in active
        assert "No sessions match" in console.get("/console/sessions?search=nothing-like-this").text
        # Nonsense filters show everything rather than an error.
        assert console.get("/console/sessions?status=bogus&page=x").status_code == 200

    def test_the_list_is_paginated(self, console, runtime, assistant):
        """25 sessions a page, links to older and newer pages keep the filters."""
        for index in range(30):
            create_session(runtime, SessionCreate(name=f"api-{index:02d}", assistantId=assistant.id))
        first = console.get("/console/sessions?search=api-").text
        assert "1–25 of 30" in first and "api-29" in first and "api-04" not in first
        assert "/console/sessions?search=api-&amp;page=2" in first
        second = console.get("/console/sessions?search=api-&page=2").text
        assert "26–30 of 30" in second and "api-00" in second and "api-29" not in second

    def test_the_transcript_shows_delivery_details(self, console, runtime, webhook, number):
        """Messages in order; outbound ones with status, segments, encoding, sid, error code and message."""
        session = texted(webhook, runtime, "hello there")
        with runtime.db.begin() as tx:
            tx.execute(update(Message).where(Message.session_id == session.id, Message.role == "assistant")
                       .values(status="failed", error_code=21610,
                               error_message="Attempt to send to unsubscribed recipient"))
            reply = tx.scalar(select(Message).where(Message.session_id == session.id, Message.role == "assistant"))
        page = console.get(f"/console/sessions/{session.id}").text
        assert page.index("msg-user") < page.index("msg-assistant")
        assert "1 segment" in page and "GSM-7" in page and reply.twilio_sid in page
        assert "Error 21610: Attempt to send to unsubscribed recipient" in page
        assert 'data-live-src="/console/sessions/%s/transcript"' % session.id in page
        fragment = console.get(f"/console/sessions/{session.id}/transcript").text
        assert "failed" in fragment and "<html" not in fragment

    def test_ending_a_session(self, console, runtime, webhook, number):
        """End (POST, confirmed in the page) completes the session; ending it again changes nothing."""
        session = texted(webhook, runtime)
        page = console.get(f"/console/sessions/{session.id}").text
        assert "Yes, end this session" in page
        response = console.post(f"/console/sessions/{session.id}/end", {})
        assert response.status_code == 303 and response.location == f"/console/sessions/{session.id}"
        after = console.get(response.location).text
        assert "Session ended." in after and "Yes, end this session" not in after
        assert sessions_in(runtime)[0].status == "completed"
        again = console.post(f"/console/sessions/{session.id}/end", {})
        assert "already ended" in console.get(again.location).text


# -- simulator -------------------------------------------------------------------------------------


def test_the_simulator_sends_a_text_down_the_webhook_path(console, runtime, number):
    """The text is stored like a webhook's (generated MessageSid, session), answered, and shown live."""
    page = console.get("/console/simulator").text
    form = form_of(page, "/console/simulator")
    assert form["number"] == [number.id] and form["customer"] == ["+15550001234"]
    response = console.post("/console/simulator", {"number": number.id, "customer": "+1 415 555 0123",
                                                   "text": "hi from the console"})
    assert response.status_code == 303
    session = sessions_in(runtime)[0]
    assert f"session={session.id}" in response.location
    with runtime.db.begin() as tx:
        inbound = tx.scalar(select(Message).where(Message.role == "user"))
    assert inbound.content == "hi from the console" and re.fullmatch(r"SM[0-9a-f]{32}", inbound.twilio_sid)
    assert session.phone_number_id == number.id and session.name == CUSTOMER

    def answered():
        text = console.get(f"/console/sessions/{session.id}/transcript").text
        return text if text.count("hi from the console") == 2 and "delivered" in text else None

    wait_until(answered, 10, "the echo reply in the transcript")
    shown = console.get(response.location).text
    assert 'id="transcript-live"' in shown and "hi from the console" in shown
    assert form_of(shown, "/console/simulator")["customer"] == [CUSTOMER]


@pytest.mark.parametrize("changes, field, message", [
    ({"customer": "12345"}, "customer", "E.164"),
    ({"text": "   "}, "text", "type the text"),
    ({"text": "x" * 1601}, "text", "at most 1600"),
    ({"number": UNKNOWN_ID}, "number", "choose one of your numbers"),
])
def test_the_simulator_refuses_bad_input_and_keeps_it(console, runtime, number, changes, field, message):
    """Bad simulator input is shown with its error and nothing is sent."""
    form = {"number": number.id, "customer": "+14155550123", "text": "<i>hello</i>", **changes}
    response = console.post("/console/simulator", form)
    assert response.status_code == 422
    assert message in field_error(response.text, field)
    assert sessions_in(runtime) == []
    if field != "text":
        assert "&lt;i&gt;hello&lt;/i&gt;" in response.text


def test_the_simulator_asks_for_a_number_first(console):
    """Without numbers the simulator points to adding one."""
    assert "Add a number" in console.get("/console/simulator").text


def test_sign_in_cookie_is_secure_when_the_public_url_is_https(make_runtime, settings):
    from gateway import create_app

    https = create_app(runtime=make_runtime(settings.replace(public_url="https://sms.example.com")))
    assert https.config["SESSION_COOKIE_SECURE"] is True
    plain = create_app(runtime=make_runtime(settings.replace(public_url="http://localhost:5000")))
    assert not plain.config.get("SESSION_COOKIE_SECURE")
