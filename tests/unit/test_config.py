"""Settings read from an explicit environment (SPEC 2's variables and every tunable of SPEC 6.5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import (
    TUNABLE_BY_NAME,
    TUNABLES,
    TWILIO_API_BASE_URL,
    ConfigError,
    Settings,
    normalise_database_url,
)

# --- defaults ------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test from an empty folder so './instance' has a known meaning."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_empty_environment_gives_embedded_defaults(in_tmp):
    """With no variables at all: no database/Redis/public URL, Twilio's real API, INFO logging."""
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.public_url is None
    assert settings.twilio_account_sid is None
    assert settings.twilio_auth_token is None
    assert settings.secret_key is None
    assert settings.twilio_api_base_url == "https://api.twilio.com" == TWILIO_API_BASE_URL
    assert settings.log_level == "INFO"
    assert settings.embedded_database is True
    assert settings.uses_twilio is False


def test_default_instance_path_is_absolute_instance_under_cwd(in_tmp):
    """The instance folder defaults to ./instance, made absolute against the current directory."""
    path = Settings.from_env({}).instance_path
    assert path.is_absolute()
    assert path == (in_tmp / "instance").absolute()


def test_empty_environment_gives_every_tunable_default(in_tmp):
    """Each tunable reads as its declared default when its variable is unset."""
    settings = Settings.from_env({})
    for tunable in TUNABLES:
        assert getattr(settings, tunable.name) == tunable.default, tunable.name


def test_empty_strings_count_as_unset(in_tmp):
    """A variable set to the empty string behaves as if it were unset."""
    names = ["GATEWAY_DATABASE_URL", "GATEWAY_INSTANCE_PATH", "GATEWAY_REDIS_URL", "GATEWAY_PUBLIC_URL",
             "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "GATEWAY_SECRET_KEY",
             "GATEWAY_LOG_LEVEL", *(t.env for t in TUNABLES)]
    assert Settings.from_env({name: "" for name in names}) == Settings.from_env({})


def test_explicit_environment_ignores_os_environ(in_tmp, monkeypatch):
    """An explicit dict is the whole environment: the process's variables do not leak in."""
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://leak:6379/0")
    monkeypatch.setenv("GATEWAY_ENGINE_TRIES", "9")
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.engine_tries == 3


def test_no_environment_reads_os_environ(in_tmp, monkeypatch):
    """Without an explicit mapping the process environment is read."""
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://host:6379/0")
    monkeypatch.setenv("GATEWAY_ENGINE_TRIES", "9")
    settings = Settings.from_env()
    assert settings.redis_url == "redis://host:6379/0"
    assert settings.engine_tries == 9


# --- SPEC 2's variables ----------------------------------------------------------


@pytest.mark.parametrize(
    "variable, value, attribute, expected",
    [
        pytest.param("GATEWAY_DATABASE_URL", "postgresql://u:p@db/gw", "database_url", "postgresql://u:p@db/gw",
                     id="GATEWAY_DATABASE_URL"),
        pytest.param("GATEWAY_INSTANCE_PATH", "/srv/gateway", "instance_path", Path("/srv/gateway"),
                     id="GATEWAY_INSTANCE_PATH"),
        pytest.param("GATEWAY_REDIS_URL", "redis://r:6379/1", "redis_url", "redis://r:6379/1",
                     id="GATEWAY_REDIS_URL"),
        pytest.param("GATEWAY_PUBLIC_URL", "https://gw.example.com", "public_url", "https://gw.example.com",
                     id="GATEWAY_PUBLIC_URL"),
        pytest.param("TWILIO_ACCOUNT_SID", "AC123", "twilio_account_sid", "AC123", id="TWILIO_ACCOUNT_SID"),
        pytest.param("TWILIO_AUTH_TOKEN", "tok", "twilio_auth_token", "tok", id="TWILIO_AUTH_TOKEN"),
        pytest.param("TWILIO_API_BASE_URL", "http://127.0.0.1:9999", "twilio_api_base_url", "http://127.0.0.1:9999",
                     id="TWILIO_API_BASE_URL"),
        pytest.param("GATEWAY_SECRET_KEY", "s3cret", "secret_key", "s3cret", id="GATEWAY_SECRET_KEY"),
        pytest.param("GATEWAY_LOG_LEVEL", "DEBUG", "log_level", "DEBUG", id="GATEWAY_LOG_LEVEL"),
        pytest.param("GATEWAY_LOG_LEVEL", "warning", "log_level", "WARNING", id="GATEWAY_LOG_LEVEL lower case"),
    ],
)
def test_spec_variable_is_read(in_tmp, variable, value, attribute, expected):
    """Each variable of SPEC 2's table sets its setting."""
    assert getattr(Settings.from_env({variable: value}), attribute) == expected


