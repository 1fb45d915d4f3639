"""Configuring each remote engine from the CLI, and ``gateway simulate`` answered by each engine's fake.

Every command is a real ``python -m gateway`` subprocess on an instance
folder of the module's own. One ``gateway serve`` runs for the module; the
engine fakes run in this test process on 127.0.0.1 and the served gateway
calls them over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.bootstrap import build_runtime
from gateway.config import Settings
from gateway.services.assistants import get_assistant
from tests.adapters.network_guard import network_guard  # noqa: F401  (autouse: nothing leaves 127.0.0.1)
from tests.conftest import CUSTOMER
from tests.support.fake_engine import FakeEngine
from tests.support.fake_engines import FakeCallHQ, FakeOpenAI, FakeVapi
from tests.support.net import free_port, wait_for_http
from tests.support.processes import GatewayProcess, clean_env

GATEWAY = [sys.executable, "-m", "gateway"]
KEY = "cli-engine-key-0123456789wxyz"
NUMBERS = {"callhq": "+15550100001", "vapi": "+15550100002", "openai": "+15550100003", "webhook": "+15550100004"}


def gateway(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(GATEWAY + list(args), env=clean_env(GATEWAY_INSTANCE_PATH=str(folder)),
                          capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0 and "Traceback" not in result.stderr, f"{result.stdout}\n{result.stderr}"
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """Non-zero exit, no traceback, exactly one stderr line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@dataclass
class Engines:
    callhq: FakeCallHQ
    vapi: FakeVapi
    openai: FakeOpenAI
    webhook: FakeEngine

    def add_options(self, provider: str) -> list[str]:
        """The `assistants add` options that configure ``provider`` against its fake."""
        return {
            "callhq": ["--provider", "callhq", "--base-url", self.callhq.url, "--api-key", KEY,
                       "--remote-assistant-id", "asst_remote"],
            "vapi": ["--provider", "vapi", "--base-url", self.vapi.url, "--api-key", KEY,
                     "--remote-assistant-id", "asst_vapi"],
            "openai": ["--provider", "openai", "--base-url", self.openai.base_url, "--api-key", KEY,
                       "--model", "fake-model"],
            "webhook": ["--provider", "webhook", "--url", self.webhook.url],
        }[provider]


@pytest.fixture(scope="module")
def engines():
    fakes = Engines(FakeCallHQ(KEY, ("asst_remote",)).start(), FakeVapi(KEY, ("asst_vapi",)).start(),
                    FakeOpenAI(KEY, ("fake-model",)).start(), FakeEngine().start())
    yield fakes
    for fake in (fakes.callhq, fakes.vapi, fakes.openai, fakes.webhook):
        fake.stop()


@dataclass
class Served:
    folder: Path
    url: str
    added: dict[str, dict]


@pytest.fixture(scope="module")
def served(tmp_path_factory, engines):
    """`gateway serve`, with one assistant per remote provider added through the CLI, each on a number of its own."""
    folder = tmp_path_factory.mktemp("providers") / "instance"
    ok(gateway(folder, "db", "upgrade"))
    port = free_port()
    process = GatewayProcess(["serve", "--port", str(port)], clean_env(GATEWAY_INSTANCE_PATH=str(folder))).start()

    def add(provider: str) -> dict:
        assistant = json.loads(ok(gateway(folder, "assistants", "add", provider.title(), *engines.add_options(provider),
                                          "--json")).stdout)
        ok(gateway(folder, "numbers", "add", NUMBERS[provider], "--assistant", assistant["id"],
                   "--messages-per-second", "100", "--json"))
        return assistant

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            added = dict(zip(NUMBERS, pool.map(add, NUMBERS)))
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- gateway serve output\n{process.output()}") from None
        yield Served(folder, f"http://localhost:{port}", added)
    finally:
        process.stop()


