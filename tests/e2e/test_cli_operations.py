"""CLI commands for bulk and scripted operations: --json everywhere, filters, progress bars, refusals.

Sessions are seeded in process on the instance's SQLite file; every command runs
as a real `python -m gateway` subprocess (helpers from test_cli).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.bootstrap import build_runtime
from gateway.config import Settings
from gateway.db.models import Session
from gateway.schemas import AssistantCreate, SessionCreate
from gateway.services.assistants import create_assistant
from gateway.services.session_api import create_session
from tests.e2e.test_cli import assert_user_error, gateway, gateway_json, ok

pytestmark = pytest.mark.slow


def seed(folder: Path, count: int, *, expired: int = 0, name: str = "seeded") -> dict:
    """``count`` API sessions on the instance at ``folder``; the first ``expired`` of them already expired."""
    runtime = build_runtime(Settings.from_env({}, instance_path=folder), start_embedded=False)
    try:
        assistant = create_assistant(runtime, AssistantCreate(name="Bot", engine={"provider": "echo"}))
        ids = [create_session(runtime, SessionCreate(assistantId=assistant.id, name=f"{name} {index}",
                                                     customer={"number": f"+1415555{index:04d}"})).id
               for index in range(count)]
        with runtime.db.begin() as tx:
            past = runtime.clock.now() - timedelta(seconds=1)
            for session_id in ids[:expired]:
                tx.get(Session, session_id).expires_at = past
        return {"assistant": assistant.id, "sessions": ids}
    finally:
        runtime.close()


def test_keys_create_json_gives_the_key_once(tmp_path):
    created = gateway_json(tmp_path, "keys", "create", "ops", "--json")
    assert set(created) == {"id", "name", "key"} and created["key"].startswith("gk_")
    revoked = gateway_json(tmp_path, "keys", "revoke", created["id"], "--json")
    assert revoked["id"] == created["id"] and revoked["revokedAt"]
    assert created["key"] not in json.dumps(gateway_json(tmp_path, "keys", "list", "--json"))


def test_remove_commands_print_what_they_removed_as_json(tmp_path):
    assistant = gateway_json(tmp_path, "assistants", "add", "Bot", "--provider", "echo", "--json")
    number = gateway_json(tmp_path, "numbers", "add", "+15550100000", "--assistant", assistant["id"], "--json")
    assert gateway_json(tmp_path, "numbers", "remove", number["id"], "--json") == number
    assert gateway_json(tmp_path, "assistants", "remove", assistant["id"], "--json")["id"] == assistant["id"]
    assert_user_error(gateway(tmp_path, "assistants", "remove", assistant["id"], "--json"), mentions=assistant["id"])


def test_db_upgrade_json_lists_the_applied_revisions_oldest_first(tmp_path):
    applied = gateway_json(tmp_path, "db", "upgrade", "--json")["applied"]
    assert applied[0] == "0001" and applied == sorted(applied)
    assert gateway_json(tmp_path, "db", "upgrade", "--json") == {"applied": []}


def test_sessions_list_filters_and_pages(tmp_path):
    seeded = seed(tmp_path, 30)
    page = gateway_json(tmp_path, "sessions", "list", "--limit", "10", "--offset", "10", "--json")
    assert page["totalCount"] == 30 and len(page["sessions"]) == 10
    assert gateway_json(tmp_path, "sessions", "list", "--customer", "+1 415 555 0007", "--json")["totalCount"] == 1
    assert gateway_json(tmp_path, "sessions", "list", "--search", "seeded 2", "--json")["totalCount"] == 11
    assert gateway_json(tmp_path, "sessions", "list", "--assistant", seeded["assistant"], "--json")["totalCount"] == 30
    assert gateway_json(tmp_path, "sessions", "list", "--status", "completed", "--json")["totalCount"] == 0
    assert_user_error(gateway(tmp_path, "sessions", "list", "--customer", "not a number"), mentions="E.164")


def test_sweep_completes_many_expired_sessions_with_a_progress_bar_on_stderr(tmp_path):
    seed(tmp_path, 250, expired=240)
    result = ok(gateway(tmp_path, "sweep", "--json"))
    assert json.loads(result.stdout)["expired"] == 240  # stdout stays pure JSON
    assert "completing expired sessions" in result.stderr
    assert gateway_json(tmp_path, "sessions", "list", "--status", "active", "--json")["totalCount"] == 10


def test_sessions_delete_by_filter_needs_yes_when_not_interactive(tmp_path):
    seed(tmp_path, 150, expired=0)
    refused = gateway(tmp_path, "sessions", "delete", "--search", "seeded", input="")
    assert_user_error(refused, mentions="refusing to delete 150 session(s) without --yes")
    assert gateway_json(tmp_path, "sessions", "list", "--json")["totalCount"] == 150

    result = ok(gateway(tmp_path, "sessions", "delete", "--search", "seeded 1", "--yes", "--json"))
    assert json.loads(result.stdout) == {"deleted": 61, "matched": 61}  # "seeded 1", "seeded 10"-"19", "100"-"149"
    assert gateway_json(tmp_path, "sessions", "list", "--json")["totalCount"] == 89


def test_sessions_delete_by_ids_and_by_date(tmp_path):
    seeded = seed(tmp_path, 5)
    first, second = seeded["sessions"][:2]
    assert gateway_json(tmp_path, "sessions", "delete", first, second, first, "--yes", "--json") == {
        "deleted": 2, "matched": 2}
    assert gateway_json(tmp_path, "sessions", "delete", "--before", "2000-01-01", "--yes", "--json") == {
        "deleted": 0, "matched": 0}
    assert gateway_json(tmp_path, "sessions", "delete", "--before", "2999-01-01", "--yes", "--json") == {
        "deleted": 3, "matched": 3}


@pytest.mark.parametrize("args, mentions", [
    (["sessions", "delete"], "give session IDs, or filters"),
    (["sessions", "delete", "abc", "--status", "completed"], "not both"),
    (["sessions", "delete", "--before", "yesterday"], None),
    (["sessions", "list", "--limit", "0"], None),
])
def test_bad_bulk_input_is_one_clear_error(tmp_path, args, mentions):
    result = gateway(tmp_path, *args)
    assert_user_error(result, usage=mentions is None, mentions=mentions)
