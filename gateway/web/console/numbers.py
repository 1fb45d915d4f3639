"""Business phone numbers: list, add, edit (validated by PhoneNumberCreate/Update, like the API)."""

from __future__ import annotations

from flask import render_template, request

from gateway.schemas import PhoneNumberCreate, PhoneNumberUpdate
from gateway.services import assistants as assistant_service
from gateway.services import phone_numbers as service
from gateway.views import phone_number_view
from gateway.web import runtime
from gateway.web.console import console
from gateway.web.console.forms import FormInvalid, FormState, Input, multiline, save_form, shown, text, validate

LIST_LIMIT = 500  # a console list, not an export: more numbers than this belong to the API or CLI
FIELDS = (
    Input("number", "Number", "tel", "E.164 with the country code, e.g. +14155550100.", required=True),
    Input("name", "Name", hint="For your own reference."),
    Input("assistantId", "Assistant", "select", "The assistant that answers texts to this number."),
    Input("sessionExpirationSeconds", "Session lifetime (seconds)", "number",
          "60 to 2592000. A session ends this long after it started; default 86400 (1 day)."),
    Input("sessionInactivitySeconds", "Inactivity limit (seconds)", "number",
          "Optional, 60 to 2592000: also end a session this long after its last message."),
    Input("messagesPerSecond", "Messages per second", "number", "Sending pace, 0.1 to 1000; default 1.", step="any"),
    Input("mergeBurstSeconds", "Merge bursts (seconds)", "number",
          "0 to 10; above 0, texts sent within this many seconds of each other become one engine turn.", step="any"),
    Input("messagingServiceSid", "Messaging Service SID", hint="Optional: MG followed by 32 hex digits."),
    Input("helpMessage", "HELP reply", "textarea", "Sent when a customer texts HELP or INFO."),
    Input("optOutMessage", "STOP reply", "textarea", "Sent when a customer opts out."),
    Input("optInMessage", "START reply", "textarea", "Sent when a customer opts back in."),
)


def _assistant_choices() -> list[tuple[str, str]]:
    rows, _ = assistant_service.list_assistants(runtime(), LIST_LIMIT, 0)
    return [(a.id, a.name) for a in rows]


def _submitted(form, creating: bool) -> dict:
    """The form as a PhoneNumberCreate/Update body: empty means default when adding, cleared when editing."""
    data = {}
    for spec in FIELDS:
        raw = multiline(form, spec.name) if spec.kind == "textarea" else text(form, spec.name)
        if raw.strip():
            data[spec.name] = raw
        elif not creating:
            data[spec.name] = None
    return data


def _save(number_id: str | None):
    creating = number_id is None
    state = FormState(values={spec.name: request.form.get(spec.name, "") for spec in FIELDS})
    data = _submitted(request.form, creating)

    def store():
        if not creating:
            missing = [name for name in service.REQUIRED if data.get(name) is None]
            if missing:
                raise FormInvalid({name: "this field is required" for name in missing})
        if creating:
            return service.create_phone_number(runtime(), validate(PhoneNumberCreate, data))
        return service.update_phone_number(runtime(), number_id, validate(PhoneNumberUpdate, data))

    return save_form(state, store, creating=creating, describe=lambda saved: f"Number {saved.number}",
                     show_form=lambda with_errors: _form(with_errors, number_id), list_endpoint="console.numbers")


def _form(state: FormState, number_id: str | None):
    return render_template("console/number_form.html", fields=FIELDS, form=state, number_id=number_id,
                           assistants=_assistant_choices())


@console.get("/numbers")
def numbers():
    rows, total = service.list_phone_numbers(runtime(), LIST_LIMIT, 0)
    names = dict(_assistant_choices())
    return render_template("console/numbers.html", numbers=rows, total=total, assistant_names=names)


@console.route("/numbers/new", methods=["GET", "POST"])
def new_number():
    if request.method == "POST":
        return _save(None)
    return _form(FormState(), None)


@console.route("/numbers/<number_id>/edit", methods=["GET", "POST"])
def edit_number(number_id):
    if request.method == "POST":
        service.get_phone_number(runtime(), number_id)  # 404 before anything else
        return _save(number_id)
    view = phone_number_view(service.get_phone_number(runtime(), number_id))
    return _form(FormState(values={spec.name: shown(view[spec.name]) for spec in FIELDS}), number_id)
