"""The operator console in a real headless Chromium against a live gateway (SPEC section 8).

The screenshots taken on the way are the README's (docs/screenshots/) when the
run sets GATEWAY_UPDATE_SCREENSHOTS=1, and go to a temporary directory otherwise.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from gateway.db.models import ApiKey, Message, Session
from tests.browser.conftest import PHONE, screenshot, sign_in

pytestmark = pytest.mark.slow

BUSINESS = "+15550100000"
CUSTOMER = "+15550001234"  # the simulator's default customer
SID = re.compile(r"SM[0-9a-f]{32}")


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def seed_conversation(gateway, text: str) -> Session:
    """An assistant on a number, and one text from a customer answered and delivered (set up without the UI)."""
    from gateway.schemas import AssistantCreate, PhoneNumberCreate
    from gateway.services.assistants import create_assistant
    from gateway.services.phone_numbers import create_phone_number

    assistant = create_assistant(gateway.runtime, AssistantCreate(name="Harbor Bikes", engine={"provider": "faq"}))
    create_phone_number(gateway.runtime, PhoneNumberCreate(number=BUSINESS, name="Front desk",
                                                           assistantId=assistant.id, messagesPerSecond=10))
    assert gateway.live.phone.text(BUSINESS, CUSTOMER, text).http_status == 200

    def delivered():
        with gateway.runtime.db.begin() as tx:
            reply = tx.scalar(select(Message).where(Message.role == "assistant", Message.status == "delivered"))
            return tx.get(Session, reply.session_id) if reply else None

    return gateway.live.wait_for(delivered, 15, "the reply to be delivered")


def has_no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_operator_sets_up_a_number_and_watches_a_conversation_live(open_context, console_gateway):
    """Sign in, add an assistant (after a refused field) and a number, text from the simulator, watch the
    session and its delivered reply appear in the list and the transcript without reloading, end the session."""
    gateway = console_gateway
    context = open_context()
    page = context.new_page()
    sign_in(page, gateway)
    expect(page).to_have_url(re.compile(r"/console/sessions$"))
    expect(page.locator(".empty")).to_contain_text("No sessions yet")

    # An assistant: a refused field is shown next to it, with what was typed kept.
    page.get_by_role("link", name="Assistants", exact=True).click()
    page.get_by_role("link", name="Add assistant").click()
    page.fill("#f-name", "Harbor Bikes <bikes & more>")
    page.select_option("#f-provider", "callhq")
    expect(page.locator("#f-apiKey")).to_be_visible()  # the callhq settings show for callhq...
    page.select_option("#f-provider", "faq")
    expect(page.locator("#f-apiKey")).to_be_hidden()  # ...and hide for the local faq engine
    page.fill("#f-fallbackMessage", "Sorry, something went wrong. Please try again in a minute.")
    page.fill("#f-serverUrl", "hooks.example.com/events")
    page.get_by_role("button", name="Add assistant").click()
    expect(page.locator("#f-serverUrl ~ .error")).to_contain_text("http:// or https://")
    expect(page.locator("#f-name")).to_have_value("Harbor Bikes <bikes & more>")
    screenshot(page, "console-assistant-form.png")
    page.fill("#f-serverUrl", "")
    page.get_by_role("button", name="Add assistant").click()
    expect(page).to_have_url(re.compile(r"/console/assistants$"))
    expect(page.locator("table")).to_contain_text("Harbor Bikes <bikes & more>")

    # A number answered by that assistant.
    page.get_by_role("link", name="Numbers", exact=True).click()
    page.get_by_role("link", name="Add number").click()
    page.fill("#f-number", "+1 555 010 0000")
    page.fill("#f-name", "Front desk")
    page.select_option("#f-assistantId", label="Harbor Bikes <bikes & more>")
    page.fill("#f-messagesPerSecond", "10")
    page.get_by_role("button", name="Add number").click()
    expect(page.locator("table")).to_contain_text(BUSINESS)

    # The sessions list stays open in this tab while a second tab texts from the simulator.
    page.get_by_role("link", name="Sessions", exact=True).click()
    page.evaluate("window.sameDocument = true")
    simulator = context.new_page()
    simulator.goto(gateway.url + "/console/simulator")
    expect(simulator.locator("#f-customer")).to_have_value(CUSTOMER)
    simulator.fill("#f-text", "What are your opening hours?")
    simulator.get_by_role("button", name="Send text").click()
    expect(simulator.locator(".msg-user .msg-body")).to_have_text("What are your opening hours?")
    expect(simulator.locator(".msg-assistant .badge")).to_have_text("delivered")
    screenshot(simulator, "console-simulator.png")

    row = page.locator("tr[data-session-id]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(CUSTOMER)
    expect(row.locator(".last-message")).to_contain_text("Assistant:")
    expect(row.locator(".last-message .badge")).to_have_text("delivered")
    assert page.evaluate("window.sameDocument") is True, "the list was reloaded instead of updated in place"
    screenshot(page, "console-sessions.png")

    # The transcript: delivery details, and the next text arriving while it is open.
    row.get_by_role("link").first.click()
    reply = page.locator(".msg-assistant").first
    expect(reply.locator(".badge")).to_have_text("delivered")
    expect(reply.locator(".msg-status")).to_contain_text(re.compile(r"\d+ segments?"))
    expect(reply.locator(".msg-status")).to_contain_text("GSM-7")
    expect(reply.locator(".sid")).to_have_text(SID)
    page.evaluate("window.sameDocument = true")
    simulator.fill("#f-text", "Do you repair bikes?")
    simulator.get_by_role("button", name="Send text").click()
    expect(page.locator(".msg")).to_have_count(4)
    expect(page.locator(".msg-assistant .badge").nth(1)).to_have_text("delivered")
    assert page.evaluate("window.sameDocument") is True, "the transcript was reloaded instead of updated in place"
    screenshot(page, "console-transcript.png")

    # Ending takes two clicks: open the box, confirm.
    page.get_by_text("End session…").click()
    page.get_by_role("button", name="Yes, end this session").click()
    expect(page.locator(".flash")).to_contain_text("Session ended")
    expect(page.locator(".session-head h1 .badge")).to_have_text("completed")
    with gateway.runtime.db.begin() as tx:
        assert tx.scalar(select(Session.status)) == "completed"


def test_a_bad_key_is_refused_and_revoking_a_key_signs_the_console_out(page, console_gateway):
    """A wrong key stays on sign-in with an error; a key revoked while its console is open is sent back to
    sign-in by the live list's next poll."""
    from gateway.services.api_keys import revoke_key

    gateway = console_gateway
    page.goto(gateway.url + "/console/numbers")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    sign_in(page, gateway, key="gk_" + "x" * 43)
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.goto(gateway.url + "/console/sessions")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))

    sign_in(page, gateway)
    expect(page).to_have_url(re.compile(r"/console/sessions$"))
    with gateway.runtime.db.begin() as tx:
        key_id = tx.scalar(select(ApiKey.id))
    revoke_key(gateway.runtime, key_id)
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    expect(page.locator(".flash")).to_contain_text("revoked")


