"""GET /healthz and GET /metrics (SPEC section 9) on a real database, queue and sandbox sender."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app
from tests.conftest import BUSINESS
from tests.support.net import free_port


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_reports_database_and_queue(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "queue": "ok"}}


def test_healthz_is_503_naming_the_queue_when_redis_is_unreachable(make_runtime, settings):
    runtime = make_runtime(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = create_app(runtime=runtime).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and body["checks"]["database"] == "ok"
    assert body["checks"]["queue"].startswith("error: ")


def test_healthz_is_503_naming_the_database_when_it_is_unreachable(make_runtime, settings):
    runtime = make_runtime(settings.replace(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none"))
    response = create_app(runtime=runtime).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"].startswith("error: ") and body["checks"]["queue"] == "ok"


def test_metrics_count_webhooks_by_outcome(client, webhook, number):
    before = scrape(client)
    sid = "SM" + "1" * 32
    assert webhook("hello", sid=sid).status_code == 200
    assert webhook("hello", sid=sid).status_code == 200
    assert webhook("hello", to="+15550109999").status_code == 200
    assert webhook("hello", signature="wrong").status_code == 403
    assert webhook("hello", From=None).status_code == 400
    after = scrape(client)
    for outcome in ("stored", "duplicate", "unknown_number", "bad_signature", "invalid"):
        delta = (value(after, "gateway_webhooks_received_total", kind="sms", outcome=outcome)
                 - value(before, "gateway_webhooks_received_total", kind="sms", outcome=outcome))
        assert delta == 1, outcome


def test_metrics_follow_a_text_to_delivery(client, webhook, number, runtime):
    before = scrape(client)
    webhook("hello")
    assert runtime.queue.wait_idle(10, include_delayed_within=2)
    after = scrape(client)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gateway_turns_total", outcome="processed") == 1
    assert grew("gateway_inbound_batch_size_count") == 1 and grew("gateway_inbound_batch_size_sum") == 1
    assert grew("gateway_engine_latency_seconds_count", provider="echo") == 1
    assert grew("gateway_messages_sent_total", status="delivered") == 1  # the sandbox sender delivers at once
    assert value(after, "gateway_active_sessions") == 1
    assert value(after, "gateway_queue_depth", queue="embedded") == 0
    assert ("gateway_engine_latency_seconds_bucket", (("le", "+Inf"), ("provider", "echo"))) in after


def test_metrics_answer_while_redis_is_down(make_runtime, settings):
    runtime = make_runtime(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    response = create_app(runtime=runtime).test_client().get("/metrics")
    assert response.status_code == 200
    assert re.search(r"^gateway_active_sessions 0\.0$", response.get_data(as_text=True), re.M)


def test_metrics_need_no_key_and_hold_no_numbers(client, webhook, number, runtime):
    webhook("hello")
    runtime.queue.wait_idle(10)
    text = client.get("/metrics").get_data(as_text=True)
    assert BUSINESS not in text and BUSINESS[2:] not in text


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_operations_endpoints_refuse_other_methods(client, path):
    assert client.post(path).status_code == 405
