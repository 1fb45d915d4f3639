"""How a Twilio answer's Retry-After header becomes a wait (gateway/senders/twilio.py _seconds)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from gateway.senders.twilio import MAX_RETRY_AFTER, _seconds

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, wait", [
    ("2", 2.0), ("0.5", 0.5), ("-3", 0.0),  # delay-seconds; a negative wait is no wait
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),  # an HTTP date
    (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),  # a date already past
    ("1e15", MAX_RETRY_AFTER), ("99999999999", MAX_RETRY_AFTER),  # beyond what a message waits (and timedelta holds)
    (None, None), ("", None), ("inf", None), ("nan", None), ("soon", None), ("Mon, 99 Foo", None),
])
def test_retry_after_values(value, wait):
    assert _seconds(value, NOW) == wait
