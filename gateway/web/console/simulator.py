"""Sending a test text as if a customer had texted a business number, and watching the reply arrive.

The text takes the webhook's own path (parse_inbound, then accept_inbound)
with a freshly generated MessageSid, so it is stored, sessioned and answered
exactly like one from Twilio. It is not posted to /twilio/sms over HTTP: a
single-worker server would then wait on itself.
"""

from __future__ import annotations

import uuid

from flask import redirect, render_template, request, url_for

from gateway.domain.phone import InvalidNumber, to_e164
from gateway.errors import BadRequest, NotFound
from gateway.services import phone_numbers
from gateway.services.inbound import accept_inbound, parse_inbound
from gateway.services.session_queries import get_session
from gateway.web import runtime
from gateway.web.console import console
from gateway.web.console.forms import FormState, multiline, text
from gateway.web.console.sessions import transcript_context

# The customer number `gateway demo` texts from: a 555 number no real phone has.
DEFAULT_CUSTOMER = "+15550001234"
MAX_TEXT = 1600  # Twilio's limit for one inbound message body
LIST_LIMIT = 500


def webhook_form(account_sid: str, to: str, from_: str, body: str) -> dict:
    """The parameters Twilio would post for this text, with a fresh MessageSid."""
    sid = "SM" + uuid.uuid4().hex
    return {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": account_sid,
            "From": from_, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", "ApiVersion": "2010-04-01"}


def _page(state: FormState, session_id: str | None, status: int = 200):
    numbers, _ = phone_numbers.list_phone_numbers(runtime(), LIST_LIMIT, 0)
    conversation = None
    if session_id:
        try:
            conversation = transcript_context(session_id)
        except NotFound:
            conversation = None  # deleted meanwhile: show the form alone
    return render_template("console/simulator.html", form=state, numbers=numbers, conversation=conversation,
                           max_text=MAX_TEXT), status


@console.get("/simulator")
def simulator():
    state = FormState(values={"number": request.args.get("number", ""),
                              "customer": request.args.get("customer") or DEFAULT_CUSTOMER})
    session_id = request.args.get("session")
    if session_id and not state.values["number"]:
        # Arriving from a transcript: continue that conversation.
        try:
            session, customer, _ = get_session(runtime(), session_id, with_messages=False)
            state.values.update(number=session.phone_number_id or "",
                                customer=customer.number if customer else DEFAULT_CUSTOMER)
        except NotFound:
            session_id = None
    return _page(state, session_id)


@console.post("/simulator")
def send_test_text():
    state = FormState(values={"number": text(request.form, "number"), "customer": text(request.form, "customer"),
                              "text": multiline(request.form, "text")})
    body = state.values["text"]
    number = None
    try:
        number = phone_numbers.get_phone_number(runtime(), state.values["number"])
    except NotFound:
        state.errors["number"] = "choose one of your numbers"
    try:
        customer = to_e164(state.values["customer"])
    except InvalidNumber as error:
        state.errors["customer"] = str(error)
    if not body.strip():
        state.errors["text"] = "type the text to send"
    elif len(body) > MAX_TEXT:
        state.errors["text"] = f"at most {MAX_TEXT} characters ({len(body)} given)"
    if state.errors:
        return _page(state, request.form.get("session") or None, 422)
    try:
        form = webhook_form(runtime().account_sid, number.number, customer, body)
        accepted = accept_inbound(runtime(), parse_inbound(form))
    except BadRequest as error:
        state.errors["text"] = error.message
        return _page(state, None, 422)
    if accepted.outcome != "stored":
        state.errors["number"] = "the gateway did not take the text (the number was removed meanwhile?)"
        return _page(state, None, 422)
    # Post/redirect/get: reloading the page shows the conversation, it does not text again.
    return redirect(url_for("console.simulator", number=number.id, customer=customer, session=accepted.session_id), 303)
