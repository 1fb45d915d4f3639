"""One declaration per API operation: it parses the request and documents the route.

``@operation(...)`` names the request models (body, query) and the response
model of a view. The wrapper validates the request with those very models and
hands the results to the view; gateway.web.api.openapi reads the same
declaration to write the OpenAPI document. What is documented is what is
enforced, because it is the same object.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from flask import request
from pydantic import BaseModel

from gateway.errors import BadRequest
from gateway.schemas import parse, parse_query


@dataclass(frozen=True)
class Operation:
    tag: str
    summary: str
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()  # beyond those every operation of its kind may answer
    description: str | None = None


def operation(tag: str, summary: str, *, response: type[BaseModel], status: int = 200,
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              errors: tuple[int, ...] = (), description: str | None = None):
    declared = Operation(tag, summary, response, status, body, query, errors, description)

    def decorate(view):
        @functools.wraps(view)
        def handle(**path_values):
            if body is not None:
                path_values["body"] = parse(body, json_body())
            if query is not None:
                path_values["query"] = parse_query(query, request.args)
            return view(**path_values)

        handle.operation = declared
        return handle

    return decorate


MAX_DEPTH = 32  # objects and lists inside each other; deeper is no request this API takes
# NUL (PostgreSQL text and jsonb hold none) and half a surrogate pair (JSON may escape one, "\\ud800", but UTF-8
# cannot encode it): free-form JSON such as metadata would store either, and then every event about the object
# would fail to encode its body, on every try.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_body() -> dict:
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body must be valid JSON (finite numbers only)") from None
    except RecursionError:
        raise BadRequest(f"the request body is nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    _check_values(data)
    return data


def _refuse_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON does not, and neither can be stored.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large")  # 1e400 would become Infinity, which JSON cannot carry back
    return value


def _check_values(data: dict) -> None:
    """Refuse NUL characters, lone surrogates (see _UNSTORABLE) and deep nesting, without recursion."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"the request body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            if _UNSTORABLE.search(value) is not None:
                raise BadRequest("text must not contain NUL characters or unpaired UTF-16 surrogates")
        elif isinstance(value, dict):
            pending += [(key, depth) for key in value] + [(item, depth + 1) for item in value.values()]
        elif isinstance(value, list):
            pending += [(item, depth + 1) for item in value]
