"""Settings, read from the environment once.

Every tunable of the gateway lives in ``TUNABLES`` below with its default, its
environment variable and a line saying what it is. Nothing here connects to
anything: ``Settings`` is a plain value the factory and the CLI pass around.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Tunable:
    name: str
    env: str
    default: float | int
    meaning: str
    minimum: float | int = 0


TUNABLES: tuple[Tunable, ...] = (
    # Engine calls (SPEC 6.6)
    Tunable("engine_timeout", "GATEWAY_ENGINE_TIMEOUT_SECONDS", 20.0, "timeout of one engine call", minimum=0.01),
    Tunable("engine_tries", "GATEWAY_ENGINE_TRIES", 3, "tries per engine turn before the fallback", minimum=1),
    Tunable("engine_retry_delay", "GATEWAY_ENGINE_RETRY_DELAY_SECONDS", 1.0, "first backoff delay between engine tries"),
    Tunable("engine_retry_cap", "GATEWAY_ENGINE_RETRY_CAP_SECONDS", 30.0, "longest backoff delay between engine tries"),
    # Sending through Twilio (SPEC 6.7)
    Tunable("send_tries", "GATEWAY_SEND_TRIES", 5, "tries per outbound message for transient send errors", minimum=1),
    Tunable("send_retry_delay", "GATEWAY_SEND_RETRY_DELAY_SECONDS", 2.0, "first backoff delay between send tries"),
    Tunable("send_retry_cap", "GATEWAY_SEND_RETRY_CAP_SECONDS", 60.0, "longest backoff delay between send tries"),
    Tunable("twilio_timeout", "GATEWAY_TWILIO_TIMEOUT_SECONDS", 10.0, "HTTP timeout of one call to Twilio's REST API", minimum=0.01),
    # Twilio's loop protection (error 14107, SPEC 6.9)
    Tunable("loop_replies", "GATEWAY_LOOP_PROTECTION_REPLIES", 30,
            "replies in a row to one customer, each close to the last, after which the next one waits", minimum=1),
    Tunable("loop_window", "GATEWAY_LOOP_PROTECTION_SECONDS", 30.0,
            "a reply this soon after the last counts as 'in a row'; also how long the next one then waits"),
    # Lifecycle events (SPEC 6.11)
    Tunable("event_tries", "GATEWAY_EVENT_TRIES", 8, "delivery tries per event before it is marked failed", minimum=1),
    Tunable("event_retry_delay", "GATEWAY_EVENT_RETRY_DELAY_SECONDS", 2.0, "first backoff delay between event tries"),
    Tunable("event_retry_cap", "GATEWAY_EVENT_RETRY_CAP_SECONDS", 300.0, "longest backoff delay between event tries"),
    Tunable("event_timeout", "GATEWAY_EVENT_TIMEOUT_SECONDS", 10.0, "timeout of one event delivery", minimum=0.01),
    # Recovery (SPEC 6.5)
    Tunable("sweep_interval", "GATEWAY_SWEEP_INTERVAL_SECONDS", 30.0, "period of the expiry and recovery sweep", minimum=0.1),
    # 75 s: with one sweep period, a dead worker's turn is taken up within 105 s, leaving room under
    # SPEC 6.5's 2 minutes for the sweep's job and the turn's job to wait in the queue.
    Tunable("lease_seconds", "GATEWAY_LEASE_SECONDS", 75.0,
            "how long a worker owns a session's turn or send lane without renewing it; a dead worker's work is taken up after this", minimum=0.1),
    Tunable("recovery_grace", "GATEWAY_RECOVERY_GRACE_SECONDS", 5.0,
            "age after which the sweep re-enqueues work nobody holds (covers jobs lost with Redis)"),
    # Sessions (SPEC 3, 6.2)
    Tunable("session_expiration", "GATEWAY_SESSION_EXPIRATION_SECONDS", 86400, "default session lifetime", minimum=60),
    # Web
    Tunable("inbound_batch", "GATEWAY_INBOUND_BATCH_MAX", 32,
            "most webhooks a web process stores in one transaction when they arrive together (group commit)", minimum=1),
    Tunable("max_request_bytes", "GATEWAY_MAX_REQUEST_BYTES", 256 * 1024, "largest request body accepted", minimum=1024),
    Tunable("embedded_workers", "GATEWAY_EMBEDDED_WORKERS", 4, "worker threads of the embedded in-process queue", minimum=1),
)

TUNABLE_BY_NAME = {t.name: t for t in TUNABLES}

DEFAULT_PORT = 5000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
TWILIO_API_BASE_URL = "https://api.twilio.com"


class ConfigError(ValueError):
    """A setting has a value the gateway cannot use."""


def _tunable_defaults() -> dict[str, Any]:
    return {t.name: t.default for t in TUNABLES}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    instance_path: Path = field(default_factory=lambda: Path.cwd() / "instance")
    redis_url: str | None = None
    public_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base_url: str = TWILIO_API_BASE_URL
    secret_key: str | None = None
    log_level: str = "INFO"
    tunables: Mapping[str, Any] = field(default_factory=_tunable_defaults)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(
            database_url=env.get("GATEWAY_DATABASE_URL") or None,
            instance_path=Path(env.get("GATEWAY_INSTANCE_PATH") or Path.cwd() / "instance").absolute(),
            redis_url=env.get("GATEWAY_REDIS_URL") or None,
            public_url=env.get("GATEWAY_PUBLIC_URL") or None,
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_api_base_url=env.get("TWILIO_API_BASE_URL") or TWILIO_API_BASE_URL,
            secret_key=env.get("GATEWAY_SECRET_KEY") or None,
            log_level=(env.get("GATEWAY_LOG_LEVEL") or "INFO").upper(),
            tunables=_read_tunables(env),
        )
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse settings the gateway cannot run with, naming the variable, before anything connects."""
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.database_url is not None:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(self.sqlalchemy_url)
            except ArgumentError:
                raise ConfigError("GATEWAY_DATABASE_URL is not a database URL (e.g. postgresql://user@host/db)") from None
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError("GATEWAY_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("GATEWAY_PUBLIC_URL must start with http:// or https://")
        if not self.twilio_api_base_url.startswith(("http://", "https://")):
            raise ConfigError("TWILIO_API_BASE_URL must start with http:// or https://")
        # A worker renews its lease before each engine try and each send; if one
        # call could outlast the lease, a second worker would start the same turn.
        longest_call = max(self.engine_timeout, self.twilio_timeout)
        if self.lease_seconds <= longest_call:
            raise ConfigError(
                f"GATEWAY_LEASE_SECONDS ({self.lease_seconds:g}) must exceed the engine and Twilio timeouts "
                f"({longest_call:g})"
            )

    def replace(self, **changes: Any) -> "Settings":
        tunables = dict(self.tunables)
        for name in list(changes):
            if name in TUNABLE_BY_NAME:
                tunables[name] = changes.pop(name)
        return dataclasses.replace(self, tunables=tunables, **changes)

    def __getattr__(self, name: str) -> Any:
        # Tunables read like plain attributes: settings.engine_timeout.
        tunables = self.__dict__.get("tunables")
        if tunables is not None and name in tunables:
            return tunables[name]
        raise AttributeError(name)

    @property
    def uses_twilio(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is None:
            return f"sqlite:///{self.instance_path / 'gateway.db'}"
        return normalise_database_url(self.database_url)


def normalise_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _read_tunables(env: Mapping[str, str]) -> dict[str, Any]:
    values = _tunable_defaults()
    for tunable in TUNABLES:
        raw = env.get(tunable.env)
        if raw is None or raw == "":
            continue
        kind = type(tunable.default)
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{tunable.env} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or value < tunable.minimum:
            raise ConfigError(f"{tunable.env} must be a number of at least {tunable.minimum:g}, got {raw!r}")
        values[tunable.name] = value
    return values