def test_relative_instance_path_is_made_absolute(in_tmp):
    """A relative GATEWAY_INSTANCE_PATH is resolved against the current directory."""
    path = Settings.from_env({"GATEWAY_INSTANCE_PATH": "data/inst"}).instance_path
    assert path == in_tmp / "data" / "inst"
    assert path.is_absolute()


def test_overrides_beat_the_environment(in_tmp, tmp_path):
    """Keyword overrides to from_env replace what the environment said."""
    settings = Settings.from_env({"GATEWAY_PUBLIC_URL": "http://env"}, public_url="http://override",
                                 instance_path=tmp_path / "x")
    assert settings.public_url == "http://override"
    assert settings.instance_path == tmp_path / "x"


# --- tunables --------------------------------------------------------------------


def test_tunables_are_described_once_each():
    """Every tunable has a distinct name and GATEWAY_ env name, a numeric default and a meaning."""
    names = [t.name for t in TUNABLES]
    envs = [t.env for t in TUNABLES]
    assert len(set(names)) == len(names)
    assert len(set(envs)) == len(envs)
    for tunable in TUNABLES:
        assert tunable.env.startswith("GATEWAY_"), tunable.env
        assert tunable.env == tunable.env.upper(), tunable.env
        assert isinstance(tunable.default, (int, float)) and not isinstance(tunable.default, bool), tunable.name
        assert tunable.default >= 0, tunable.name
        assert tunable.meaning.strip(), tunable.name
    assert TUNABLE_BY_NAME == {t.name: t for t in TUNABLES}


@pytest.mark.parametrize(
    "name, default",
    [
        pytest.param("engine_timeout", 20.0, id="engine timeout 20 s"),
        pytest.param("engine_tries", 3, id="engine 3 tries"),
        pytest.param("engine_retry_delay", 1.0, id="engine first delay 1 s"),
        pytest.param("engine_retry_cap", 30.0, id="engine cap 30 s"),
        pytest.param("send_tries", 5, id="send 5 tries"),
        pytest.param("send_retry_delay", 2.0, id="send first delay 2 s"),
        pytest.param("send_retry_cap", 60.0, id="send cap 60 s"),
        pytest.param("sweep_interval", 30.0, id="sweep every 30 s"),
        pytest.param("session_expiration", 86400, id="session lifetime 1 day"),
    ],
)
def test_spec_defaults(name, default):
    """Tunables the SPEC gives numbers for have exactly those defaults."""
    assert TUNABLE_BY_NAME[name].default == default


def test_recovery_window_within_spec():
    """A dead worker's turn is taken up within 2 minutes: lease plus one sweep period fits, with room left for
    the sweep's job and then the turn's job to wait in the queue."""
    assert TUNABLE_BY_NAME["lease_seconds"].default + TUNABLE_BY_NAME["sweep_interval"].default <= 120 - 15


