"""``{{name}}`` template variables (SPEC 4) and when a session expires (SPEC 6.2)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from gateway.domain.expiry import MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, expires_at
from gateway.domain.templates import merge_variables, render

TEMPLATE_LOGGER = "gateway.templates"


def _unique(prefix: str = "unknown") -> str:
    # The "logged once" memory is process-wide, so every test needs names no other test used.
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _unknown_warnings(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == TEMPLATE_LOGGER and r.levelno == logging.WARNING and name in r.getMessage()]


# --- merge_variables ---------------------------------------------------------


@pytest.mark.parametrize(
    "layers, expected",
    [
        pytest.param((), {}, id="no layers"),
        pytest.param(({"a": 1},), {"a": 1}, id="one layer"),
        pytest.param(({"a": "session"}, {"a": "assistant"}), {"a": "session"}, id="first layer wins"),
        pytest.param(({"a": 1}, {"b": 2}), {"a": 1, "b": 2}, id="disjoint layers combine"),
        pytest.param(({"a": "s"}, {"a": "x", "b": "x"}, {"a": "b", "b": "b", "c": "b"}),
                     {"a": "s", "b": "x", "c": "b"}, id="each name from its earliest layer"),
        pytest.param((None, {"a": 1}), {"a": 1}, id="leading None ignored"),
        pytest.param(({"a": 1}, None), {"a": 1}, id="trailing None ignored"),
        pytest.param((None, None), {}, id="only None"),
        pytest.param(({}, {"a": 1}), {"a": 1}, id="empty layer hides nothing"),
        pytest.param(({"a": None}, {"a": 1}), {"a": 1}, id="a None value is unset: the next layer shows"),
        pytest.param(({"a": None}, None), {}, id="a None value alone is dropped"),
    ],
)
def test_merge_variables_precedence(layers, expected):
    """Earlier layers win name by name; None layers are skipped."""
    assert merge_variables(*layers) == expected


def test_merge_variables_returns_a_new_dict():
    """The merged dict is a fresh copy: changing it leaves the layers untouched."""
    session, assistant = {"a": 1}, {"b": 2}
    merged = merge_variables(session, assistant)
    merged["a"] = 99
    merged["c"] = 3
    assert session == {"a": 1} and assistant == {"b": 2}


# --- render ------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, variables, expected",
    [
        pytest.param("Hi {{name}}!", {"name": "Ann"}, "Hi Ann!", id="tight braces"),
        pytest.param("Hi {{ name }}!", {"name": "Ann"}, "Hi Ann!", id="spaced braces"),
        pytest.param("Hi {{  name\t}}!", {"name": "Ann"}, "Hi Ann!", id="uneven whitespace"),
        pytest.param("Call {{customer.number}}", {"customer.number": "+14155550123"}, "Call +14155550123",
                     id="dotted name"),
        pytest.param("{{ customer.number }}", {"customer.number": "+1"}, "+1", id="dotted name spaced"),
        pytest.param("{{a}}{{b}}", {"a": "x", "b": "y"}, "xy", id="adjacent"),
        pytest.param("{{a}} and {{a}}", {"a": "x"}, "x and x", id="repeated"),
        pytest.param("{{first_name}}-{{order-id}}", {"first_name": "A", "order-id": "7"}, "A-7",
                     id="underscore and dash names"),
        pytest.param("n={{n}}", {"n": 42}, "n=42", id="int via str"),
        pytest.param("p={{p}}", {"p": 1.5}, "p=1.5", id="float via str"),
        pytest.param("z={{z}}", {"z": 0}, "z=0", id="falsy zero still rendered"),
        pytest.param("b={{b}}", {"b": False}, "b=False", id="bool via str"),
        pytest.param("e={{e}}", {"e": ""}, "e=", id="empty string value"),
        pytest.param("l={{l}}", {"l": [1, 2]}, "l=[1, 2]", id="list via str"),
        pytest.param("{name}", {"name": "Ann"}, "{name}", id="single braces untouched"),
    ],
)
def test_render_replaces_known_variables(template, variables, expected):
    """Known ``{{name}}`` / ``{{ name }}`` / dotted names are replaced with str(value)."""
    assert render(template, variables) == expected


def test_render_does_not_expand_values():
    """A value that itself looks like a variable is inserted as plain text, not rendered again."""
    assert render("{{a}}", {"a": "{{b}}", "b": "secret"}) == "{{b}}"


def test_render_none_template_is_none():
    """A missing template renders to None."""
    assert render(None, {"a": 1}) is None


@pytest.mark.parametrize("template", ["", "plain text", "one { brace }", "closing }} only"])
def test_render_without_braces_returns_template_itself(template):
    """Text with no ``{{`` comes back as the very same object (fast path)."""
    assert render(template, {"a": 1}) is template


def test_unknown_variable_is_left_as_written(caplog):
    """An unknown variable stays exactly as written, spacing included, next to replaced ones."""
    name = _unique()
    caplog.set_level(logging.WARNING, logger=TEMPLATE_LOGGER)
    template = f"Hi {{{{ {name} }}}}, from {{{{shop}}}}"
    assert render(template, {"shop": "Bikes"}) == f"Hi {{{{ {name} }}}}, from Bikes"


def test_none_valued_variable_is_treated_as_unknown(caplog):
    """A variable whose value is None is left as written rather than rendered as 'None'."""
    name = _unique()
    caplog.set_level(logging.WARNING, logger=TEMPLATE_LOGGER)
    assert render(f"{{{{{name}}}}}", {name: None}) == f"{{{{{name}}}}}"
    assert len(_unknown_warnings(caplog, name)) == 1


def test_unknown_variable_is_logged_once_only(caplog):
    """The first sighting of an unknown name logs one warning; later renders stay quiet."""
    name = _unique()
    caplog.set_level(logging.WARNING, logger=TEMPLATE_LOGGER)
    template = f"{{{{{name}}}}} {{{{ {name} }}}}"
    render(template, {})
    render(template, {})
    render(f"again {{{{{name}}}}}", {"other": 1})
    records = _unknown_warnings(caplog, name)
    assert len(records) == 1
    assert "template.unknown_variable" in records[0].getMessage()


def test_each_unknown_variable_is_logged_once_each(caplog):
    """Two different unknown names each get their own single warning."""
    first, second = _unique("first"), _unique("second")
    caplog.set_level(logging.WARNING, logger=TEMPLATE_LOGGER)
    render(f"{{{{{first}}}}} {{{{{second}}}}} {{{{{first}}}}}", {})
    assert len(_unknown_warnings(caplog, first)) == 1
    assert len(_unknown_warnings(caplog, second)) == 1


def test_known_variables_log_nothing(caplog):
    """Rendering only known variables writes no warning."""
    caplog.set_level(logging.WARNING, logger=TEMPLATE_LOGGER)
    render("{{a}} {{ b.c }}", {"a": 1, "b.c": 2})
    assert [r for r in caplog.records if r.name == TEMPLATE_LOGGER] == []


# --- expires_at ----------------------------------------------------------------

CREATED = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def _at(seconds: float) -> datetime:
    return CREATED + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "expiration, last_activity, inactivity, expected",
    [
        pytest.param(86400, 0, None, 86400, id="absolute only"),
        pytest.param(86400, 5000, None, 86400, id="activity ignored without an inactivity limit"),
        pytest.param(86400, 0, 600, 600, id="inactivity earlier than absolute"),
        pytest.param(86400, 3600, 600, 4200, id="inactivity counts from the last activity"),
        pytest.param(3600, 3000, 1800, 3600, id="inactivity later than absolute: absolute wins"),
        pytest.param(3600, 1800, 1800, 3600, id="both at the same instant"),
        pytest.param(MIN_EXPIRATION_SECONDS, 0, None, 60, id="minimum lifetime"),
        pytest.param(MAX_EXPIRATION_SECONDS, 0, None, 2_592_000, id="maximum lifetime"),
    ],
)
def test_expires_at(expiration, last_activity, inactivity, expected):
    """A session expires at the earlier of its absolute lifetime and its inactivity limit."""
    assert expires_at(CREATED, expiration, _at(last_activity), inactivity) == _at(expected)


def test_expiration_bounds_match_spec():
    """expirationSeconds is bounded to 60..2592000 (30 days)."""
    assert (MIN_EXPIRATION_SECONDS, MAX_EXPIRATION_SECONDS) == (60, 2_592_000)


def test_expires_at_keeps_timezone():
    """The expiry is an aware datetime in the creation time's zone."""
    assert expires_at(CREATED, 60, CREATED, None).tzinfo is timezone.utc
