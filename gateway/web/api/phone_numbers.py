"""/api/phone-numbers"""

from __future__ import annotations

from flask import jsonify

from gateway.schemas import PhoneNumberCreate, PhoneNumberUpdate, parse
from gateway.services import phone_numbers as service
from gateway.web import runtime
from gateway.web.api import api, json_body, page
from gateway.views import phone_number_view


@api.post("/phone-numbers")
def create_phone_number():
    number = service.create_phone_number(runtime(), parse(PhoneNumberCreate, json_body()))
    return jsonify({"phoneNumber": phone_number_view(number)}), 201


@api.get("/phone-numbers")
def list_phone_numbers():
    paging = page()
    rows, total = service.list_phone_numbers(runtime(), paging.limit, paging.offset)
    return jsonify({"phoneNumbers": [phone_number_view(n) for n in rows], "totalCount": total})


@api.get("/phone-numbers/<number_id>")
def get_phone_number(number_id):
    return jsonify({"phoneNumber": phone_number_view(service.get_phone_number(runtime(), number_id))})


@api.patch("/phone-numbers/<number_id>")
def update_phone_number(number_id):
    number = service.update_phone_number(runtime(), number_id, parse(PhoneNumberUpdate, json_body()))
    return jsonify({"phoneNumber": phone_number_view(number)})


@api.delete("/phone-numbers/<number_id>")
def delete_phone_number(number_id):
    number = service.get_phone_number(runtime(), number_id)
    service.delete_phone_number(runtime(), number_id)
    return jsonify({"phoneNumber": phone_number_view(number)})