def test_the_console_on_a_phone_sized_screen(open_context, console_gateway):
    """At 390x844 every page fits the width (tables become cards) and the navigation stays usable."""
    gateway = console_gateway
    session = seed_conversation(gateway, "Hi! Can I rent a bike for tomorrow morning?")
    page = open_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True).new_page()
    sign_in(page, gateway)
    expect(page.locator("tr[data-session-id] .last-message .badge")).to_have_text("delivered")
    for name in ("Sessions", "Simulator", "Numbers", "Assistants"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    assert has_no_sideways_scroll(page)
    screenshot(page, "console-phone.png")

    page.goto(f"{gateway.url}/console/sessions/{session.id}")
    expect(page.locator(".msg-assistant .badge")).to_have_text("delivered")
    assert has_no_sideways_scroll(page)
    screenshot(page, "console-phone-transcript.png")

    for path in ("/console/simulator", "/console/numbers", "/console/assistants/new"):
        page.goto(gateway.url + path)
        assert has_no_sideways_scroll(page), path


def test_the_console_works_without_javascript(open_context, console_gateway):
    """Without script the pages still render, the filter still submits and a session can still be ended."""
    gateway = console_gateway
    session = seed_conversation(gateway, "hello")
    page = open_context(java_script_enabled=False).new_page()
    sign_in(page, gateway)
    page.fill("input[name=search]", "hello")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-session-id]")).to_have_count(1)
    page.locator("tr[data-session-id] a").first.click()
    expect(page.locator(".msg-assistant .badge")).to_have_text("delivered")
    page.get_by_text("End session…").click()
    page.get_by_role("button", name="Yes, end this session").click()
    expect(page.locator(".session-head h1 .badge")).to_have_text("completed")
    with gateway.runtime.db.begin() as tx:
        assert tx.get(Session, session.id).status == "completed"
