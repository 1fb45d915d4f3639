"""One harness for every remote adapter: a table of labelled cases, each run against a scripted engine on 127.0.0.1.

A case says what goes in (engine settings, session context, one or more user
turns), what the upstream answers (in order), which requests the adapter must
make (method, path, a subset of headers, a subset of the JSON body) and what
comes out (the replies, or an error class with a reason substring, and the
adapter state left for the next turn). ``run`` plays it through the registry
and ``call_with_retries`` (one try, as the worker's first try) and checks,
besides what the case declares:

* every declared answer was asked for, and nothing was asked beyond them;
* no credential (settings named like secrets, the serverSecret) appears in a
  URL, a request body, an error reason, or the logs captured at DEBUG with
  httpx and httpcore included.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters import create_engine
from adapters.base import EngineContext, EngineError, Reply, RetryPolicy, UserTurn, call_with_retries
from gateway.domain.secrets import is_secret_key
from tests.support.fake_engines import Answer, Recorded, ScriptedUpstream
from tests.support.net import free_port

UPSTREAM = "{upstream}"  # in a case's settings: the scripted engine's http://127.0.0.1:PORT
LOGGERS = ("httpx", "httpcore", "adapters", "gateway")


@dataclass(frozen=True)
class Exactly:
    """In an expected body or state: this value and nothing more (no extra keys)."""

    value: Any


@dataclass(frozen=True)
class Expect:
    """A request the adapter must make; ``json`` is a subset (nested dicts by key, lists item by item)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    absent: tuple[str, ...] = ()  # top-level body keys that must not be sent
    signed_with: str | None = None  # X-Gateway-Signature must be the HMAC of the body with this secret


@dataclass(frozen=True)
class Case:
    label: str
    config: dict
    answers: tuple[Answer, ...] = ()
    requests: tuple[Expect, ...] = ()
    turns: tuple[UserTurn, ...] = (UserTurn("hello"),)
    context: dict = field(default_factory=dict)  # EngineContext fields: history, variables, overrides, state...
    replies: tuple[Reply, ...] = ()  # one per turn answered
    error: type[EngineError] | None = None  # raised by the last turn
    reason: str = ""
    retry_after: float | tuple[float, float] | None = None  # a tuple: the range it must fall in
    state: dict | None = None  # a subset of the adapter's state after the last turn
    upstream: str = "scripted"  # "closed": nothing listens on the port (connection refused)
    timeout: float = 2.0

    def __str__(self) -> str:
        return self.label


def params(cases: list[Case]) -> list:
    labels = [case.label for case in cases]
    assert len(labels) == len(set(labels)), "case labels must be unique"
    return [pytest.param(case, id=case.label) for case in cases]


def run(case: Case, caplog) -> None:
    from gateway.logs import OWN_LOGGERS

    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    # The gateway's own loggers stop propagating once configured; listen to them directly.
    for own in OWN_LOGGERS:
        logging.getLogger(own).addHandler(caplog.handler)
    upstream = ScriptedUpstream(case.answers).start()
    try:
        base = upstream.url if case.upstream == "scripted" else f"http://127.0.0.1:{free_port()}"
        config = _substitute(case.config, base)
        replies, error, context = _play(case, config, _substitute(case.context, base))
    finally:
        upstream.stop()
        for own in OWN_LOGGERS:
            logging.getLogger(own).removeHandler(caplog.handler)

    _check_outcome(case, replies, error, context)
    _check_requests(case, upstream)
    _check_secrets(case, config, context, upstream.requests, error, caplog)


def _play(case: Case, config: dict, context_fields: dict):
    engine = create_engine(config, timeout=case.timeout)
    context = EngineContext(session_id="sess-1", assistant_id="gw-assistant", config=config, **context_fields)
    replies, error = [], None
    for number, turn in enumerate(case.turns, 1):
        try:
            replies.append(call_with_retries(engine, context, turn, RetryPolicy(tries=1), sleep=_no_sleep))
        except EngineError as raised:
            assert number == len(case.turns), f"turn {number} of {len(case.turns)} failed: {raised.reason}"
            error = raised
    return replies, error, context


