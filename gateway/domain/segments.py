"""SMS encoding, segment counting and body splitting (GSM 03.38 / Twilio rules).

Carriers bill per *segment*, not per message, so the gateway needs to know
how a body will be encoded and how many concatenated parts it becomes:

* GSM-7 is used when every character is in the GSM 03.38 basic table or its
  extension table; anything else forces UCS-2 for the *whole* message.
* GSM-7: 160 septets fit in a single message, but once concatenated each part
  loses 7 septets to the User Data Header, leaving 153.  Extension characters
  are sent as ESC + char (2 septets) and the pair cannot straddle two parts.
* UCS-2: 70 UTF-16 code units single, 67 per concatenated part.  Characters
  outside the BMP (most emoji) are a surrogate pair that cannot be split.

Separately, Twilio rejects bodies longer than 1600 characters, so
``split_body`` breaks long text into several messages at natural boundaries.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

MAX_BODY_CHARS = 1600

# Capacity of one message, single vs. each part of a concatenated message.
_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

_ESC = "\x1b"

# GSM 03.38 default alphabet, all 128 positions in code order (16 per line).
# Position 0x1B is ESC, the escape into the extension table: it is not a
# character a message body can contain, so it is excluded from the set below.
# Note 0x09 is CAPITAL C-cedilla (Ç); lowercase ç is NOT in the alphabet.
GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10-0x1F (Greek capitals; 0x1B = ESC)
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F (0x24 is ¤, not $)
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)

# Extension table: sent as ESC + code, so each costs 2 septets.
# Form feed (0x0A), ^ (0x14), { } (0x28/0x29), \ (0x2F), [ ~ ] (0x3C-0x3E),
# | (0x40) and € (0x65).
GSM7_EXTENSION_TABLE = "\f^{}\\[~]|€"

_GSM7_BASIC = frozenset(GSM7_BASIC_TABLE) - {_ESC}
_GSM7_EXTENSION = frozenset(GSM7_EXTENSION_TABLE)


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str
    segments: int


def encoding_of(text: str) -> str:
    """Return GSM7 if every character is GSM-encodable, else UCS2."""
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text):
        return GSM7
    return UCS2


def count_segments(text: str) -> int:
    """Number of segments Twilio bills for ``text`` (an empty body is 1)."""
    return describe(text).segments


def describe(text: str) -> SegmentInfo:
    """Encoding and billable segment count of ``text``."""
    encoding = encoding_of(text)
    if encoding == GSM7:
        costs = [_septets(ch) for ch in text]
        segments = _count_parts(costs, _GSM7_SINGLE, _GSM7_PART)
    else:
        costs = [_utf16_units(ch) for ch in text]
        segments = _count_parts(costs, _UCS2_SINGLE, _UCS2_PART)
    return SegmentInfo(encoding=encoding, segments=segments)


def _septets(ch: str) -> int:
    return 2 if ch in _GSM7_EXTENSION else 1


def _utf16_units(ch: str) -> int:
    # Python str holds code points; astral ones become a surrogate pair.
    return 2 if ord(ch) > 0xFFFF else 1


def _count_parts(costs: list[int], single: int, per_part: int) -> int:
    """Pack per-character costs into parts without splitting any character.

    A plain ceil(total / per_part) is wrong: a 2-unit character that would
    straddle a boundary is pushed whole into the next part, leaving a gap.
    """
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts += 1
            used = 0
        used += cost
    return parts


# A whitespace run is a possible break point; it ends a sentence if it
# follows terminal punctuation or contains a newline.
_WHITESPACE_RUN = re.compile(r"\s+")
_SENTENCE_END = ".!?"


def split_body(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters.

    Breaks preferably at a sentence end, else at whitespace, else hard-cuts.
    Whitespace at each joint is dropped; nothing else is added or removed.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit:
        return [text]

    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = _find_cut(rest, limit)
        head = rest[:cut].rstrip()
        if head:  # a whitespace-only chunk carries no content: drop it
            parts.append(head)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _find_cut(text: str, limit: int) -> int:
    """Index at which to end the next part of ``text`` (1 <= index <= limit).

    Takes the last sentence break in the window, then the last word break,
    but only if it lies in the second half of the window: an earlier break
    would leave a tiny part, so we step down to the next-worse option.
    """
    sentence_cut = word_cut = None
    # endpos=limit+1 so whitespace starting exactly at `limit` is considered
    # (the part before it is then exactly `limit` characters long).
    for run in _WHITESPACE_RUN.finditer(text, 0, limit + 1):
        start = run.start()
        if start == 0:  # leading whitespace: breaking here gives an empty part
            continue
        word_cut = start
        if _is_sentence_break(text, start):
            sentence_cut = start

    for cut in (sentence_cut, word_cut):
        if cut is not None and 2 * cut >= limit:
            return cut
    return _hard_cut(text, limit)


def _hard_cut(text: str, limit: int) -> int:
    """``limit``, moved back to the start of the character the reader sees there.

    One visible character can be several code points: a letter and its combining accent, an emoji and
    its skin tone or variation selector, emoji joined by ZWJ, a flag's two regional indicators. Cut
    between them, the two parts show a bare accent or swatch and a wrong or broken emoji. A cluster
    longer than a whole part is cut all the same: there is no better place.
    """
    cut = limit
    while cut > 0 and _inside_cluster(text, cut):
        cut -= 1
    return cut or limit


_ZWJ = "\u200d"


def _inside_cluster(text: str, index: int) -> bool:
    """Whether a cut before ``text[index]`` would split what is shown as one character."""
    before, after = text[index - 1], text[index]
    if before == _ZWJ or after == _ZWJ or _extends(after):
        return True
    if _regional_indicator(before) and _regional_indicator(after):
        # Flags are pairs: inside one when an odd number of indicators runs up to the cut.
        run = 0
        while index - 1 - run >= 0 and _regional_indicator(text[index - 1 - run]):
            run += 1
        return run % 2 == 1
    return False


def _extends(ch: str) -> bool:
    """A code point that belongs to the character before it."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")  # combining marks
        or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_sentence_break(text: str, start: int) -> bool:
    """Whether the whitespace run beginning at ``start`` ends a sentence."""
    if text[start - 1] in _SENTENCE_END:
        return True
    run = _WHITESPACE_RUN.match(text, start)
    return run is not None and "\n" in run.group()