def test_assistants_add_configures_each_provider(served, engines):
    """--base-url, --api-key, --model, --remote-assistant-id and --url land in the engine object; the key is masked."""
    engine = {provider: assistant["engine"] for provider, assistant in served.added.items()}
    assert engine["callhq"] == {"provider": "callhq", "baseUrl": engines.callhq.url, "apiKey": "****wxyz",
                                "assistantId": "asst_remote"}
    assert engine["vapi"] == {"provider": "vapi", "baseUrl": engines.vapi.url, "apiKey": "****wxyz",
                              "assistantId": "asst_vapi"}
    assert engine["openai"] == {"provider": "openai", "baseUrl": engines.openai.base_url, "apiKey": "****wxyz",
                                "model": "fake-model"}
    assert engine["webhook"] == {"provider": "webhook", "url": engines.webhook.url}
    shown = ok(gateway(served.folder, "assistants", "show", served.added["openai"]["id"])).stdout
    assert KEY not in shown and "****wxyz" in shown


@pytest.mark.parametrize("provider", list(NUMBERS))
def test_simulate_is_answered_by_each_engine(served, provider):
    """`gateway simulate` to the provider's number prints the reply its fake engine gave."""
    result = ok(gateway(served.folder, "simulate", "--to", NUMBERS[provider], "--from", CUSTOMER, "--url", served.url,
                        "--timeout", "20", "hello there"))
    expected = {"callhq": "callhq heard: hello there (turn 1)", "vapi": "vapi heard: hello there (turn 1)",
                "openai": "openai heard: hello there (1 messages)", "webhook": "re: hello there"}[provider]
    assert result.stdout.strip().splitlines() == [expected]


def test_update_changes_one_engine_setting_and_keeps_the_others(tmp_path):
    """`assistants update --model` keeps baseUrl and the stored key; --engine-json still replaces the engine."""
    folder = tmp_path / "instance"
    added = json.loads(ok(gateway(folder, "assistants", "add", "O", "--engine-json", json.dumps(
        {"provider": "openai", "baseUrl": "https://llm.example/v1", "apiKey": KEY, "model": "m1"}), "--json")).stdout)
    assert added["engine"]["model"] == "m1" and added["engine"]["apiKey"] == "****wxyz"

    updated = json.loads(ok(gateway(folder, "assistants", "update", added["id"], "--model", "m2", "--json")).stdout)
    assert updated["engine"] == {**added["engine"], "model": "m2"}

    runtime = build_runtime(Settings.from_env({}, instance_path=folder), migrate=False, start_embedded=False)
    try:
        assert get_assistant(runtime, added["id"]).engine["apiKey"] == KEY
    finally:
        runtime.close()


BAD = {
    # label: (arguments after `assistants add X`, what the error line says)
    "callhq without --api-key": (["--provider", "callhq", "--base-url", "https://c.example",
                                  "--remote-assistant-id", "a"], "apiKey"),
    "vapi without --remote-assistant-id": (["--provider", "vapi", "--base-url", "https://v.example", "--api-key", KEY],
                                           "assistantId"),
    "openai without --model": (["--provider", "openai", "--base-url", "https://o.example/v1", "--api-key", KEY],
                               "model"),
    "webhook without --url": (["--provider", "webhook"], "url"),
    "a key in the base URL": (["--provider", "openai", "--base-url", "https://o.example/v1?key=abc", "--api-key", KEY,
                               "--model", "m"], "query string"),
    "engine options without a provider": (["--base-url", "https://o.example/v1"], "engine.provider"),
}


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every bad configuration, run two at a time, each on a fresh instance folder."""
    root = tmp_path_factory.mktemp("bad-engines")

    def run(label: str):
        return gateway(root / label.replace(" ", "-"), "assistants", "add", "X", *BAD[label][0])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(BAD, pool.map(run, BAD)))


@pytest.mark.parametrize("label", list(BAD))
def test_bad_engine_configuration_is_one_clear_line(label, bad_results):
    """Missing or unsafe engine settings: non-zero exit, one line naming the setting, the key never echoed."""
    line = one_line_error(bad_results[label])
    assert BAD[label][1] in line, line
    assert KEY not in line
