"""GET /api/openapi.json and GET /api/docs, written from the routes' own declarations.

Every /api view carries an ``Operation`` (gateway.web.api.operations) naming
the pydantic models that validate its request and describe its response; this
module turns those, and nothing else, into an OpenAPI 3.1 document. A route
without a declaration is a bug the test suite catches.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache

from flask import current_app, jsonify, render_template
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api_models import ErrorBody
from gateway.web.api import OPEN_ENDPOINTS, api
from gateway.web.api.operations import Operation

ERROR_TEXT = {
    400: "Malformed request (not JSON, not an object, NUL characters)",
    401: "No API key, or a wrong or revoked one",
    404: "No such id",
    409: "The request conflicts with the current state",
    413: "Request body too large",
    422: "A field's value is invalid; error.details.field names it",
    502: "The chat engine failed and the assistant has no fallbackMessage",
}
SUCCESS_TEXT = {200: "OK", 201: "Created"}
REF = "#/components/schemas/{model}"


@api.get("/openapi.json")
def openapi_document():
    return jsonify(openapi_spec(current_app))


@api.get("/docs")
def docs_page():
    spec = openapi_spec(current_app)
    components = spec["components"]["schemas"]
    objects = [{"name": name, "fields": _fields(schema, components)} for name, schema in sorted(components.items())]
    return render_template("api_docs.html", spec=spec, operations=_readable_operations(spec), objects=objects)


def openapi_spec(app) -> dict:
    return copy.deepcopy(_build(app))


@lru_cache(maxsize=8)
def _build(app) -> dict:
    operations = declared_operations(app)
    models = _models(op for _, _, op in operations)
    keyed, top = models_json_schema([(model, mode) for model, mode in models], ref_template=REF)
    schemas = {(model, mode): schema for (model, mode), schema in keyed.items()}

    paths: dict[str, dict] = {}
    for path, method, op in operations:
        paths.setdefault(path, {})[method] = _operation(path, method, op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SMS session gateway API",
            "version": "1",
            "description": "Sessions, chats and configuration of the SMS session gateway. Send an API key "
                           "(`gateway keys create`) as `x-api-key: KEY` or `Authorization: Bearer KEY`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}, {"bearer": []}],
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for _, _, op in operations)],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def declared_operations(app) -> list[tuple[str, str, Operation]]:
    """(OpenAPI path, method, declaration) of every keyed /api route, in the order they were registered."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in OPEN_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        declared = getattr(view, "operation", None)
        if declared is None:
            raise RuntimeError(f"route {rule.rule} has no @operation declaration")
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((path, method.lower(), declared))
    return found


def _models(operations) -> list[tuple[type[BaseModel], str]]:
    wanted: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for op in operations:
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        wanted[(op.response, "serialization")] = None
    return list(wanted)


def _operation(path: str, method: str, op: Operation, schemas: dict) -> dict:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in re.findall(r"{([^}]+)}", path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    success = {"description": SUCCESS_TEXT.get(op.status, "OK"),
               "content": {"application/json": {"schema": schemas[(op.response, "serialization")]}}}
    responses = {str(op.status): success}
    for status in op.errors:
        if status < 400:  # a second success status with the same body (get-or-create: 200 or 201)
            responses[str(status)] = {**success, "description": SUCCESS_TEXT.get(status, "OK")}
    error = {"content": {"application/json": {"schema": schemas[(ErrorBody, "serialization")]}}}
    for status in sorted(_error_statuses(path, op)):
        responses[str(status)] = {"description": ERROR_TEXT[status], **error}
    document = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path.strip('/'))}",
        "parameters": parameters,
        "responses": responses,
    }
    if op.description:
        document["description"] = op.description
    if op.body is not None:
        document["requestBody"] = {"required": True,
                                   "content": {"application/json": {"schema": schemas[(op.body, "validation")]}}}
    return document


def _error_statuses(path: str, op: Operation) -> set[int]:
    statuses = {400, 401} | {s for s in op.errors if s >= 400}
    if "{" in path:
        statuses.add(404)
    if op.body is not None:
        statuses |= {404, 413, 422}  # bodies name other objects by id (assistantId, sessionId ...)
    if op.query is not None:
        statuses.add(422)
    return statuses


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        prop.pop("title", None)
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return parameters


def _without_null(prop: dict) -> dict:
    # A query parameter is absent or a string; "null" has no spelling in a URL.
    options = [option for option in prop.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        merged = {key: value for key, value in prop.items() if key != "anyOf"}
        merged.update(options[0])
        if merged.get("default", "") is None:
            merged.pop("default")
        return merged
    return dict(prop)


def _readable_operations(spec: dict) -> list[dict]:
    """The document flattened for the HTML page: per operation, its parameters and body fields."""
    components = spec["components"]["schemas"]
    readable = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            success = next(code for code in op["responses"] if code.startswith("2"))
            answer = op["responses"][success]["content"]["application/json"]["schema"]
            readable.append({
                "id": op["operationId"], "method": method.upper(), "path": path, "tag": op["tags"][0],
                "summary": op["summary"], "description": op.get("description", ""),
                "parameters": [{"name": p["name"], "where": p["in"], "required": p["required"],
                                "type": describe(p["schema"], components)} for p in op["parameters"]],
                "body": _fields(body, components) if body else [],
                "success": success, "answer": _ref_name(answer),
                "errors": [code for code in op["responses"] if not code.startswith("2")],
            })
    return readable


def _ref_name(schema: dict) -> str:
    return schema.get("$ref", "").rsplit("/", 1)[-1]


def _resolve(schema: dict, components: dict) -> dict:
    while "$ref" in schema:
        schema = components[_ref_name(schema)]
    return schema


def _fields(schema: dict, components: dict) -> list[dict]:
    schema = _resolve(schema, components)
    required = set(schema.get("required", []))
    return [{"name": name, "required": name in required, "type": describe(prop, components),
             "description": prop.get("description", "")}
            for name, prop in schema.get("properties", {}).items()]


def describe(schema: dict, components: dict) -> str:
    """A short human reading of a JSON schema: 'string, at most 40 characters, or null'."""
    if "$ref" in schema:
        return _ref_name(schema) + " object"
    if "anyOf" in schema:
        return " or ".join(describe(option, components) for option in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        values = schema.get("enum") or [schema["const"]]
        return "one of " + ", ".join(f'"{value}"' for value in values)
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {describe(schema.get('items', {}), components)}"
    limits = []
    if "minLength" in schema:
        limits.append(f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        limits.append(f"at most {schema['maxLength']} characters")
    if "minimum" in schema:
        limits.append(f"from {schema['minimum']}")
    if "maximum" in schema:
        limits.append(f"to {schema['maximum']}")
    if "default" in schema and schema["default"] is not None:
        limits.append(f"default {schema['default']}")
    return ", ".join([{"object": "object", "null": "null"}.get(kind, kind)] + limits)
