"""API keys: created once and shown once, stored as SHA-256, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from gateway.db.models import ApiKey, new_id
from gateway.errors import InvalidField, NotFound

if TYPE_CHECKING:
    from gateway.bootstrap import Runtime

PREFIX = "gk_"
# last_used_at is informative; writing it on every request would make every
# read a write, so it is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(runtime: "Runtime", name: str) -> tuple[ApiKey, str]:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidField("name", "an API key needs a name of 1 to 200 characters")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    now = runtime.clock.now()
    key = ApiKey(id=new_id(), name=name, key_hash=_hash(plaintext), prefix=plaintext[:8], created_at=now)
    with runtime.db.begin() as tx:
        tx.add(key)
    return key, plaintext


def list_keys(runtime: "Runtime") -> list[ApiKey]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(runtime: "Runtime", key_id: str) -> ApiKey:
    with runtime.db.begin() as tx:
        key = tx.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no API key with id {key_id!r}")
        if key.revoked_at is None:
            key.revoked_at = runtime.clock.now()
    return key


def authenticate(runtime: "Runtime", presented: str | None) -> ApiKey | None:
    if not presented or len(presented) > 200:
        return None
    now = runtime.clock.now()
    with runtime.db.begin() as tx:
        key = tx.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(presented)))
        if key is None or key.revoked_at is not None:
            return None
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            tx.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return key
