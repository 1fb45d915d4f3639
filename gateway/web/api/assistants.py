"""/api/assistants"""

from __future__ import annotations

from flask import jsonify

from gateway.api_models import AssistantEnvelope, AssistantList
from gateway.schemas import AssistantCreate, AssistantUpdate, Page
from gateway.services import assistants as service
from gateway.views import assistant_view
from gateway.web import runtime
from gateway.web.api import api
from gateway.web.api.operations import operation

TAG = "Assistants"


@api.post("/assistants")
@operation(TAG, "Create an assistant", body=AssistantCreate, response=AssistantEnvelope, status=201)
def create_assistant(body: AssistantCreate):
    return jsonify({"assistant": assistant_view(service.create_assistant(runtime(), body))}), 201


@api.get("/assistants")
@operation(TAG, "List assistants", query=Page, response=AssistantList)
def list_assistants(query: Page):
    rows, total = service.list_assistants(runtime(), query.limit, query.offset)
    return jsonify({"assistants": [assistant_view(a) for a in rows], "totalCount": total})


@api.get("/assistants/<assistant_id>")
@operation(TAG, "Get an assistant", response=AssistantEnvelope)
def get_assistant(assistant_id):
    return jsonify({"assistant": assistant_view(service.get_assistant(runtime(), assistant_id))})


@api.patch("/assistants/<assistant_id>")
@operation(TAG, "Update an assistant", body=AssistantUpdate, response=AssistantEnvelope,
           description="Only the fields given change. Masked credentials sent back as read keep their stored value.")
def update_assistant(assistant_id, body: AssistantUpdate):
    return jsonify({"assistant": assistant_view(service.update_assistant(runtime(), assistant_id, body))})


@api.delete("/assistants/<assistant_id>")
@operation(TAG, "Delete an assistant", response=AssistantEnvelope,
           description="Numbers and sessions that used it keep working without an assistant (assistantId null).")
def delete_assistant(assistant_id):
    assistant = service.get_assistant(runtime(), assistant_id)
    service.delete_assistant(runtime(), assistant_id)
    return jsonify({"assistant": assistant_view(assistant)})