@pytest.mark.parametrize("tunable", TUNABLES, ids=[t.env for t in TUNABLES])
def test_each_tunable_is_read_from_its_variable(in_tmp, tunable):
    """Setting a tunable's variable changes that attribute, keeping the default's type."""
    value = type(tunable.default)(tunable.default * 2 + 1)
    settings = Settings.from_env({tunable.env: str(value)})
    assert getattr(settings, tunable.name) == value
    assert type(getattr(settings, tunable.name)) is type(tunable.default)
    others = {t.name for t in TUNABLES} - {tunable.name}
    assert all(getattr(settings, name) == TUNABLE_BY_NAME[name].default for name in others)


@pytest.mark.parametrize("tunable", [t for t in TUNABLES if t.name != "lease_seconds"], ids=lambda t: t.env)
def test_each_tunable_accepts_its_minimum_and_refuses_less(in_tmp, tunable):
    """Every tunable has a floor (no zero tries, no zero sweep period): the floor is accepted, below it refused."""
    kind = type(tunable.default)
    assert getattr(Settings.from_env({tunable.env: str(kind(tunable.minimum))}), tunable.name) == kind(tunable.minimum)
    below = tunable.minimum - (1 if kind is int else 0.001)
    with pytest.raises(ConfigError, match=tunable.env):
        Settings.from_env({tunable.env: str(kind(below)) if kind is int else repr(below)})


def test_lease_must_outlast_the_engine_and_twilio_timeouts(in_tmp):
    """A lease shorter than one engine or Twilio call would let a second worker start the same turn."""
    with pytest.raises(ConfigError, match="GATEWAY_LEASE_SECONDS"):
        Settings.from_env({"GATEWAY_LEASE_SECONDS": "20"})
    with pytest.raises(ConfigError, match="GATEWAY_LEASE_SECONDS"):
        Settings.from_env({"GATEWAY_LEASE_SECONDS": "5", "GATEWAY_ENGINE_TIMEOUT_SECONDS": "2",
                           "GATEWAY_TWILIO_TIMEOUT_SECONDS": "6"})
    settings = Settings.from_env({"GATEWAY_LEASE_SECONDS": "3", "GATEWAY_ENGINE_TIMEOUT_SECONDS": "1",
                                  "GATEWAY_TWILIO_TIMEOUT_SECONDS": "2"})
    assert settings.lease_seconds == 3


@pytest.mark.parametrize(
    "variable, raw",
    [
        pytest.param("GATEWAY_ENGINE_TRIES", "three", id="word for int"),
        pytest.param("GATEWAY_ENGINE_TRIES", "2.5", id="fraction for int"),
        pytest.param("GATEWAY_ENGINE_TRIES", "1e3", id="exponent for int"),
        pytest.param("GATEWAY_ENGINE_TRIES", " ", id="blank for int"),
        pytest.param("GATEWAY_ENGINE_TIMEOUT_SECONDS", "20s", id="unit suffix for float"),
        pytest.param("GATEWAY_ENGINE_TIMEOUT_SECONDS", "twenty", id="word for float"),
        pytest.param("GATEWAY_SWEEP_INTERVAL_SECONDS", "1,5", id="decimal comma"),
        pytest.param("GATEWAY_EMBEDDED_WORKERS", "-1", id="negative int"),
        pytest.param("GATEWAY_SEND_RETRY_CAP_SECONDS", "-0.5", id="negative float"),
        pytest.param("GATEWAY_SESSION_EXPIRATION_SECONDS", "-86400", id="negative expiration"),
    ],
)
def test_invalid_tunable_raises_config_error_naming_variable(in_tmp, variable, raw):
    """A non-number or negative value raises ConfigError whose message names the variable."""
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: raw})


def test_config_error_is_a_value_error():
    """ConfigError is a ValueError, so callers can treat it as bad input."""
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "variable, raw",
    [
        pytest.param("GATEWAY_ENGINE_TIMEOUT_SECONDS", "nan", id="nan timeout"),
        pytest.param("GATEWAY_SWEEP_INTERVAL_SECONDS", "inf", id="inf sweep period"),
    ],
)
def test_non_finite_tunable_raises_config_error(in_tmp, variable, raw):
    """'nan' and 'inf' are not usable numbers of seconds and raise ConfigError."""
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: raw})


