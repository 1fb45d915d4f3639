"""Carrier keywords (SPEC 6.9): opt-out, opt-in and help, matched on the whole text."""

from __future__ import annotations

import enum
import re


class Keyword(enum.Enum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# Twilio's Advanced Opt-Out names the keyword class it already answered.
OPT_OUT_TYPES = {"STOP": Keyword.OPT_OUT, "START": Keyword.OPT_IN, "HELP": Keyword.HELP}

_EDGES = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def classify(text: str | None) -> Keyword | None:
    """The keyword a whole text is, ignoring case and surrounding spaces and punctuation."""
    word = _EDGES.sub("", (text or "").strip()).upper()
    if word in OPT_OUT_WORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    if word in HELP_WORDS:
        return Keyword.HELP
    return None
