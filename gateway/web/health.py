"""GET /healthz (the database and the queue both answer) and GET /metrics (SPEC section 9)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from gateway import metrics
from gateway.web import runtime

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    checks = {}
    try:
        with runtime().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"error: {type(error).__name__}"
    try:
        runtime().queue.ping()
        checks["queue"] = "ok"
    except Exception as error:
        checks["queue"] = f"error: {type(error).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if healthy else "error", "checks": checks}), 200 if healthy else 503


@blueprint.get("/metrics")
def prometheus_metrics():
    body, content_type = metrics.render(runtime())
    return Response(body, content_type=content_type)
