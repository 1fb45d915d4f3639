"""CLI commands for API keys, assistants, numbers and sessions: thin wrappers over the services.

gateway.cli registers these commands for every ``gateway`` invocation, so this
module imports only click at the top: the schemas (pydantic) and views
(SQLAlchemy models) are imported by the commands that use them.
"""

from __future__ import annotations

import json

import click

from gateway.cli import main, print_json, progress, runtime_for_command
from gateway.errors import BadRequest


def _json_option(value: str | None, name: str) -> dict | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as error:
        raise BadRequest(f"{name} must be JSON: {error.msg}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{name} must be a JSON object")
    return data


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(line.format(*headers))
    for row in rows:
        click.echo(line.format(*[str(v) if v is not None else "-" for v in row]))


# -- keys ----------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "name", "key"} as JSON.')
def keys_create(name: str, as_json: bool) -> None:
    """Create an API key; the key is printed once, as the last line."""
    from gateway.services.api_keys import create_key

    with runtime_for_command() as runtime:
        key, plaintext = create_key(runtime, name)
    click.echo(f"created API key {key.id} ({name}); store it now, it is not shown again:", err=True)
    if as_json:
        print_json({"id": key.id, "name": key.name, "key": plaintext})
        return
    click.echo(plaintext)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """List API keys (never the keys themselves)."""
    from gateway.services.api_keys import list_keys

    with runtime_for_command() as runtime:
        rows = list_keys(runtime)
    data = [
        {"id": k.id, "name": k.name, "prefix": k.prefix, "createdAt": _iso(k.created_at),
         "lastUsedAt": _iso(k.last_used_at), "revokedAt": _iso(k.revoked_at)}
        for k in rows
    ]
    if as_json:
        print_json(data)
        return
    _table([[d["id"], d["name"], d["prefix"] + "...", d["createdAt"], d["revokedAt"] or "active"] for d in data],
           ["ID", "NAME", "PREFIX", "CREATED", "STATE"])


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke an API key: requests using it are refused from now on."""
    from gateway.services.api_keys import revoke_key

    with runtime_for_command() as runtime:
        key = revoke_key(runtime, key_id)
    if as_json:
        print_json({"id": key.id, "name": key.name, "revokedAt": _iso(key.revoked_at)})
        return
    click.echo(f"revoked API key {key.id} ({key.name})")


def _iso(value):
    from gateway.domain.timestamps import iso

    return iso(value)


# -- assistants -----------------------------------------------------------------------


@main.group()
def assistants() -> None:
    """Assistants: which engine answers, and how."""


# Options that set one engine setting each, by the setting's name in the engine object (SPEC section 3).
ENGINE_SETTING_OPTIONS = {
    "base_url": "baseUrl", "api_key": "apiKey", "model": "model", "remote_assistant_id": "assistantId", "url": "url",
}


def _engine_settings(options: dict) -> dict:
    return {ENGINE_SETTING_OPTIONS[name]: value for name, value in options.items() if value is not None}


def _assistant_fields(provider, engine_json, first_message, system_prompt, fallback, server_url, variables,
                      engine_settings: dict | None = None, stored_engine: dict | None = None) -> dict:
    """The assistant fields the options give; engine settings go over --engine-json, or over ``stored_engine``."""
    data: dict = {}
    given = _json_option(engine_json, "--engine-json")
    engine = dict(given if given is not None else stored_engine or {})
    engine.update(engine_settings or {})
    if provider:
        engine["provider"] = provider
    if given is not None or provider or engine_settings:
        data["engine"] = engine
    for key, value in (("firstMessage", first_message), ("systemPrompt", system_prompt),
                       ("fallbackMessage", fallback), ("serverUrl", server_url)):
        if value is not None:
            data[key] = value
    variable_values = _json_option(variables, "--variables")
    if variable_values is not None:
        data["variableValues"] = variable_values
    return data


ASSISTANT_OPTIONS = [
    click.option("--provider", help="Engine provider: faq, echo, ..."),
    click.option("--engine-json", help='Engine settings as JSON, e.g. \'{"provider": "faq"}\'.'),
    click.option("--base-url", help="The engine API's root (callhq, vapi, openai): engine.baseUrl."),
    click.option("--api-key", help="The engine's API key (callhq, vapi, openai): engine.apiKey; shown masked."),
    click.option("--model", help="The model (openai): engine.model."),
    click.option("--remote-assistant-id",
                 help="The assistant's id on the engine's side (callhq, vapi): engine.assistantId."),
    click.option("--url", help="The operator's endpoint (webhook): engine.url."),
    click.option("--first-message"),
    click.option("--system-prompt"),
    click.option("--fallback-message", "fallback"),
    click.option("--server-url"),
    click.option("--variables", help="Default variableValues as a JSON object."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def assistant_options(command):
    for option in reversed(ASSISTANT_OPTIONS):
        command = option(command)
    return command


def _show_assistant(view: dict, as_json: bool) -> None:
    if as_json:
        print_json(view)
    else:
        click.echo(f"{view['id']}  {view['name']}  engine={view['engine'].get('provider')}")


@assistants.command("add")
@click.argument("name")
@assistant_options
def assistants_add(name, provider, engine_json, first_message, system_prompt, fallback, server_url, variables, as_json,
                   **engine_options):
    """Create an assistant (the faq engine unless told otherwise)."""
    from gateway.schemas import AssistantCreate, parse
    from gateway.services.assistants import create_assistant
    from gateway.views import assistant_view

    data = {"name": name, **_assistant_fields(provider, engine_json, first_message, system_prompt, fallback, server_url,
                                              variables, _engine_settings(engine_options))}
    with runtime_for_command() as runtime:
        assistant = create_assistant(runtime, parse(AssistantCreate, data))
    _show_assistant(assistant_view(assistant), as_json)


@assistants.command("list")
@click.option("--json", "as_json", is_flag=True)
def assistants_list(as_json: bool) -> None:
    """List assistants."""
    from gateway.services.assistants import list_assistants
    from gateway.views import assistant_view

    with runtime_for_command() as runtime:
        rows, _ = list_assistants(runtime, 1000, 0)
    views = [assistant_view(a) for a in rows]
    if as_json:
        print_json(views)
        return
    _table([[v["id"], v["name"], v["engine"].get("provider"), v["createdAt"]] for v in views],
           ["ID", "NAME", "ENGINE", "CREATED"])


@assistants.command("show")
@click.argument("assistant_id")
def assistants_show(assistant_id: str) -> None:
    """Show one assistant as JSON (credentials masked)."""
    from gateway.services.assistants import get_assistant
    from gateway.views import assistant_view

    with runtime_for_command() as runtime:
        print_json(assistant_view(get_assistant(runtime, assistant_id)))


@assistants.command("update")
@click.argument("assistant_id")
@click.option("--name")
@assistant_options
def assistants_update(assistant_id, name, provider, engine_json, first_message, system_prompt, fallback, server_url,
                      variables, as_json, **engine_options):
    """Change an assistant's settings; engine options change those settings and keep the others."""
    from gateway.schemas import AssistantUpdate, parse
    from gateway.services.assistants import get_assistant, update_assistant
    from gateway.views import assistant_view

    settings = _engine_settings(engine_options)
    with runtime_for_command() as runtime:
        # Without --engine-json, --provider and the engine options change the stored engine in place.
        stored = get_assistant(runtime, assistant_id).engine if engine_json is None and (provider or settings) else None
        data = _assistant_fields(provider, engine_json, first_message, system_prompt, fallback, server_url, variables,
                                 settings, stored)
        if name is not None:
            data["name"] = name
        assistant = update_assistant(runtime, assistant_id, parse(AssistantUpdate, data))
    _show_assistant(assistant_view(assistant), as_json)


