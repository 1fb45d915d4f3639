"""Recognising and masking credentials in engine settings (never returned or logged in full)."""

from __future__ import annotations

# Setting names ending like these hold credentials. Matching the end, not any
# substring, keeps ordinary settings such as "maxTokens" readable.
SECRET_NAME_ENDINGS = ("apikey", "secret", "token", "password", "authorization", "credentials", "privatekey")


def is_secret_key(name: str) -> bool:
    lowered = name.lower().replace("_", "").replace("-", "")
    return lowered.endswith(SECRET_NAME_ENDINGS)


def mask_secret(value) -> str:
    text = str(value or "")
    return "****" + text[-4:] if len(text) > 8 else "****"


def masked(settings: dict | None) -> dict:
    return {key: (mask_secret(value) if is_secret_key(key) and value else value) for key, value in (settings or {}).items()}


def unmask(stored: dict, given: dict) -> dict:
    """Secrets sent back masked, as reads show them, keep their stored value."""
    merged = dict(given)
    for key, value in given.items():
        if is_secret_key(key) and key in stored and value == mask_secret(stored[key]):
            merged[key] = stored[key]
    return merged
