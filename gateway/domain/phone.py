"""Phone numbers: normalising to E.164 and masking for logs."""

from __future__ import annotations

import functools
import re

import phonenumbers

_DIALABLE = re.compile(r"\+[\d\s().\-]+")


class InvalidNumber(ValueError):
    pass


# Parsing is the costly part of a webhook's input checks, and the same numbers come back:
# the business numbers on every text, each customer on every text of a conversation.
@functools.lru_cache(maxsize=8192)
def to_e164(raw: str | None) -> str:
    """Normalise a number given in international form to E.164, or raise InvalidNumber.

    Twilio always sends E.164; operators may type spaces, dashes or brackets.
    Numbers without a country code are refused rather than guessed. The check
    is "possible" rather than "valid" so that test ranges (555-01xx, Twilio's
    magic +1500555xxxx) pass while malformed input does not.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidNumber("a phone number is required")
    if text.startswith("00"):
        text = "+" + text[2:]
    # phonenumbers would quietly drop stray letters and read vanity letters as
    # keypad digits, turning malformed input into some other dialable number.
    if not _DIALABLE.fullmatch(text):
        raise InvalidNumber(f"{raw!r} is not an E.164 number (only digits, spaces, dashes, dots and brackets)")
    if not text.startswith("+"):
        raise InvalidNumber(f"{raw!r} is not an E.164 number (expected a leading + and country code)")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidNumber(f"{raw!r} is not an E.164 number") from None
    # IS_POSSIBLE_LOCAL_ONLY (a number missing its area code) is not enough.
    if phonenumbers.is_possible_number_with_reason(parsed) != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidNumber(f"{raw!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(number: str | None) -> str:
    """+14155550123 -> +1415*****23: enough to tell conversations apart in logs, not to dial."""
    if not number:
        return "-"
    if len(number) <= 7:
        return number[:2] + "*" * max(0, len(number) - 2)
    return number[:5] + "*" * (len(number) - 7) + number[-2:]