def _no_sleep(seconds: float) -> None:
    raise AssertionError("one try only: the harness never sleeps between tries")


def _check_outcome(case: Case, replies: list[Reply], error: EngineError | None, context: EngineContext) -> None:
    if case.error is None:
        assert error is None, f"unexpected {type(error).__name__}: {error.reason}"
    else:
        assert isinstance(error, case.error), f"expected {case.error.__name__}, got {error!r}"
        assert case.reason in error.reason, f"{case.reason!r} not in {error.reason!r}"
        assert error.reason == str(error)
        if isinstance(case.retry_after, tuple):
            low, high = case.retry_after
            assert error.retry_after is not None and low <= error.retry_after <= high, error.retry_after
        elif case.retry_after is not None:
            assert error.retry_after == pytest.approx(case.retry_after)
    assert [r.texts for r in replies] == [r.texts for r in case.replies]
    assert [r.cost for r in replies] == pytest.approx([r.cost for r in case.replies])
    if case.state is not None:
        assert_subset(case.state, context.state, "state")


def _check_requests(case: Case, upstream: ScriptedUpstream) -> None:
    assert not upstream.unexpected, f"requests beyond the script: {[r.path for r in upstream.unexpected]}"
    assert not upstream.unused, f"{len(upstream.unused)} declared answer(s) never asked for"
    seen = upstream.requests
    assert len(seen) == len(case.requests), f"expected {len(case.requests)} requests, saw {[r.path for r in seen]}"
    for index, (expected, request) in enumerate(zip(case.requests, seen), 1):
        where = f"request {index}"
        assert (request.method, request.path) == (expected.method, expected.path), where
        for name, value in expected.headers.items():
            assert request.headers.get(name.lower()) == value, f"{where}: header {name}"
        if expected.json is not None:
            assert request.headers.get("content-type") == "application/json", where
            assert_subset(expected.json, request.json, f"{where} body")
        for key in expected.absent:
            assert key not in (request.json or {}), f"{where}: {key} must not be sent"
        if expected.signed_with is not None:
            digest = hmac.new(expected.signed_with.encode(), request.body, hashlib.sha256).hexdigest()
            assert request.headers.get("x-gateway-signature") == "sha256=" + digest, f"{where}: signature"


def _check_secrets(case, config: dict, context: EngineContext, requests: list[Recorded], error, caplog) -> None:
    secrets = [str(value) for key, value in config.items() if is_secret_key(key) and value]
    secrets += [context.secret] if context.secret else []
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    if requests:
        # The transport's own DEBUG lines were captured, so the check below covers them.
        assert any(record.name.startswith("httpcore") for record in caplog.records), "httpcore was not captured"
    for secret in secrets:
        assert secret not in logged, "a credential reached the logs"
        assert error is None or secret not in error.reason, "a credential reached an error reason"
        for request in requests:
            assert secret not in request.path, "a credential travelled in a URL"
            assert secret.encode() not in request.body, "a credential travelled in a request body"


def assert_subset(expected: Any, actual: Any, where: str) -> None:
    """``expected`` is contained in ``actual``: dicts by key, lists of the same length item by item."""
    if isinstance(expected, Exactly):
        assert actual == expected.value, f"{where}: expected exactly {expected.value!r}, got {actual!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: {key} missing from {actual!r}"
            assert_subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), \
            f"{where}: expected {expected!r}, got {actual!r}"
        for index, (item, got) in enumerate(zip(expected, actual)):
            assert_subset(item, got, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


def _substitute(value: Any, base: str) -> Any:
    if isinstance(value, str):
        return value.replace(UPSTREAM, base)
    if isinstance(value, dict):
        return {key: _substitute(item, base) for key, item in value.items()}
    return value
