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


def json_body() -> dict:
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    if _holds_nul(data):
        raise BadRequest("text must not contain NUL characters")
    return data


def _refuse_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON does not, and neither can be stored.
    raise ValueError(f"{name} is not valid JSON")


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False
