"""Assistants: list, add, edit (validated by AssistantCreate/Update, like the API).

The engine is edited as a provider, a few common settings in their own
inputs, and any other settings as a JSON object. Credentials are shown masked
(as the API reads them); the assistants service keeps the stored value when
a masked value comes back unchanged.
"""

from __future__ import annotations

from flask import render_template, request

from adapters import available_providers
from gateway.domain.secrets import masked
from gateway.schemas import EVENT_TYPES, AssistantCreate, AssistantUpdate
from gateway.services import assistants as service
from gateway.web import runtime
from gateway.web.console import console
from gateway.web.console.forms import (
    FormInvalid, FormState, Input, json_object, multiline, pretty_json, save_form, text, validate,
)

LIST_LIMIT = 500
# Engine settings common enough to get their own input; which providers use
# each one only decides what the form shows (with JS), never what is accepted.
ENGINE_INPUTS = (
    (Input("baseUrl", "Base URL", "url", "The engine's API root, e.g. https://api.openai.com/v1."),
     "callhq vapi openai"),
    (Input("url", "Webhook URL", "url", "Where each turn is POSTed."), "webhook"),
    (Input("apiKey", "API key", hint="Shown masked; leave the masked value to keep the stored key."),
     "callhq vapi openai"),
    (Input("assistantId", "Remote assistant id", hint="The assistant's id on the engine's side."), "callhq vapi"),
    (Input("model", "Model", hint="e.g. gpt-4o-mini"), "openai"),
)
ENGINE_NAMES = {spec.name for spec, _ in ENGINE_INPUTS}
NAME = Input("name", "Name", required=True)
MESSAGE_FIELDS = (
    Input("firstMessage", "First message", "textarea", "Opens sessions created through the API (not SMS sessions)."),
    Input("systemPrompt", "System prompt", "textarea", "{{name}} placeholders are filled from the variables."),
    Input("fallbackMessage", "Fallback message", "textarea", "Sent when the engine fails after all its tries."),
)
VARIABLES = Input("variableValues", "Variables (JSON object)", "textarea",
                  'Default values for {{name}}, e.g. {"shop": "Harbor Bikes"}.')
EXTRA = Input("engineExtra", "Other engine settings (JSON object)", "textarea",
              'Anything else the engine takes, e.g. {"temperature": 0.2}.')
SERVER_URL = Input("serverUrl", "Events URL", "url", "Where lifecycle events are POSTed; empty for none.")
SERVER_SECRET = Input("serverSecret", "Events signing secret", hint="16 to 200 characters; leave empty to "
                      "generate one (new assistant) or keep the current one.")


def _engine(form, errors: dict[str, str]) -> dict:
    engine = {"provider": text(form, "provider")}
    for spec, _ in ENGINE_INPUTS:
        value = text(form, spec.name)
        if value:
            engine[spec.name] = value
    extra = json_object(form.get(EXTRA.name) or "", EXTRA.name, errors) or {}
    clashes = sorted(set(extra) & (ENGINE_NAMES | {"provider"}))
    if clashes:
        errors[EXTRA.name] = f"set {', '.join(clashes)} in {'its' if len(clashes) == 1 else 'their'} own field"
    return {**extra, **engine}


def _submitted(form, creating: bool) -> tuple[dict, dict[str, str]]:
    """The form as an AssistantCreate/Update body, plus problems found before pydantic sees it."""
    errors: dict[str, str] = {}
    data: dict = {"name": text(form, "name"), "engine": _engine(form, errors),
                  "serverEvents": [event for event in form.getlist("serverEvents")]}
    for spec in MESSAGE_FIELDS:
        value = multiline(form, spec.name)
        if value.strip():
            data[spec.name] = value
        elif not creating:
            data[spec.name] = None  # emptied: cleared
    variables = json_object(form.get(VARIABLES.name) or "", VARIABLES.name, errors)
    if variables is not None or not creating:
        data[VARIABLES.name] = variables
    data[SERVER_URL.name] = text(form, SERVER_URL.name) or None
    if text(form, SERVER_SECRET.name):
        data[SERVER_SECRET.name] = text(form, SERVER_SECRET.name)
    return data, errors


def _values_of(assistant) -> dict:
    """A stored assistant as the form shows it, credentials masked."""
    engine = masked(assistant.engine)
    named = {name: engine.pop(name) for name in ENGINE_NAMES if isinstance(engine.get(name), str)}
    provider = engine.pop("provider", "")
    return {
        "name": assistant.name, "provider": provider, **named, EXTRA.name: pretty_json(engine),
        VARIABLES.name: pretty_json(assistant.variable_values),
        "firstMessage": assistant.first_message or "", "systemPrompt": assistant.system_prompt or "",
        "fallbackMessage": assistant.fallback_message or "", "serverUrl": assistant.server_url or "",
        "serverEvents": list(assistant.server_events or []), "serverSecret": "",
    }


def _form(state: FormState, assistant=None):
    return render_template(
        "console/assistant_form.html", form=state, assistant=assistant, providers=available_providers(), name=NAME,
        engine_inputs=ENGINE_INPUTS, message_fields=MESSAGE_FIELDS, variables=VARIABLES, extra=EXTRA,
        server_url=SERVER_URL, server_secret=SERVER_SECRET, event_types=EVENT_TYPES,
    )


def _save(assistant=None):
    creating = assistant is None
    typed = {name: request.form.get(name, "") for name in request.form if name != "csrf_token"}
    state = FormState(values={**typed, "serverEvents": request.form.getlist("serverEvents")})
    data, errors = _submitted(request.form, creating)

    def store():
        if errors:
            raise FormInvalid(errors)
        if creating:
            return service.create_assistant(runtime(), validate(AssistantCreate, data))
        return service.update_assistant(runtime(), assistant.id, validate(AssistantUpdate, data))

    return save_form(state, store, creating=creating, describe=lambda saved: f"Assistant {saved.name!r}",
                     show_form=lambda with_errors: _form(with_errors, assistant), list_endpoint="console.assistants")


@console.get("/assistants")
def assistants():
    rows, total = service.list_assistants(runtime(), LIST_LIMIT, 0)
    return render_template("console/assistants.html", assistants=rows, total=total)


@console.route("/assistants/new", methods=["GET", "POST"])
def new_assistant():
    if request.method == "POST":
        return _save()
    return _form(FormState(values={"provider": service.DEFAULT_ENGINE["provider"], "serverEvents": list(EVENT_TYPES)}))


@console.route("/assistants/<assistant_id>/edit", methods=["GET", "POST"])
def edit_assistant(assistant_id):
    assistant = service.get_assistant(runtime(), assistant_id)
    if request.method == "POST":
        return _save(assistant)
    return _form(FormState(values=_values_of(assistant)), assistant)
