"""/api/phone-numbers"""

from __future__ import annotations

from flask import jsonify

from gateway.api_models import PhoneNumberEnvelope, PhoneNumberList
from gateway.schemas import Page, PhoneNumberCreate, PhoneNumberUpdate
from gateway.services import phone_numbers as service
from gateway.views import phone_number_view
from gateway.web import runtime
from gateway.web.api import api
from gateway.web.api.operations import operation

TAG = "Phone numbers"


@api.post("/phone-numbers")
@operation(TAG, "Add a business number", body=PhoneNumberCreate, response=PhoneNumberEnvelope, status=201,
           errors=(409,), description="The number is normalised to E.164; a number already added answers 409.")
def create_phone_number(body: PhoneNumberCreate):
    return jsonify({"phoneNumber": phone_number_view(service.create_phone_number(runtime(), body))}), 201


@api.get("/phone-numbers")
@operation(TAG, "List business numbers", query=Page, response=PhoneNumberList)
def list_phone_numbers(query: Page):
    rows, total = service.list_phone_numbers(runtime(), query.limit, query.offset)
    return jsonify({"phoneNumbers": [phone_number_view(n) for n in rows], "totalCount": total})


@api.get("/phone-numbers/<number_id>")
@operation(TAG, "Get a business number", response=PhoneNumberEnvelope)
def get_phone_number(number_id):
    return jsonify({"phoneNumber": phone_number_view(service.get_phone_number(runtime(), number_id))})


@api.patch("/phone-numbers/<number_id>")
@operation(TAG, "Update a business number", body=PhoneNumberUpdate, response=PhoneNumberEnvelope, errors=(409,))
def update_phone_number(number_id, body: PhoneNumberUpdate):
    return jsonify({"phoneNumber": phone_number_view(service.update_phone_number(runtime(), number_id, body))})


@api.delete("/phone-numbers/<number_id>")
@operation(TAG, "Remove a business number", response=PhoneNumberEnvelope)
def delete_phone_number(number_id):
    number = service.get_phone_number(runtime(), number_id)
    service.delete_phone_number(runtime(), number_id)
    return jsonify({"phoneNumber": phone_number_view(number)})
