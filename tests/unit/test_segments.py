import random
import re

import pytest

from gateway.domain.segments import (
    GSM7,
    GSM7_BASIC_TABLE,
    GSM7_EXTENSION_TABLE,
    MAX_BODY_CHARS,
    UCS2,
    SegmentInfo,
    count_segments,
    describe,
    encoding_of,
    split_body,
)

EMOJI = "\U0001F600"  # 😀, outside the BMP: a UTF-16 surrogate pair


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _assert_reassembles(parts: list[str], text: str) -> None:
    """Check text == parts in order, separated only by (dropped) whitespace.

    A plain normalised comparison of " ".join(parts) cannot hold across a hard
    cut (it inserts a space inside a word), so allow empty joints as well;
    where every joint was whitespace this is exactly the normalised equality.
    """
    pattern = r"\s*" + r"\s*".join(re.escape(p) for p in parts) + r"\s*"
    assert re.fullmatch(pattern, text), "parts do not reassemble to the text"


# --- the character tables -------------------------------------------------


def test_basic_table_has_128_positions():
    """The GSM 03.38 basic table lists exactly 128 distinct positions."""
    assert len(GSM7_BASIC_TABLE) == 128
    assert len(set(GSM7_BASIC_TABLE)) == 128


@pytest.mark.parametrize(
    "code, char",
    [(0x00, "@"), (0x02, "$"), (0x09, "Ç"), (0x0A, "\n"), (0x1B, "\x1b"),
     (0x24, "¤"), (0x40, "¡"), (0x5F, "§"), (0x60, "¿"), (0x7F, "à")],
)
def test_basic_table_positions(code, char):
    """Landmark characters sit at their GSM 03.38 code points."""
    assert GSM7_BASIC_TABLE[code] == char


def test_extension_table_contents():
    """The extension table is exactly form feed, ^ { } \\ [ ~ ] | and €."""
    assert set(GSM7_EXTENSION_TABLE) == set("\f^{}\\[~]|€")


# --- encoding_of ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "Hello, world!", "é", "ñ", "ü", "Ä", "ß", "£", "¥", "è", "Ç", "à",
     "ΔΦΓΛΩΠΨΣΘΞ", "¡¿§¤", "line1\nline2\r", "{[~]}|^\\€\f"],
)
def test_gsm_characters_encode_as_gsm7(text):
    """Text made only of basic or extension table characters is GSM-7."""
    assert encoding_of(text) == GSM7


@pytest.mark.parametrize(
    "text",
    ["ç", "á", "Ò", "ê", "\u201ccurly\u201d", "it\u2019s", "你好", EMOJI,
     "plain text then one emoji " + EMOJI, "\x1b", "\t"],
)
def test_non_gsm_characters_force_ucs2(text):
    """Any character outside both GSM tables (incl. lowercase ç, ESC) forces UCS-2."""
    assert encoding_of(text) == UCS2


# --- count_segments: GSM-7 --------------------------------------------------


def test_empty_text_is_one_segment():
    """An empty body is still billed as one segment."""
    assert count_segments("") == 1


@pytest.mark.parametrize("length, segments", [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)])
def test_ascii_segment_thresholds(length, segments):
    """GSM-7 fits 160 septets single, 153 per concatenated part."""
    assert count_segments("a" * length) == segments


@pytest.mark.parametrize("count, segments", [(80, 1), (81, 2)])
def test_extension_characters_count_double(count, segments):
    """Each extension character costs 2 septets (80 '{' = 160 septets)."""
    assert count_segments("{" * count) == segments


def test_extension_char_at_single_limit_stays_single():
    """152 'a' + '{' + 'b' is 155 septets and still fits one message."""
    assert count_segments("a" * 152 + "{" + "b") == 1


def test_extension_char_is_not_split_across_parts():
    """A '{' straddling septets 153-154 moves to part 2, adding a third part."""
    # 306 septets: naive ceil(306/153) = 2, but part 1 can only hold 152.
    text = "a" * 152 + "{" + "b" * 152
    assert count_segments(text) == 3


def test_all_extension_characters_pack_76_per_part():
    """Only 76 two-septet characters fit in a 153-septet part."""
    assert count_segments("€" * 152) == 2
    assert count_segments("€" * 153) == 3


# --- count_segments: UCS-2 --------------------------------------------------