def test_unknown_attribute_raises_attribute_error(in_tmp):
    """Names that are neither fields nor tunables raise AttributeError as usual."""
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.no_such_setting  # noqa: B018
    assert not hasattr(settings, "no_such_setting")


# --- database URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        pytest.param("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db", id="postgresql"),
        pytest.param("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db", id="postgres (Heroku style)"),
        pytest.param("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db", id="already psycopg"),
        pytest.param("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db", id="explicit other driver"),
        pytest.param("sqlite:///tmp/gw.db", "sqlite:///tmp/gw.db", id="sqlite"),
        pytest.param("sqlite://", "sqlite://", id="sqlite memory"),
        pytest.param("mysql://u@h/db", "mysql://u@h/db", id="mysql"),
    ],
)
def test_normalise_database_url(url, expected):
    """postgresql:// and postgres:// gain the psycopg 3 driver; every other URL is untouched."""
    assert normalise_database_url(url) == expected


def test_sqlalchemy_url_of_embedded_default_is_sqlite_in_instance(tmp_path):
    """Without a database URL the SQLAlchemy URL is a SQLite file inside the instance folder."""
    settings = Settings.from_env({"GATEWAY_INSTANCE_PATH": str(tmp_path / "inst")})
    url = settings.sqlalchemy_url
    assert url.startswith("sqlite:///")
    database = Path(url[len("sqlite:///"):])
    assert database.parent == tmp_path / "inst"
    assert database.suffix == ".db"


def test_sqlalchemy_url_normalises_configured_url(in_tmp):
    """A configured postgres:// URL is handed to SQLAlchemy with the psycopg driver."""
    settings = Settings.from_env({"GATEWAY_DATABASE_URL": "postgres://u@h/db"})
    assert settings.database_url == "postgres://u@h/db"
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@h/db"
    assert settings.embedded_database is False


# --- replace -------------------------------------------------------------------------


def test_replace_changes_tunables(in_tmp):
    """replace() sets tunables by name and leaves the original and the other tunables alone."""
    original = Settings.from_env({})
    changed = original.replace(engine_tries=7, sweep_interval=0.5)
    assert (changed.engine_tries, changed.sweep_interval) == (7, 0.5)
    assert changed.send_tries == original.send_tries
    assert (original.engine_tries, original.sweep_interval) == (3, 30.0)
    assert original.tunables["engine_tries"] == 3


def test_replace_changes_plain_fields(in_tmp):
    """replace() sets ordinary fields, alone or together with tunables."""
    original = Settings.from_env({})
    changed = original.replace(database_url="sqlite:///x.db", redis_url="redis://h", engine_timeout=1.0)
    assert changed.database_url == "sqlite:///x.db"
    assert changed.redis_url == "redis://h"
    assert changed.engine_timeout == 1.0
    assert original.database_url is None and original.redis_url is None
    assert changed.instance_path == original.instance_path


def test_replace_unknown_name_raises(in_tmp):
    """replace() refuses a name that is neither a field nor a tunable."""
    with pytest.raises(TypeError):
        Settings.from_env({}).replace(no_such_setting=1)


def test_settings_are_frozen(in_tmp):
    """Settings cannot be changed in place; replace() is the way."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).redis_url = "redis://h"


# --- uses_twilio -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, expected",
    [
        pytest.param({}, False, id="neither"),
        pytest.param({"TWILIO_ACCOUNT_SID": "AC1"}, False, id="sid only"),
        pytest.param({"TWILIO_AUTH_TOKEN": "tok"}, False, id="token only"),
        pytest.param({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": ""}, False, id="empty token"),
        pytest.param({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok"}, True, id="both"),
    ],
)
def test_uses_twilio_needs_sid_and_token(in_tmp, environ, expected):
    """The real Twilio sender is used only when both the account sid and auth token are set."""
    assert Settings.from_env(environ).uses_twilio is expected
