"""Phone numbers (E.164 normalising, masking for logs) and carrier keywords (SPEC 6.9, 6.12)."""

from __future__ import annotations

import pytest

from gateway.domain.keywords import HELP_WORDS, OPT_IN_WORDS, OPT_OUT_WORDS, Keyword, classify
from gateway.domain.phone import InvalidNumber, mask, to_e164

# --- to_e164: accepted forms ------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("+14155550123", "+14155550123", id="already E.164"),
        pytest.param("  +14155550123  ", "+14155550123", id="surrounding spaces"),
        pytest.param("+1 415 555 0123", "+14155550123", id="spaces"),
        pytest.param("+1-415-555-0123", "+14155550123", id="dashes"),
        pytest.param("+1 (415) 555-0123", "+14155550123", id="brackets and dashes"),
        pytest.param("+1 415.555.0123", "+14155550123", id="dots"),
        pytest.param("+44 20 7946 0958", "+442079460958", id="UK spaced"),
        pytest.param("+44 (0) 20 7946 0958", "+442079460958", id="UK bracketed trunk zero"),
        pytest.param("0014155550123", "+14155550123", id="00 international prefix"),
        pytest.param("00 44 20 7946 0958", "+442079460958", id="00 prefix with spaces"),
        pytest.param("+15005550006", "+15005550006", id="Twilio magic test number"),
        pytest.param("+15550100000", "+15550100000", id="555-01xx fictional range"),
    ],
)
def test_to_e164_normalises_international_forms(raw, expected):
    """Numbers typed with a country code in any common layout normalise to bare E.164."""
    assert to_e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="None"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("4155550123", id="missing + (national only)"),
        pytest.param("14155550123", id="missing + with country code"),
        pytest.param("(415) 555-0123", id="national with brackets"),
        pytest.param("abc", id="letters only"),
        pytest.param("+abc", id="plus then letters"),
        pytest.param("+", id="plus only"),
        pytest.param("00", id="00 only"),
        pytest.param("+1415", id="too short"),
        pytest.param("+441234", id="too short UK"),
        pytest.param("+1415555012345678", id="too long"),
        pytest.param("+15550100", id="local-only number missing area code"),
        pytest.param("tel:+14155550123", id="tel URI"),
    ],
)
def test_to_e164_rejects_what_is_not_an_international_number(raw):
    """Missing country codes, wrong lengths, local-only numbers and blanks raise InvalidNumber."""
    with pytest.raises(InvalidNumber):
        to_e164(raw)


def test_invalid_number_is_a_value_error():
    """InvalidNumber is a ValueError, so validators treat it as bad input."""
    assert issubclass(InvalidNumber, ValueError)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("+14155550123a", id="trailing letter"),
        pytest.param("+1415555a0123", id="letter inside"),
        pytest.param("+14155550123x7", id="x extension"),
        pytest.param("+1 415 555 0123 ext 5", id="ext extension"),
        pytest.param("+1 415 abc 0123", id="letters as keypad digits"),
        pytest.param("+1-800-FLOWERS", id="vanity number"),
    ],
)
def test_to_e164_rejects_letters(raw):
    """Any letter in a phone number is refused rather than dropped or read as a keypad digit."""
    with pytest.raises(InvalidNumber):
        to_e164(raw)


# --- mask -------------------------------------------------------------------


@pytest.mark.parametrize(
    "number, expected",
    [
        pytest.param("+14155550123", "+1415*****23", id="US"),
        pytest.param("+442079460958", "+4420******58", id="UK"),
        pytest.param("+6831234", "+6831*34", id="shortest real E.164"),
        pytest.param(None, "-", id="None"),
        pytest.param("", "-", id="empty"),
        pytest.param("+12345", "+1****", id="six characters"),
        pytest.param("+123", "+1**", id="four characters"),
        pytest.param("+1", "+1", id="two characters"),
    ],
)
def test_mask(number, expected):
    """Masking keeps a country-code-ish prefix and the last two digits, stars the rest."""
    assert mask(number) == expected


@pytest.mark.parametrize("number", ["+14155550123", "+442079460958", "+6831234", "+4930123456"])
def test_mask_keeps_length_prefix_and_last_two(number):
    """A masked real number has the same length, its first 5 and last 2 characters."""
    masked = mask(number)
    assert len(masked) == len(number)
    assert masked[:5] == number[:5]
    assert masked[-2:] == number[-2:]
    assert set(masked[5:-2]) == {"*"}