@pytest.mark.parametrize("length, segments", [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_segment_thresholds(length, segments):
    """UCS-2 fits 70 code units single, 67 per concatenated part."""
    assert count_segments("你" * length) == segments


def test_emoji_counts_two_code_units():
    """An astral emoji is 2 UTF-16 units: 35 fit one message, 36 do not."""
    assert count_segments(EMOJI * 35) == 1
    assert count_segments(EMOJI * 36) == 2


def test_surrogate_pair_is_not_split_across_parts():
    """An emoji straddling units 67-68 moves whole to the next part."""
    # 134 units: naive ceil(134/67) = 2, but part 1 can only hold 66.
    text = "a" * 66 + EMOJI + "a" * 66
    assert count_segments(text) == 3


def test_all_emoji_pack_33_per_part():
    """Only 33 surrogate pairs fit in a 67-unit part."""
    assert count_segments(EMOJI * 66) == 2
    assert count_segments(EMOJI * 67) == 3


def test_single_non_gsm_char_switches_whole_message_to_ucs2():
    """100 ASCII chars fit one GSM-7 message but need 2 once a 'ç' is added."""
    assert count_segments("a" * 100) == 1
    assert count_segments("a" * 99 + "ç") == 2


# --- describe ---------------------------------------------------------------


def test_describe_returns_encoding_and_segments():
    """describe() bundles encoding and segment count in a frozen SegmentInfo."""
    assert describe("a" * 161) == SegmentInfo(encoding=GSM7, segments=2)
    assert describe(EMOJI) == SegmentInfo(encoding=UCS2, segments=1)
    with pytest.raises(AttributeError):
        describe("x").segments = 5


# --- split_body -------------------------------------------------------------


def test_max_body_chars_is_twilio_limit():
    """The default split limit is Twilio's 1600-character body limit."""
    assert MAX_BODY_CHARS == 1600


@pytest.mark.parametrize("text", ["", "short", "  padded  ", "x" * MAX_BODY_CHARS])
def test_short_text_is_unchanged(text):
    """Text within the limit comes back as a single, untouched part."""
    assert split_body(text) == [text]


def test_sentences_split_at_sentence_ends():
    """4000 chars of sentences split into <=1600-char parts ending at sentence ends."""
    sentence = "This is sentence number {:03d}, with a few words in it. "
    text = "".join(sentence.format(i) for i in range(80))[:4000].rstrip()
    parts = split_body(text)
    assert len(parts) == 3
    assert all(len(p) <= MAX_BODY_CHARS for p in parts)
    assert all(p.endswith(".") for p in parts[:-1])
    assert _normalise(" ".join(parts)) == _normalise(text)


def test_prefers_last_sentence_end_in_window():
    """The chosen sentence break is the last one that fits, not an earlier one."""
    text = "Aaaa. Bbbb. Cccc dddd eeee"
    assert split_body(text, limit=20) == ["Aaaa. Bbbb.", "Cccc dddd eeee"]


def test_newline_counts_as_sentence_end():
    """A newline is a sentence boundary even without punctuation."""
    text = "first line here\nsecond line words more words"
    assert split_body(text, limit=30)[0] == "first line here"


def test_falls_back_to_word_when_sentence_end_too_early():
    """A sentence end in the first half of the window is skipped for a later word break."""
    text = "Hi. " + "word " * 10
    assert split_body(text, limit=30) == ["Hi. word word word word word", "word word word word word "]


def test_text_without_punctuation_splits_at_spaces():
    """Unpunctuated text breaks only between words."""
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 12))) for _ in range(800)]
    text = " ".join(words)
    parts = split_body(text)
    assert len(parts) > 1
    assert all(0 < len(p) <= MAX_BODY_CHARS for p in parts)
    assert [w for p in parts for w in p.split(" ")] == words


def test_single_long_word_is_hard_cut():
    """One 3500-char word is hard-cut into 1600/1600/300."""
    parts = split_body("x" * 3500)
    assert [len(p) for p in parts] == [1600, 1600, 300]


def test_hard_cut_when_word_break_too_early():
    """A word break in the first half of the window is skipped for a hard cut."""
    parts = split_body("ab " + "y" * 50, limit=20)
    assert parts == ["ab " + "y" * 17, "y" * 20, "y" * 13]


def test_whitespace_inside_parts_is_kept():
    """Only joint whitespace is dropped; leading/trailing text whitespace survives."""
    text = "  lead " + "word " * 8 + "  "
    parts = split_body(text, limit=30)
    assert parts[0].startswith("  lead")
    assert parts[-1].endswith("  ")
    assert all(not p[-1].isspace() for p in parts[:-1])
    assert all(not p[0].isspace() for p in parts[1:])


def test_emoji_are_never_split():
    """Splitting a run of emoji yields whole code points only."""
    parts = split_body(EMOJI * 45, limit=20)
    assert [len(p) for p in parts] == [20, 20, 5]
    assert "".join(parts) == EMOJI * 45


def test_invalid_limit_rejected():
    """A limit below 1 cannot make progress and is rejected."""
    with pytest.raises(ValueError):
        split_body("abc", limit=0)


def _random_text(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randint(1, 400)):
        roll = rng.random()
        if roll < 0.03:
            word = "z" * rng.randint(50, 400)  # longer than small limits
        elif roll < 0.10:
            word = EMOJI * rng.randint(1, 5)
        else:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzé你") for _ in range(rng.randint(1, 10)))
        pieces.append(word + rng.choice(["", "", ".", "!", "?", ","]))
        pieces.append(rng.choice([" ", " ", " ", "  ", "\n", "\n\n", " \t"]))
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(300))
def test_split_body_properties_on_random_text(seed):
    """Random texts split into non-empty parts within the limit that reassemble to the original."""
    rng = random.Random(seed)
    text = _random_text(rng)
    limit = rng.choice([10, 37, 100, 250, MAX_BODY_CHARS])
    parts = split_body(text, limit=limit)
    assert parts
    assert all(0 < len(p) <= limit for p in parts)
    if len(text) > limit:
        assert all(p.strip() for p in parts)
    assert re.sub(r"\s+", "", "".join(parts)) == re.sub(r"\s+", "", text)
    _assert_reassembles(parts, text)


@pytest.mark.parametrize("seed", range(200))
def test_split_body_normalised_reassembly_without_hard_cuts(seed):
    """With frequent word breaks (no hard cuts), " ".join(parts) equals the text modulo whitespace."""
    rng = random.Random(10_000 + seed)
    words = []
    for _ in range(rng.randint(50, 900)):
        word = rng.choice(["ab", "cde", "fghi", "é你", EMOJI, EMOJI * 2, "Ok"])
        words.append(word + rng.choice(["", "", ".", "!", "?"]))
    text = "".join(w + rng.choice([" ", " ", "\n", "  ", " \n "]) for w in words)
    # Run starts are at most 8 chars apart, so the second half of any window
    # of >= 40 always holds a word break: no hard cut can happen.
    limit = rng.choice([40, 160, MAX_BODY_CHARS])
    parts = split_body(text, limit=limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert _normalise(" ".join(parts)) == _normalise(text)
