"""The ``gateway`` command end to end (SPEC section 2), every invocation a real subprocess.

Each test runs ``python -m gateway ...`` with a scrubbed environment whose
GATEWAY_INSTANCE_PATH is a fresh folder of its own (commands on the embedded
default apply migrations themselves). One ``gateway serve`` process is shared
by the ``simulate`` tests of this module. User errors must exit non-zero with
one clear line on stderr and no Python traceback; known violations are pinned
as regressions in CONFIG_AND_REFERENCE_ERRORS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BUSINESS, CUSTOMER, need
from tests.support import postgres
from tests.support.net import free_port, wait_for_http
from tests.support.processes import GatewayProcess, clean_env

GATEWAY = [sys.executable, "-m", "gateway"]
DEMO_CUSTOMER = "+15550001234"
KEY_LINE = re.compile(r"^gk_\S+$")


# -- helpers ---------------------------------------------------------------------------------


def gateway(folder: Path, *args: str, input: str | None = None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """Run ``gateway ARGS`` on the instance ``folder`` (extra keyword arguments are environment variables)."""
    return subprocess.run(
        GATEWAY + list(args),
        env=clean_env(**{"GATEWAY_INSTANCE_PATH": str(folder), **env}),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    return result


def gateway_json(folder: Path, *args: str, **env: str):
    """Run a command that prints JSON and return the parsed output."""
    return json.loads(ok(gateway(folder, *args, **env)).stdout)


def assert_user_error(result: subprocess.CompletedProcess, *, usage: bool = False, mentions: str | None = None) -> str:
    """Non-zero exit, no traceback, and (except for click's own usage errors) exactly one non-empty stderr line."""
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    lines = result.stderr.strip().splitlines()
    if not usage:
        assert len(lines) == 1 and lines[0].strip(), describe(result)
    if mentions is not None:
        assert mentions in result.stderr, describe(result)
    return result.stderr.strip()


def demo_turns(stdout: str) -> list[tuple[str, list[str]]]:
    """Split ``gateway demo`` output into (text typed, stripped lines printed for it) per turn."""
    turns: list[tuple[str, list[str]]] = []
    for line in stdout.splitlines():
        if line.startswith("you> "):
            turns.append((line[len("you> "):], []))
        elif turns and line.strip():
            turns[-1][1].append(line.strip())
    return turns


def matching(lines: list[str], pattern: str) -> list[re.Match]:
    return [m for m in (re.match(pattern, line) for line in lines) if m]


WEBHOOK_LINE = r"^webhook\s+POST /twilio/sms, signed -> 200 in \d+ ms \(SM\w+\.\.\.\)$"
SESSION_LINE = r"^session\s+([0-9a-f]{8}) (created|continued)$"
ENGINE_LINE = r"^engine\s+faq answered in \d+ ms \(processed\)$"
SEND_LINE = r"^send\s+SM\w+\.\.\. via sandbox: delivered \(1 segment\(s\), GSM-7\)$"


# -- gateway demo ------------------------------------------------------------------------------


def test_demo_runs_each_text_through_the_whole_path_and_keeps_context(tmp_path):
    """`gateway demo` with piped stdin prints webhook, session, engine and send lines per turn, and the bot remembers the first question."""
    folder = tmp_path / "instance"
    texts = ["hi", "what are your hours?", "what was my first question?"]
    result = ok(gateway(folder, "demo", "--port", str(free_port()), input="".join(t + "\n" for t in texts)))

    turns = demo_turns(result.stdout)
    assert [text for text, _ in turns] == texts, describe(result)
    prefixes = set()
    for index, (text, lines) in enumerate(turns):
        assert len(matching(lines, WEBHOOK_LINE)) == 1, (text, lines)
        session = matching(lines, SESSION_LINE)
        assert len(session) == 1, (text, lines)
        assert session[0].group(2) == ("created" if index == 0 else "continued"), (text, lines)
        prefixes.add(session[0].group(1))
        assert len(matching(lines, ENGINE_LINE)) == 1, (text, lines)
        assert len(matching(lines, SEND_LINE)) == 1, (text, lines)
        assert len([line for line in lines if line.startswith("bot> ")]) == 1, (text, lines)
    assert len(prefixes) == 1, "all three texts belong to one session"

    replies = [next(line for line in lines if line.startswith("bot> ")) for _, lines in turns]
    assert len(replies[0]) > len("bot> "), replies[0]
    assert re.search(r"\d", replies[1]), replies[1]  # the opening hours
    assert replies[2] == 'bot> Your first question was: "what are your hours?"'

    listed = ok(gateway(folder, "sessions", "list")).stdout.strip().splitlines()
    assert listed[0].split()[:3] == ["ID", "STATUS", "CUSTOMER"] and listed[-1] == "1 of 1", listed
    session_id, status, customer = listed[1].split()[:3]
    assert session_id.startswith(prefixes.pop())
    assert (status, customer) == ("active", DEMO_CUSTOMER)

    shown = ok(gateway(folder, "sessions", "show", session_id)).stdout
    assert shown.startswith(f"session {session_id}  active  customer {DEMO_CUSTOMER}"), shown
    for text in texts:
        assert f"customer > {text}" in shown, shown
    assert 'assistant> Your first question was: "what are your hours?"' in shown
    assert shown.count("assistant>") == 3 and "delivered, 1 seg GSM-7" in shown, shown


def test_demo_shows_opt_out_handling_for_stop_then_text_then_start(tmp_path):
    """STOP opts out (confirmation sent, engine skipped), a text while opted out gets no reply, START opts back in."""
    folder = tmp_path / "instance"
    result = ok(gateway(folder, "demo", "--port", str(free_port()), input="STOP\nare you there?\nSTART\n"))

    (stop, stop_lines), (text, text_lines), (start, start_lines) = demo_turns(result.stdout)
    assert (stop, text, start) == ("STOP", "are you there?", "START")
    for lines in (stop_lines, text_lines, start_lines):
        assert len(matching(lines, WEBHOOK_LINE)) == 1, lines
        assert not matching(lines, ENGINE_LINE), "keywords and opted-out texts never reach the engine"
    assert matching(stop_lines, SESSION_LINE)[0].group(2) == "created"

    assert any(line.startswith("turn") and "STOP keyword" in line and "opted out" in line for line in stop_lines), stop_lines
    assert len(matching(stop_lines, SEND_LINE)) == 1
    assert any(line.startswith("bot> ") and "START" in line for line in stop_lines), stop_lines

    assert any(line.startswith("turn") and "opted out" in line and "no reply" in line for line in text_lines), text_lines
    assert not matching(text_lines, SEND_LINE) and not any(line.startswith("bot> ") for line in text_lines)

    assert any(line.startswith("turn") and "START keyword" in line and "opted back in" in line for line in start_lines)
    assert len(matching(start_lines, SEND_LINE)) == 1
    assert any(line.startswith("bot> ") for line in start_lines), start_lines


# -- gateway serve + gateway simulate -------------------------------------------------------------


@dataclass
class Served:
    folder: Path
    port: int
    url: str
    assistant: dict
    number: dict


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `gateway serve` for the module, with an echo assistant on BUSINESS configured through the CLI."""
    folder = tmp_path_factory.mktemp("served") / "instance"
    port = free_port()
    process = GatewayProcess(["serve", "--port", str(port)], clean_env(GATEWAY_INSTANCE_PATH=str(folder))).start()
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- gateway serve output\n{process.output()}") from None
        assistant = gateway_json(folder, "assistants", "add", "Echo", "--provider", "echo", "--json")
        number = gateway_json(
            folder, "numbers", "add", BUSINESS, "--assistant", assistant["id"], "--messages-per-second", "100", "--json"
        )
        yield Served(folder, port, f"http://localhost:{port}", assistant, number)
    finally:
        process.stop()


def test_simulate_prints_the_echo_reply(served):
    """`gateway simulate` sends a signed webhook to the running gateway and prints the reply text."""
    result = ok(gateway(served.folder, "simulate", "--to", BUSINESS, "--from", CUSTOMER, "--url", served.url, "hello there"))
    assert result.stdout.strip().splitlines() == ["hello there"]


def test_simulate_json_reports_the_processed_text_and_its_replies(served):
    """`gateway simulate --json` prints the outcome: processed inbound, the replies, done."""
    outcome = gateway_json(
        served.folder, "simulate", "--to", BUSINESS, "--from", "+14155550199", "--url", served.url, "--json", "json please"
    )
    assert outcome["done"] is True
    assert outcome["inbound"]["status"] == "processed"
    assert outcome["messageSid"].startswith("SM")
    assert [reply["content"] for reply in outcome["replies"]] == ["json please"]
    assert outcome["replies"][0]["status"] == "delivered"
    assert outcome["turn"]["engine"] == "echo"


def test_simulate_to_an_unconfigured_number_fails_with_one_line(served):
    """A text to a number the gateway does not know: non-zero exit and one clear line."""
    result = gateway(
        served.folder, "simulate", "--to", "+15550109999", "--from", CUSTOMER, "--url", served.url, "--timeout", "1", "hi"
    )
    assert_user_error(result, mentions="configured")


def test_simulate_to_an_unconfigured_number_fails_promptly(served):
    """Without --timeout, a text to an unknown number is reported within a few seconds, not after 30."""
    try:
        result = gateway(served.folder, "simulate", "--to", "+15550109998", "--from", CUSTOMER, "--url", served.url, "hi",
                         timeout=4)
    except subprocess.TimeoutExpired:
        raise AssertionError("gateway simulate was still waiting after 4 s") from None
    assert_user_error(result)


def test_simulate_to_a_port_nothing_listens_on_fails_with_one_line(tmp_path):
    """No gateway at --url: non-zero exit, one line saying it cannot reach it, no traceback."""
    url = f"http://localhost:{free_port()}"
    result = gateway(tmp_path / "instance", "simulate", "--to", BUSINESS, "--from", CUSTOMER, "--url", url, "hi")
    assert_user_error(result, mentions=url)


# -- keys ------------------------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path):
    """The key is the last stdout line, list never shows it (text or --json), revoke marks it revoked."""
    folder = tmp_path / "instance"
    created = ok(gateway(folder, "keys", "create", "ci-bot"))
    key = created.stdout.strip().splitlines()[-1]
    assert KEY_LINE.match(key), describe(created)

    listed = gateway_json(folder, "keys", "list", "--json")
    assert len(listed) == 1
    entry = listed[0]
    assert entry["name"] == "ci-bot" and entry["id"] and entry["prefix"]
    assert key.startswith(entry["prefix"]) and entry["prefix"] != key
    assert entry["revokedAt"] is None
    text = ok(gateway(folder, "keys", "list")).stdout
    assert key not in json.dumps(listed) and key not in text
    assert entry["id"] in text and "ci-bot" in text and "active" in text

    assert entry["id"] in ok(gateway(folder, "keys", "revoke", entry["id"])).stdout
    (after,) = gateway_json(folder, "keys", "list", "--json")
    assert after["id"] == entry["id"] and after["revokedAt"] is not None
    # Revoking an unknown id is in the user-error table below (key-revoke-unknown).


# -- assistants and numbers -------------------------------------------------------------------------


def test_assistants_round_trip(tmp_path):
    """assistants add/list/show/update/remove with --json; update of the provider keeps other settings."""
    folder = tmp_path / "instance"
    added = gateway_json(
        folder, "assistants", "add", "Front desk", "--provider", "echo", "--first-message", "Hello!",
        "--variables", '{"city": "Oslo"}', "--json",
    )
    assert added["name"] == "Front desk"
    assert added["engine"]["provider"] == "echo"
    assert added["firstMessage"] == "Hello!"
    assert added["variableValues"] == {"city": "Oslo"}

    assert [a["id"] for a in gateway_json(folder, "assistants", "list", "--json")] == [added["id"]]
    assert gateway_json(folder, "assistants", "show", added["id"]) == added

    renamed = gateway_json(folder, "assistants", "update", added["id"], "--name", "Back desk", "--json")
    assert renamed["id"] == added["id"] and renamed["name"] == "Back desk"
    assert renamed["engine"]["provider"] == "echo" and renamed["firstMessage"] == "Hello!"
    switched = gateway_json(folder, "assistants", "update", added["id"], "--provider", "faq", "--json")
    assert switched["engine"]["provider"] == "faq" and switched["name"] == "Back desk"

    ok(gateway(folder, "assistants", "remove", added["id"]))
    assert gateway_json(folder, "assistants", "list", "--json") == []


def test_numbers_round_trip_and_normalisation(tmp_path):
    """numbers add normalises "+1 (555) 010-0000" to E.164; list/show/update/remove round trip with --json."""
    folder = tmp_path / "instance"
    assistant = gateway_json(folder, "assistants", "add", "Echo", "--provider", "echo", "--json")
    added = gateway_json(
        folder, "numbers", "add", "+1 (555) 010-0000", "--name", "Front", "--assistant", assistant["id"],
        "--expiration", "3600", "--messages-per-second", "5", "--json",
    )
    assert added["number"] == "+15550100000"
    assert added["name"] == "Front" and added["assistantId"] == assistant["id"]
    assert added["sessionExpirationSeconds"] == 3600 and added["messagesPerSecond"] == 5

    assert [n["id"] for n in gateway_json(folder, "numbers", "list", "--json")] == [added["id"]]
    assert gateway_json(folder, "numbers", "show", added["id"]) == added

    updated = gateway_json(
        folder, "numbers", "update", added["id"], "--name", "Back", "--inactivity", "600",
        "--number", "+1 555 010 0001", "--json",
    )
    assert updated["id"] == added["id"] and updated["name"] == "Back"
    assert updated["number"] == "+15550100001" and updated["sessionInactivitySeconds"] == 600
    assert updated["assistantId"] == assistant["id"] and updated["sessionExpirationSeconds"] == 3600

    ok(gateway(folder, "numbers", "remove", added["id"]))
    assert_user_error(gateway(folder, "numbers", "show", added["id"]), mentions=added["id"])


# -- database, sweep, worker --------------------------------------------------------------------------

UPGRADED = re.compile(r"^database is up to date \((\d+) migration\(s\) applied\)$")


def upgrade_twice(folder: Path, **env: str) -> tuple[int, int]:
    counts = []
    for _ in range(2):
        result = ok(gateway(folder, "db", "upgrade", **env))
        match = UPGRADED.match(result.stdout.strip())
        assert match, describe(result)
        counts.append(int(match.group(1)))
    return counts[0], counts[1]


def test_db_upgrade_on_a_fresh_instance_then_again(tmp_path):
    """`gateway db upgrade` migrates a fresh SQLite instance and says up to date; a second run applies 0."""
    first, second = upgrade_twice(tmp_path / "instance")
    assert first >= 1 and second == 0
    assert (tmp_path / "instance" / "gateway.db").exists()


@pytest.mark.postgres
def test_db_upgrade_on_a_fresh_postgres_database(tmp_path):
    """`gateway db upgrade` with GATEWAY_DATABASE_URL migrates an empty PostgreSQL database; a second run applies 0."""
    with postgres.scratch_engine(need) as (database, _):
        first, second = upgrade_twice(tmp_path / "instance", GATEWAY_DATABASE_URL=database.url)
    assert first >= 1 and second == 0


def test_sweep_on_a_fresh_instance_prints_the_counts(tmp_path):
    """`gateway sweep` on a fresh instance exits 0 and prints the four counts, all zero."""
    result = ok(gateway(tmp_path / "instance", "sweep"))
    assert result.stdout.strip() == ("expired sessions completed: 0; turns re-enqueued: 0; sends re-enqueued: 0; "
                                     "event deliveries re-enqueued: 0")


def test_worker_without_redis_url_names_the_variable(tmp_path):
    """`gateway worker` without GATEWAY_REDIS_URL fails with one line naming GATEWAY_REDIS_URL."""
    assert_user_error(gateway(tmp_path / "instance", "worker", "--burst", timeout=30), mentions="GATEWAY_REDIS_URL")


# -- user errors ------------------------------------------------------------------------------------------
#
# The cases are independent, so a module fixture runs them all at once (each on a
# fresh instance folder of its own) and every parametrised test checks its own result.


@dataclass(frozen=True)
class UserError:
    args: tuple[str, ...]
    setup: tuple[tuple[str, ...], ...] = ()  # commands run first; "{id}" in args is the id the last one printed
    env: tuple[tuple[str, str], ...] = ()
    usage: bool = False  # click's own usage errors may print several lines
    mentions: str | None = None


USER_ERRORS = [
    pytest.param(UserError(("numbers", "add", "not-a-number"), mentions="not-a-number"), id="number-not-e164"),
    pytest.param(UserError(("numbers", "add", BUSINESS, "--expiration", "5"), mentions="sessionExpirationSeconds"),
                 id="number-expiration-too-short"),
    pytest.param(UserError(("numbers", "add", BUSINESS, "--assistant", "no-such-id"), mentions="no-such-id"),
                 id="number-unknown-assistant"),
    pytest.param(UserError(("numbers", "add", BUSINESS), setup=(("numbers", "add", BUSINESS, "--json"),), mentions="exists"),
                 id="number-added-twice"),
    pytest.param(UserError(("assistants", "add", "X", "--provider", "nope"), mentions="nope"), id="assistant-unknown-provider"),
    pytest.param(UserError(("assistants", "add", "X", "--variables", "not json"), mentions="--variables"),
                 id="assistant-variables-not-json"),
    pytest.param(UserError(("assistants", "add", "X", "--engine-json", "[1]"), mentions="--engine-json"),
                 id="assistant-engine-json-not-an-object"),
    pytest.param(UserError(("assistants", "show", "no-such-id"), mentions="no-such-id"), id="assistant-show-unknown"),
    pytest.param(UserError(("assistants", "update", "no-such-id", "--name", "Y"), mentions="no-such-id"),
                 id="assistant-update-unknown"),
    pytest.param(UserError(("numbers", "remove", "no-such-id"), mentions="no-such-id"), id="number-remove-unknown"),
    pytest.param(UserError(("sessions", "show", "no-such-id"), mentions="no-such-id"), id="session-show-unknown"),
    pytest.param(UserError(("keys", "revoke", "no-such-id"), mentions="no-such-id"), id="key-revoke-unknown"),
    pytest.param(UserError(("sessions", "list", "--limit", "0"), usage=True), id="usage-sessions-limit-zero"),
    pytest.param(UserError(("sweep",), env=(("GATEWAY_SWEEP_INTERVAL_SECONDS", "abc"),),
                           mentions="GATEWAY_SWEEP_INTERVAL_SECONDS"), id="config-sweep-interval-not-a-number"),
]


# Found as bugs once (each ended in a traceback or was missing); kept as regressions.
CONFIG_AND_REFERENCE_ERRORS = [
    pytest.param(
        UserError(("numbers", "update", "{id}", "--assistant", "no-such-id"),
                  setup=(("numbers", "add", BUSINESS, "--json"),), mentions="no-such-id"),
        id="number-update-unknown-assistant",
    ),
    pytest.param(
        UserError(("sessions", "end", "no-such-id"), mentions="no-such-id"),
        id="sessions-end-unknown",
    ),
    pytest.param(
        UserError(("sweep",), env=(("GATEWAY_DATABASE_URL", "not-a-url"),), mentions="GATEWAY_DATABASE_URL"),
        id="config-database-url-malformed",
    ),
    pytest.param(
        UserError(("sweep",), env=(("GATEWAY_LOG_LEVEL", "bogus"),), mentions="GATEWAY_LOG_LEVEL"),
        id="config-log-level-unknown",
    ),
    pytest.param(
        UserError(("worker", "--burst"), env=(("GATEWAY_REDIS_URL", "not-a-redis-url"),), mentions="GATEWAY_REDIS_URL"),
        id="config-redis-url-malformed",
    ),
    pytest.param(
        UserError(("sweep",), env=(("GATEWAY_INSTANCE_PATH", "/dev/null/instance"),), mentions="/dev/null/instance"),
        id="config-instance-path-unusable",
    ),
]


def run_user_error(case: UserError, folder: Path) -> subprocess.CompletedProcess:
    created_id = ""
    for setup in case.setup:
        created_id = json.loads(ok(gateway(folder, *setup)).stdout)["id"]
    args = [arg.replace("{id}", created_id) for arg in case.args]
    return gateway(folder, *args, timeout=30, **dict(case.env))


@pytest.fixture(scope="module")
def user_error_results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess | Exception]:
    """Every user-error case, run concurrently, each on a fresh instance folder of its own."""
    root = tmp_path_factory.mktemp("user-errors")
    cases = {param.id: param.values[0] for param in USER_ERRORS + CONFIG_AND_REFERENCE_ERRORS}

    def run(name: str):
        try:
            return run_user_error(cases[name], root / name)
        except Exception as error:  # reported by the case's own test
            return error

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(cases, pool.map(run, cases)))


def check_user_error(request, case: UserError, results: dict) -> None:
    result = results[request.node.callspec.id]
    if isinstance(result, Exception):
        raise result
    assert_user_error(result, usage=case.usage, mentions=case.mentions)


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_error_is_one_line_without_traceback(request, case: UserError, user_error_results):
    """Each user error exits non-zero with exactly one stderr line (click usage errors: any lines) and no traceback."""
    check_user_error(request, case, user_error_results)


@pytest.mark.parametrize("case", CONFIG_AND_REFERENCE_ERRORS)
def test_config_and_reference_errors(request, case: UserError, user_error_results):
    """Bad configuration and unknown references are user errors too: one line, no traceback."""
    check_user_error(request, case, user_error_results)
