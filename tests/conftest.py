"""Fixtures that build on each other: settings -> runtime -> app -> client, plus real servers.

Databases: each test gets its own SQLite file (copied from one migrated
template, so migrations run once per session) or, when it asks for
PostgreSQL, a database of this test run's own, truncated between tests.
Redis: a redis-server of our own on a free port. Twilio: a fake HTTP server
on 127.0.0.1 that the real twilio client talks to.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from gateway import create_app
from gateway.bootstrap import build_runtime
from gateway.config import Settings
from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.db.models import Base
from tests.support.clock import ManualClock
from tests.support.fake_twilio import FakeTwilio
from tests.support.postgres import scratch_engine
from tests.support.redis_server import RedisServer

PUBLIC_URL = "http://gw.test"
IN_CI = os.environ.get("CI", "").lower() == "true"

for name in ("TWILIO_EDGE", "TWILIO_REGION"):
    os.environ.pop(name, None)


def need(reason: str):
    """Skip locally when a service is missing; in CI the same absence is a failure."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


# -- databases ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def instance_path(tmp_path, sqlite_template) -> Path:
    folder = tmp_path / "instance"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "gateway.db")
    return folder


@pytest.fixture(scope="session")
def postgres_database():
    with scratch_engine(need) as (database, engine):
        upgrade(engine)
        yield database, engine


@pytest.fixture
def postgres_url(postgres_database) -> str:
    """The run's PostgreSQL database, emptied for this test."""
    database, engine = postgres_database
    # DELETE, children first: the few rows a test leaves take about 2 ms to remove, where TRUNCATE,
    # which gives every table new files, took about 40 ms, before each of some 1,100 tests.
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    return database.url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, instance_path) -> str | None:
    """Runs the test on each database: None is the embedded SQLite default."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


# -- Redis -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    try:
        server = RedisServer().start()
    except FileNotFoundError as error:
        need(str(error))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


# -- the gateway -------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(instance_path) -> Settings:
    # An empty environment: nothing from the developer's shell leaks in.
    return Settings.from_env({}, instance_path=instance_path, public_url=PUBLIC_URL)


@pytest.fixture
def make_runtime():
    built = []

    def make(settings: Settings, **parts):
        runtime = build_runtime(settings, migrate=False, **parts)
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


@pytest.fixture
def runtime(make_runtime, settings, database_url_or_default):
    return make_runtime(settings.replace(database_url=database_url_or_default))


@pytest.fixture
def database_url_or_default() -> str | None:
    """Overridden by tests that run on PostgreSQL too; the default is the embedded SQLite file."""
    return None


@pytest.fixture
def app(runtime):
    return create_app(runtime=runtime)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api_key(runtime) -> str:
    from gateway.services.api_keys import create_key

    return create_key(runtime, "tests")[1]


@pytest.fixture
def auth(api_key) -> dict:
    return {"x-api-key": api_key}


@pytest.fixture
def assistant(runtime):
    from gateway.schemas import AssistantCreate
    from gateway.services.assistants import create_assistant

    return create_assistant(runtime, AssistantCreate(name="Test assistant", engine={"provider": "echo"}))


BUSINESS = "+15550100000"
CUSTOMER = "+14155550123"


@pytest.fixture
def number(runtime, assistant):
    from gateway.schemas import PhoneNumberCreate
    from gateway.services.phone_numbers import create_phone_number

    return create_phone_number(runtime, PhoneNumberCreate(number=BUSINESS, assistantId=assistant.id, messagesPerSecond=1000))


def sign(token: str, url: str, params: dict) -> str:
    return RequestValidator(token).compute_signature(url, params)


def inbound_params(body: str = "hello", sid: str | None = None, from_: str = CUSTOMER, to: str = BUSINESS, **extra) -> dict:
    sid = sid or "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": from_, "To": to, "Body": body,
              "NumMedia": "0", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


@pytest.fixture
def webhook(client, runtime):
    """POST a correctly signed inbound webhook through the test client."""

    def post(body: str = "hello", *, path: str = "/twilio/sms", signature: str | None = None, **params):
        data = inbound_params(body, **params)
        if signature is None:
            signature = sign(runtime.auth_token, PUBLIC_URL + path, data)
        return client.post(path, data=data, headers={"X-Twilio-Signature": signature})

    return post


@pytest.fixture
def fake_twilio():
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_engine():
    from tests.support.fake_engine import FakeEngine

    engine = FakeEngine().start()
    yield engine
    engine.stop()


# Fast retries and short leases so fault tests finish in seconds, not minutes.
FAST = dict(
    engine_timeout=1.0, engine_retry_delay=0.05, engine_retry_cap=0.4,
    send_retry_delay=0.05, send_retry_cap=0.4, twilio_timeout=2.0, lease_seconds=3.0,
)


@pytest.fixture
def live_gateway(settings, make_runtime, fake_twilio, database_url_or_default):
    """Factory: an embedded gateway on a real port, sending through the real twilio client to the fake Twilio.

    ``live_gateway(**tunables)`` returns a LiveGateway whose ``phone`` texts it
    over HTTP; status callbacks from the fake Twilio reach it for real.
    """
    from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
    from tests.support.live import LiveGateway

    started = []

    def start(**tunables):
        gateway = LiveGateway.start(
            settings.replace(
                database_url=database_url_or_default,
                twilio_account_sid=ACCOUNT_SID,
                twilio_auth_token=AUTH_TOKEN,
                twilio_api_base_url=fake_twilio.base_url,
                **{**FAST, **tunables},
            ),
            make_runtime,
        )
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
