"""The OpenAPI document and the docs page: open, complete, generated from the validating models, followable."""

from __future__ import annotations

import html
import os
import re
import subprocess

import pytest
from flask import jsonify

from gateway import create_app
from gateway.schemas import ChatCreate, SessionCreate
from gateway.web.api.openapi import declared_operations, openapi_spec
from tests.support.net import LiveServer, free_port

# SPEC section 4, route by route.
SPEC_ROUTES = {
    ("post", "/api/sessions"), ("get", "/api/sessions"), ("get", "/api/sessions/{session_id}"),
    ("patch", "/api/sessions/{session_id}"), ("delete", "/api/sessions/{session_id}"),
    ("post", "/api/sessions/delete-many"), ("post", "/api/sessions/get-or-create"),
    ("post", "/api/sessions/{session_id}/end"),
    ("post", "/api/chats"), ("get", "/api/chats/session/{session_id}"), ("get", "/api/chats"),
    ("delete", "/api/chats/{chat_id}"),
    ("get", "/api/assistants"), ("post", "/api/assistants"), ("get", "/api/assistants/{assistant_id}"),
    ("patch", "/api/assistants/{assistant_id}"), ("delete", "/api/assistants/{assistant_id}"),
    ("get", "/api/phone-numbers"), ("post", "/api/phone-numbers"), ("get", "/api/phone-numbers/{number_id}"),
    ("patch", "/api/phone-numbers/{number_id}"), ("delete", "/api/phone-numbers/{number_id}"),
    ("get", "/api/messages"),
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_and_page_need_no_key_while_everything_else_does(client):
    assert client.get("/api/openapi.json").status_code == 200
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert client.get("/api/sessions").status_code == 401


def test_document_describes_every_route_of_the_spec_and_nothing_else(spec):
    documented = {(method, path) for path, methods in spec["paths"].items() for method in methods}
    assert documented == SPEC_ROUTES
    assert spec["openapi"].startswith("3.")
    assert set(spec["components"]["securitySchemes"]) == {"apiKey", "bearer"}


def test_document_is_a_valid_openapi_schema(spec):
    import schemathesis

    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]  # raises on an invalid document
    assert len(operations) == len(SPEC_ROUTES)


def test_request_schemas_are_the_models_that_validate_requests(spec):
    components = spec["components"]["schemas"]
    assert components["SessionCreate"]["properties"] == SessionCreate.model_json_schema(
        ref_template="#/components/schemas/{model}")["properties"]
    name = components["SessionCreate"]["properties"]["name"]["anyOf"][0]
    assert name["maxLength"] == 40
    seconds = components["SessionCreate"]["properties"]["expirationSeconds"]["anyOf"][0]
    assert (seconds["minimum"], seconds["maximum"]) == (60, 2592000)
    assert components["ChatCreate"]["anyOf"] == ChatCreate.model_json_schema()["anyOf"]
    body = spec["paths"]["/api/sessions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SessionCreate"}


def test_documented_limits_are_enforced(client, auth):
    """What the document says about a field is what the server refuses: one source, so they cannot drift."""
    response = client.post("/api/sessions", json={"name": "n" * 41}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["field"] == "name"
    response = client.post("/api/sessions", json={"expirationSeconds": 59}, headers=auth)
    assert response.get_json()["error"]["details"]["field"] == "expirationSeconds"


def test_every_operation_documents_its_errors_with_the_error_body(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            assert {"400", "401"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in operation:
                assert "422" in codes, (method, path)
            for code, response in operation["responses"].items():
                if code.startswith("4") or code.startswith("5"):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}


def test_chat_documents_conflict_and_engine_failure(spec):
    assert {"201", "409", "502"} <= set(spec["paths"]["/api/chats"]["post"]["responses"])
    assert {"200", "201"} <= set(spec["paths"]["/api/sessions/get-or-create"]["post"]["responses"])


def test_a_route_without_a_declaration_is_refused(runtime):
    app = create_app(runtime=runtime)
    app.add_url_rule("/api/undeclared", endpoint="api.undeclared", view_func=lambda: jsonify({}))
    with pytest.raises(RuntimeError, match="/api/undeclared has no @operation declaration"):
        declared_operations(app)


def test_docs_page_lists_every_operation_and_object(client, spec):
    page = client.get("/api/docs").get_data(as_text=True)
    for path, methods in spec["paths"].items():
        for method in methods:
            assert f'<span class="method">{method.upper()}</span><code>{path}</code>' in page
    for name in spec["components"]["schemas"]:
        assert f'id="{name}"' in page
    assert "Session created successfully" in page


def test_document_served_equals_the_generated_one(app, spec):
    assert spec == openapi_spec(app)


@pytest.mark.slow
def test_a_client_following_the_docs_quick_start_gets_through(runtime, api_key, tmp_path):
    """Run the page's quick-start steps, as printed, with bash and curl against a live gateway."""
    port = free_port()
    server = LiveServer(create_app(runtime=runtime), port).start()
    try:
        page = httpx_get(f"{server.url}/api/docs")
        steps = [html.unescape(block) for block in re.findall(r'<pre class="quickstart">(.*?)</pre>', page, re.S)]
        assert len(steps) == 7
        script = tmp_path / "quickstart.sh"
        script.write_text("set -euo pipefail\n" + "\n".join(steps) + "\n")
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "GATEWAY": server.url, "KEY": api_key})
    finally:
        server.stop()
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr)
    print(out)
    replies = re.findall(r"^reply: (.*)$", out, re.M)
    assert len(replies) == 3
    assert "opening hours" in replies[2].lower()  # the third turn remembers the first
    history = [line for line in out.splitlines() if line.startswith(("user:", "assistant:"))]
    assert [line.split(":")[0] for line in history] == ["user", "assistant"] * 3
    assert "renamed: Opening hours and refunds" in out
    assert re.search(r"^deleted: [0-9a-f-]{36}$", out, re.M)
    assert "after delete: HTTP 404" in out


def httpx_get(url: str) -> str:
    import httpx

    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.text
