"""The harness and the network guard catch what they promise to catch (so a green adapter table means something)."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

import adapters
from adapters.base import PermanentEngineError, Reply
from adapters.http import post_json
from tests.adapters.harness import UPSTREAM, Case, Expect, run
from tests.support.fake_engines import Answer

KEY = "leaky-key-0123456789abcdef"


class LeakyEngine:
    """A broken adapter: puts its key in the URL and in a log line."""

    provider = "leaky"
    remote = True

    def __init__(self, config, timeout=2.0):
        self.config, self.timeout = config, timeout

    def reply(self, context, turn):
        logging.getLogger("adapters.leaky").debug("calling with key %s", self.config["apiKey"])
        answer = post_json(self.provider, self.config["baseUrl"] + "/chat?key=" + self.config["apiKey"], {},
                           timeout=self.timeout)
        return Reply([answer["reply"]])


@pytest.fixture
def leaky_registered(monkeypatch):
    real = adapters._engine_classes
    monkeypatch.setattr(adapters, "_engine_classes", lambda: {**real(), "leaky": LeakyEngine})


ECHO_OK = Case("ok", {"provider": "webhook", "url": UPSTREAM + "/turn"}, answers=(Answer(200, {"reply": "hi"}),),
               requests=(Expect("POST", "/turn"),), replies=(Reply(["hi"]),))


def test_a_declared_answer_never_asked_for_fails_the_case(caplog):
    """A case whose script has an answer left over fails."""
    case = Case("extra", ECHO_OK.config, answers=ECHO_OK.answers + (Answer(200, {"reply": "again"}),),
                requests=ECHO_OK.requests, replies=ECHO_OK.replies)
    with pytest.raises(AssertionError, match="never asked for"):
        run(case, caplog)


def test_a_request_beyond_the_script_fails_the_case(caplog):
    """A request the case declared no answer for fails, even when the adapter copes with the 418."""
    case = Case("short", ECHO_OK.config, answers=(), requests=ECHO_OK.requests, error=PermanentEngineError)
    with pytest.raises(AssertionError, match="beyond the script"):
        run(case, caplog)


def test_a_header_or_body_mismatch_fails_the_case(caplog):
    """Expected headers and body subsets are checked."""
    wrong_header = Case("h", ECHO_OK.config, answers=ECHO_OK.answers, replies=ECHO_OK.replies,
                        requests=(Expect("POST", "/turn", {"x-api-key": "k"}),))
    with pytest.raises(AssertionError, match="header x-api-key"):
        run(wrong_header, caplog)
    wrong_body = Case("b", ECHO_OK.config, answers=ECHO_OK.answers, replies=ECHO_OK.replies,
                      requests=(Expect("POST", "/turn", json={"message": {"content": "bye"}}),))
    with pytest.raises(AssertionError, match="content"):
        run(wrong_body, caplog)


def test_a_key_in_the_logs_or_url_fails_the_case(caplog, leaky_registered):
    """An adapter that logs its key, or sends it in the URL, fails the secret check."""
    case = Case("leak", {"provider": "leaky", "baseUrl": UPSTREAM, "apiKey": KEY},
                answers=(Answer(200, {"reply": "hi"}),), requests=(Expect("POST", f"/chat?key={KEY}"),),
                replies=(Reply(["hi"]),))
    with pytest.raises(AssertionError, match="credential"):
        run(case, caplog)


def test_the_guard_refuses_and_records_connections_leaving_the_host(network_guard):
    """Connecting to a non-loopback address or resolving a public name is refused and recorded."""
    with pytest.raises(httpx.ConnectError):
        httpx.post("http://192.0.2.10:80/chat", timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("api.openai.com", 443)
    refused = network_guard.forgive()
    assert any("192.0.2.10" in item for item in refused)
    assert any("api.openai.com" in item for item in refused)


def test_the_guard_lets_loopback_through(network_guard):
    """127.0.0.1, ::1 and localhost are allowed."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=1):
            pass
    assert network_guard.refused == []
