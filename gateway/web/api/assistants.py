"""/api/assistants"""

from __future__ import annotations

from flask import jsonify

from gateway.schemas import AssistantCreate, AssistantUpdate, parse
from gateway.services import assistants as service
from gateway.web import runtime
from gateway.web.api import api, json_body, page
from gateway.views import assistant_view


@api.post("/assistants")
def create_assistant():
    assistant = service.create_assistant(runtime(), parse(AssistantCreate, json_body()))
    return jsonify({"assistant": assistant_view(assistant)}), 201


@api.get("/assistants")
def list_assistants():
    paging = page()
    rows, total = service.list_assistants(runtime(), paging.limit, paging.offset)
    return jsonify({"assistants": [assistant_view(a) for a in rows], "totalCount": total})


@api.get("/assistants/<assistant_id>")
def get_assistant(assistant_id):
    return jsonify({"assistant": assistant_view(service.get_assistant(runtime(), assistant_id))})


@api.patch("/assistants/<assistant_id>")
def update_assistant(assistant_id):
    assistant = service.update_assistant(runtime(), assistant_id, parse(AssistantUpdate, json_body()))
    return jsonify({"assistant": assistant_view(assistant)})


@api.delete("/assistants/<assistant_id>")
def delete_assistant(assistant_id):
    assistant = service.get_assistant(runtime(), assistant_id)
    service.delete_assistant(runtime(), assistant_id)
    return jsonify({"assistant": assistant_view(assistant)})