@assistants.command("remove")
@click.argument("assistant_id")
@click.option("--json", "as_json", is_flag=True)
def assistants_remove(assistant_id: str, as_json: bool) -> None:
    """Delete an assistant (numbers using it are left without one)."""
    from gateway.services.assistants import delete_assistant, get_assistant
    from gateway.views import assistant_view

    with runtime_for_command() as runtime:
        view = assistant_view(get_assistant(runtime, assistant_id))
        delete_assistant(runtime, assistant_id)
    if as_json:
        print_json(view)
        return
    click.echo(f"removed assistant {assistant_id}")


# -- numbers ---------------------------------------------------------------------------


@main.group()
def numbers() -> None:
    """Business phone numbers and the assistant behind each."""


NUMBER_OPTIONS = [
    click.option("--name"),
    click.option("--assistant", "assistant_id", help="ID of the assistant that answers this number."),
    click.option("--expiration", "expiration", type=int, help="sessionExpirationSeconds (60 to 2592000)."),
    click.option("--inactivity", "inactivity", type=int, help="sessionInactivitySeconds (60 to 2592000)."),
    click.option("--help-message"),
    click.option("--opt-out-message"),
    click.option("--opt-in-message"),
    click.option("--messages-per-second", "mps", type=float),
    click.option("--messaging-service-sid"),
    click.option("--merge-burst-seconds", "merge", type=float),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def number_options(command):
    for option in reversed(NUMBER_OPTIONS):
        command = option(command)
    return command


def _number_fields(**given) -> dict:
    names = {
        "name": "name", "assistant_id": "assistantId", "expiration": "sessionExpirationSeconds",
        "inactivity": "sessionInactivitySeconds", "help_message": "helpMessage", "opt_out_message": "optOutMessage",
        "opt_in_message": "optInMessage", "mps": "messagesPerSecond", "messaging_service_sid": "messagingServiceSid",
        "merge": "mergeBurstSeconds",
    }
    return {names[key]: value for key, value in given.items() if key in names and value is not None}


def _show_number(view: dict, as_json: bool) -> None:
    if as_json:
        print_json(view)
    else:
        click.echo(f"{view['id']}  {view['number']}  assistant={view['assistantId'] or '-'}")


@numbers.command("add")
@click.argument("number")
@number_options
def numbers_add(number, as_json, **options):
    """Add a business number (E.164) and the assistant that answers it."""
    from gateway.schemas import PhoneNumberCreate, parse
    from gateway.services.phone_numbers import create_phone_number
    from gateway.views import phone_number_view

    with runtime_for_command() as runtime:
        created = create_phone_number(runtime, parse(PhoneNumberCreate, {"number": number, **_number_fields(**options)}))
    _show_number(phone_number_view(created), as_json)


@numbers.command("list")
@click.option("--json", "as_json", is_flag=True)
def numbers_list(as_json: bool) -> None:
    """List business numbers."""
    from gateway.services.phone_numbers import list_phone_numbers
    from gateway.views import phone_number_view

    with runtime_for_command() as runtime:
        rows, _ = list_phone_numbers(runtime, 1000, 0)
    views = [phone_number_view(n) for n in rows]
    if as_json:
        print_json(views)
        return
    _table([[v["id"], v["number"], v["name"], v["assistantId"], v["sessionExpirationSeconds"]] for v in views],
           ["ID", "NUMBER", "NAME", "ASSISTANT", "EXPIRY(S)"])


@numbers.command("show")
@click.argument("number_id")
def numbers_show(number_id: str) -> None:
    """Show one number as JSON."""
    from gateway.services.phone_numbers import get_phone_number
    from gateway.views import phone_number_view

    with runtime_for_command() as runtime:
        print_json(phone_number_view(get_phone_number(runtime, number_id)))


@numbers.command("update")
@click.argument("number_id")
@click.option("--number", "new_number", help="A new E.164 number.")
@number_options
def numbers_update(number_id, new_number, as_json, **options):
    """Change a number's settings."""
    from gateway.schemas import PhoneNumberUpdate, parse
    from gateway.services.phone_numbers import update_phone_number
    from gateway.views import phone_number_view

    data = _number_fields(**options)
    if new_number is not None:
        data["number"] = new_number
    with runtime_for_command() as runtime:
        updated = update_phone_number(runtime, number_id, parse(PhoneNumberUpdate, data))
    _show_number(phone_number_view(updated), as_json)


@numbers.command("remove")
@click.argument("number_id")
@click.option("--json", "as_json", is_flag=True)
def numbers_remove(number_id: str, as_json: bool) -> None:
    """Delete a number; its sessions stay readable."""
    from gateway.services.phone_numbers import delete_phone_number, get_phone_number
    from gateway.views import phone_number_view

    with runtime_for_command() as runtime:
        view = phone_number_view(get_phone_number(runtime, number_id))
        delete_phone_number(runtime, number_id)
    if as_json:
        print_json(view)
        return
    click.echo(f"removed phone number {number_id}")


# -- sessions ---------------------------------------------------------------------------


@main.group()
def sessions() -> None:
    """Conversations."""


SESSION_FILTERS = [
    click.option("--status", type=click.Choice(["active", "completed"])),
    click.option("--search", help="Text in the session's name or messages."),
    click.option("--assistant", "assistant_id", help="Assistant ID."),
    click.option("--number", "phone_number_id", help="Phone number ID."),
    click.option("--customer", "customer_number", help="Customer number (E.164 or a form that normalises to it)."),
]


def session_filters(command):
    for option in reversed(SESSION_FILTERS):
        command = option(command)
    return command


def _session_filter(**given):
    from gateway.schemas import SessionQuery, parse
    from gateway.services.session_queries import SessionFilter

    # The API's query model validates the CLI's filters too (E.164 customer numbers, lengths).
    query = parse(SessionQuery, {name: value for name, value in {
        "status": given.get("status"), "search": given.get("search"), "assistantId": given.get("assistant_id"),
        "phoneNumberId": given.get("phone_number_id"), "customerNumber": given.get("customer_number"),
    }.items() if value is not None})
    return SessionFilter(search=query.search, status=query.status, assistant_id=query.assistantId,
                         phone_number_id=query.phoneNumberId, customer_number=query.customerNumber,
                         created_before=given.get("created_before"))


@sessions.command("list")
@session_filters
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--json", "as_json", is_flag=True)
def sessions_list(limit, offset, as_json, **filters) -> None:
    """List sessions, newest first."""
    from gateway.services.session_queries import list_sessions
    from gateway.views import session_view

    with runtime_for_command() as runtime:
        rows, total = list_sessions(runtime, _session_filter(**filters), limit, offset)
    views = [session_view(s, c) for s, c in rows]
    if as_json:
        print_json({"sessions": views, "totalCount": total})
        return
    _table([[v["id"], v["status"], (v["customer"] or {}).get("number"), v["createdAt"], v["expiresAt"]] for v in views],
           ["ID", "STATUS", "CUSTOMER", "CREATED", "EXPIRES"])
    click.echo(f"{len(views)} of {total}")


@sessions.command("show")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
def sessions_show(session_id: str, as_json: bool) -> None:
    """Show a session and its transcript with delivery statuses."""
    from gateway.services.session_queries import get_session
    from gateway.views import message_view, session_view

    with runtime_for_command() as runtime:
        session, customer, messages = get_session(runtime, session_id)
    view = session_view(session, customer, messages)
    if as_json:
        print_json(view)
        return
    click.echo(f"session {view['id']}  {view['status']}  customer {(view['customer'] or {}).get('number')}  "
               f"expires {view['expiresAt']}")
    for message in messages:
        m = message_view(message)
        who = "customer " if m["role"] == "user" else "assistant"
        extra = f"{m['status']}" + (f", {m['segments']} seg {m['encoding']}" if m["segments"] else "")
        if m["errorCode"] or m["errorMessage"]:
            extra += f", error {m['errorCode'] or ''} {m['errorMessage'] or ''}".rstrip()
        click.echo(f"  {m['createdAt']}  {who}> {m['content']}  [{extra}]")


@sessions.command("end")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
def sessions_end(session_id: str, as_json: bool) -> None:
    """Complete a session now; the customer's next text starts a new one."""
    from gateway.services.session_queries import get_session
    from gateway.services.sessions import end_session
    from gateway.views import session_view

    with runtime_for_command(start_queue=True) as runtime:
        _, changed = end_session(runtime, session_id)
        session, customer, _ = get_session(runtime, session_id, with_messages=False)
    if as_json:
        print_json(session_view(session, customer))
    else:
        click.echo(f"session {session_id} {'completed' if changed else 'was already completed'}")


@sessions.command("delete")
@click.argument("session_ids", nargs=-1)
@session_filters
@click.option("--before", "created_before", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only sessions created before this date (UTC), e.g. 2026-01-31.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
def sessions_delete(session_ids, created_before, yes, as_json, **filters) -> None:
    """Delete sessions (with their messages and chats): the IDs given, or every session the filters match."""
    from datetime import timezone

    from gateway.services.session_api import delete_sessions
    from gateway.services.session_queries import matching_session_ids

    if session_ids and (created_before or any(value is not None for value in filters.values())):
        raise BadRequest("give session IDs or filters, not both")
    if not session_ids and not (created_before or any(value is not None for value in filters.values())):
        raise BadRequest("give session IDs, or filters such as --status completed --before 2026-01-31")
    with runtime_for_command() as runtime:
        if session_ids:
            ids = list(dict.fromkeys(session_ids))
        else:
            before = created_before.replace(tzinfo=timezone.utc) if created_before else None
            ids = matching_session_ids(runtime, _session_filter(**filters, created_before=before))
        if ids and not yes:
            if not click.get_text_stream("stdin").isatty():
                raise BadRequest(f"refusing to delete {len(ids)} session(s) without --yes")
            click.confirm(f"Delete {len(ids)} session(s) with their messages and chats?", abort=True, err=True)
        deleted = 0
        with progress(len(ids), "deleting sessions") as bar:
            for start in range(0, len(ids), DELETE_BATCH):
                batch = ids[start:start + DELETE_BATCH]
                deleted += delete_sessions(runtime, batch)
                bar.update(len(batch))
    if as_json:
        print_json({"deleted": deleted, "matched": len(ids)})
        return
    click.echo(f"deleted {deleted} session(s)")


DELETE_BATCH = 500  # sessions per transaction: short locks, steady progress
