"""Turning submitted forms into the API's request models, their errors back into per-field messages, and saving.

The console validates with the same pydantic models as the REST API and the
CLI (gateway.schemas), so a value the API refuses is refused here too, with
the message shown next to the field it concerns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import flash, redirect, url_for
from pydantic import BaseModel, ValidationError

from gateway.errors import Conflict, InvalidField


@dataclass
class FormState:
    """What the operator typed (shown back as typed) and what is wrong with it, by field name."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)


class FormInvalid(Exception):
    def __init__(self, errors: dict[str, str]):
        super().__init__(", ".join(errors))
        self.errors = errors


def text(form, name: str) -> str:
    """A one-line input, trimmed."""
    return (form.get(name) or "").strip()


def multiline(form, name: str) -> str:
    """A textarea as typed, with the browser's CRLF line ends made LF (they would count as SMS characters)."""
    return (form.get(name) or "").replace("\r\n", "\n")


def json_object(raw: str, name: str, errors: dict[str, str]) -> dict | None:
    """A textarea holding a JSON object; empty is None. Problems are added to ``errors``."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as error:
        errors[name] = f"not valid JSON: {error}"
        return None
    if not isinstance(value, dict):
        errors[name] = 'must be a JSON object, e.g. {"shop": "Harbor Bikes"}'
        return None
    return value


def pretty_json(value: dict | None) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) if value else ""


def validate(model: type[BaseModel], data: dict) -> Any:
    """``model.model_validate(data)`` or FormInvalid with one message per field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise FormInvalid(field_errors(error)) from None


def field_errors(error: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for problem in error.errors():
        where = [str(part) for part in problem["loc"]]
        name = where[0] if where else "form"
        message = "this field is required" if problem["type"] == "missing" else problem["msg"]
        message = message.removeprefix("Value error, ")
        # Inside a nested value (variableValues.x, engine.provider) say where.
        if len(where) > 1:
            message = f"{'.'.join(where[1:])}: {message}"
        errors.setdefault(name, message)
    return errors


def service_errors(error: InvalidField | Conflict) -> dict[str, str]:
    """A refusal by a service (unknown assistant, number taken) as a message on the field it names."""
    details = error.details if isinstance(error.details, dict) else {}
    return {str(details.get("field") or "form"): error.message}


@dataclass(frozen=True)
class Input:
    """One form field as the templates render it; ``name`` is the API's field name."""

    name: str
    label: str
    kind: str = "text"  # text, tel, url, number, textarea, select
    hint: str = ""
    step: str | None = None  # for number inputs: "any" admits decimals
    required: bool = False


def shown(value: Any) -> str:
    """A stored value as a form shows it: None empty, 1.0 as 1."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def save_form(state: FormState, store: Callable[[], Any], *, creating: bool, describe: Callable[[Any], str],
              show_form: Callable[[FormState], Any], list_endpoint: str):
    """Run ``store`` (validate and save); the form again with each refusal on its field, or back to the list.

    ``store`` raises FormInvalid, InvalidField or Conflict when the input is
    refused, and returns the saved object, which ``describe`` names in the
    notice. The redirect is a 303 so that reloading the list does not post the
    form again.
    """
    try:
        saved = store()
    except FormInvalid as invalid:
        state.errors = invalid.errors
    except (InvalidField, Conflict) as refused:
        state.errors = service_errors(refused)
    if state.errors:
        return show_form(state), 422
    flash(f"{describe(saved)} {'added' if creating else 'saved'}.", "info")
    return redirect(url_for(list_endpoint), 303)