@pytest.mark.parametrize(
    "number",
    [pytest.param("+12", id="3"), pytest.param("+123", id="4"), pytest.param("+1234", id="5"),
     pytest.param("+12345", id="6"), pytest.param("+1234567", id="8"), pytest.param("+14155550123", id="12")],
)
def test_mask_hides_at_least_one_character(number):
    """A masked string of more than two characters never equals the input."""
    assert mask(number) != number
    assert "*" in mask(number)


def test_mask_hides_a_seven_character_input():
    """A 7-character input is masked too, not returned whole."""
    assert mask("+123456") != "+123456"


# --- classify: keywords -----------------------------------------------------


def test_keyword_word_lists_match_spec():
    """The word lists are exactly SPEC 6.9's opt-out, opt-in and help words."""
    assert OPT_OUT_WORDS == {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
    assert OPT_IN_WORDS == {"START", "UNSTOP", "YES"}
    assert HELP_WORDS == {"HELP", "INFO"}


SPEC_KEYWORDS = [
    *[(word, Keyword.OPT_OUT) for word in ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")],
    *[(word, Keyword.OPT_IN) for word in ("START", "UNSTOP", "YES")],
    *[(word, Keyword.HELP) for word in ("HELP", "INFO")],
]

CASINGS = {"upper": str.upper, "lower": str.lower, "title": str.title, "swapped": lambda w: w[0].lower() + w[1:]}


@pytest.mark.parametrize("casing", list(CASINGS))
@pytest.mark.parametrize("word, keyword", SPEC_KEYWORDS, ids=[w for w, _ in SPEC_KEYWORDS])
def test_every_spec_keyword_in_any_case(word, keyword, casing):
    """Each SPEC 6.9 word, in any letter case, classifies to its Keyword."""
    assert classify(CASINGS[casing](word)) is keyword


@pytest.mark.parametrize(
    "decorate",
    [
        pytest.param("  {}  ", id="spaces"),
        pytest.param("\t{}\n", id="tab and newline"),
        pytest.param("{}!", id="exclamation"),
        pytest.param(" {}. ", id="full stop and spaces"),
        pytest.param("¡{}!", id="Spanish exclamation"),
        pytest.param("¿{}?", id="Spanish question"),
        pytest.param("\"{}\"", id="quotes"),
        pytest.param("...{}...", id="ellipses"),
        pytest.param("**{}**", id="stars"),
        pytest.param("_{}_", id="underscores"),
        pytest.param("{} \U0001F6D1", id="trailing emoji"),
    ],
)
@pytest.mark.parametrize("word, keyword", SPEC_KEYWORDS, ids=[w for w, _ in SPEC_KEYWORDS])
def test_keyword_with_surrounding_spaces_and_punctuation(word, keyword, decorate):
    """Spaces and punctuation around a keyword are ignored."""
    assert classify(decorate.format(word.lower())) is keyword


@pytest.mark.parametrize(
    "text, keyword",
    [
        pytest.param("Stop!", Keyword.OPT_OUT, id="Stop!"),
        pytest.param(" stop. ", Keyword.OPT_OUT, id="' stop. '"),
        pytest.param("¡STOP!", Keyword.OPT_OUT, id="¡STOP!"),
        pytest.param("Start", Keyword.OPT_IN, id="Start"),
        pytest.param("help?", Keyword.HELP, id="help?"),
    ],
)
def test_brief_examples(text, keyword):
    """The everyday spellings customers send classify as their keyword."""
    assert classify(text) is keyword


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="None"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("!!!", id="punctuation only"),
        pytest.param("stop it", id="stop it"),
        pytest.param("please stop", id="please stop"),
        pytest.param("STOPP", id="STOPP"),
        pytest.param("STO", id="STO"),
        pytest.param("S T O P", id="spaced letters"),
        pytest.param("stop stop", id="repeated"),
        pytest.param("opt out", id="opt out two words"),
        pytest.param("no", id="no"),
        pytest.param("yes please", id="yes please"),
        pytest.param("help me", id="help me"),
        pytest.param("information", id="information"),
        pytest.param("weekend", id="contains END"),
        pytest.param("STOP\nSTOP", id="two lines"),
    ],
)
def test_non_keywords_classify_as_none(text):
    """Only a whole-text keyword counts: sentences, partial or misspelt words are None."""
    assert classify(text) is None


def test_classify_returns_keyword_enum_members():
    """classify returns members of the Keyword enum with stable values."""
    assert isinstance(classify("STOP"), Keyword)
    assert {k.value for k in Keyword} == {"opt_out", "opt_in", "help"}
