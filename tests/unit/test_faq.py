"""The local faq engine: knowledge base matching, conversation memory and loading."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from adapters.base import EngineContext, HistoryItem, Media, PermanentEngineError, Reply, UserTurn
from adapters.faq import BUNDLED_KNOWLEDGE_BASE, FaqEngine, render

# GSM 03.38 basic character set: what one SMS segment carries without escapes.
GSM7_BASIC = set(
    "@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8\u00f8\r\u00c5\u00e5"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9"
    " !\"#\u00a4%&'()*+,-./0123456789:;<=>?"
    "\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ\u00c4\u00d6\u00d1\u00dc\u00a7"
    "\u00bfabcdefghijklmnopqrstuvwxyz\u00e4\u00f6\u00f1\u00fc\u00e0"
)

BUNDLED = yaml.safe_load(BUNDLED_KNOWLEDGE_BASE.read_text(encoding="utf-8"))
HOURS = next(entry["answer"] for entry in BUNDLED["entries"] if "hours" in entry["question"])
RENTAL_PRICES = next(entry["answer"] for entry in BUNDLED["entries"] if "rent a bike" in entry["question"])
LOCATION = next(entry["answer"] for entry in BUNDLED["entries"] if "located" in entry["question"])
REPAIRS = next(entry["answer"] for entry in BUNDLED["entries"] if "repairs" in entry["question"])
PARKING = next(entry["answer"] for entry in BUNDLED["entries"] if "parking" in entry["question"])
FALLBACK = BUNDLED["fallback"]


def context_with(*user_texts: str, variables: dict | None = None) -> EngineContext:
    """A session whose history holds these user texts, each followed by an assistant reply."""
    history: list[HistoryItem] = []
    for text in user_texts:
        history += [HistoryItem("user", text), HistoryItem("assistant", "ok")]
    return EngineContext(session_id="s1", assistant_id="a1", config={}, history=history, variables=variables or {})


def ask(text: str, *earlier: str, engine: FaqEngine | None = None, variables: dict | None = None) -> str:
    reply = (engine or FaqEngine()).reply(context_with(*earlier, variables=variables), UserTurn(text))
    assert len(reply.texts) == 1
    return reply.texts[0]


def write_knowledge_base(path: Path, entries: list[dict], fallback: str = "No idea, sorry.") -> Path:
    path.write_text(yaml.safe_dump({"name": "Test", "fallback": fallback, "entries": entries}), encoding="utf-8")
    return path


# --- Matching the bundled knowledge base ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "What are your hours?",
        "when do you open",
        "What time do you close on Saturday?",
        "are you open sunday??",
        "Opening times",
    ],
)
def test_hours_phrasings_get_the_hours_answer(text):
    """Different ways of asking about opening hours all get the hours answer."""
    assert ask(text) == HOURS


@pytest.mark.parametrize(
    "text",
    ["How much to rent a bike?", "bike rental prices", "What are your rates for bike hire?", "rent a bike"],
)
def test_price_phrasings_get_the_rental_prices(text):
    """Different ways of asking what a rental costs all get the rental price list."""
    assert ask(text) == RENTAL_PRICES


@pytest.mark.parametrize("text", ["Where are you?", "what's your address", "Directions please!", "How do I find the shop?"])
def test_location_phrasings_get_the_address(text):
    """Different ways of asking where the shop is all get the address."""
    assert ask(text) == LOCATION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What does it cost to hire a bike for a whole day?", RENTAL_PRICES),
        ("my front tyre has a puncture", REPAIRS),
        ("is parking free for customers?", PARKING),
    ],
)
def test_paraphrase_not_in_the_knowledge_base_still_matches(text, expected):
    """A paraphrase that is no entry's literal wording still finds the right entry."""
    phrasings = {
        phrase.lower()
        for entry in BUNDLED["entries"]
        for phrase in [entry["question"], *entry.get("alternatives", [])]
    }
    assert text.lower() not in phrasings
    assert ask(text) == expected


@pytest.mark.parametrize("text", ["What's the weather like?", "Can I bring my dog?", "what is the meaning of life"])
def test_unknown_question_gets_the_fallback(text):
    """A question the knowledge base does not cover gets its fallback, which names things to ask."""
    answer = ask(text)
    assert answer == FALLBACK
    assert "hours" in answer


def test_greeting_before_a_question_answers_the_question():
    """Opening pleasantries ("Hi, ...") do not turn a question into a greeting."""
    assert ask("Hi, what are your hours?") == HOURS
    assert ask("hello").startswith("Hi!")


def test_reply_is_one_text_and_free():
    """A reply is exactly one text and costs nothing."""
    reply = FaqEngine().reply(context_with(), UserTurn("what are your hours?"))
    assert reply == Reply(texts=[HOURS], cost=0.0)


def test_empty_turn_gets_the_fallback_not_the_previous_answer():
    """An empty text with no media gets the fallback instead of re-answering the last question."""
    assert ask("   ", "what are your hours?") == FALLBACK


# --- Follow-ups -------------------------------------------------------------------------


def test_vague_follow_up_borrows_the_previous_question_topic():
    """A short follow-up that matches nothing alone is answered on the previous question's topic."""
    assert ask("and in winter?") == FALLBACK
    assert ask("and in winter?", "when are you open?") == HOURS


def test_how_much_follows_the_previous_topic():
    """"How much?" after a repairs question prices repairs, not rentals."""
    assert ask("how much?", "do you do repairs?") == REPAIRS


def test_new_short_question_is_not_treated_as_a_follow_up():
    """A short question with a topic of its own is answered on that topic, not the previous one."""
    assert ask("where are you?", "how much to rent a bike?") == LOCATION


# --- Conversation memory ---------------------------------------------------------------


def test_first_question_quotes_the_first_user_message():
    """"What was my first question?" quotes the first user message of the history."""
    answer = ask("What was my first question??", "what are your hours?", "where are you?")
    assert answer == 'Your first question was: "what are your hours?"'


def test_first_question_skips_a_bare_greeting():
    """"What was my first question?" quotes the first text that asked something, not "hi"."""
    assert ask("what was my first question?", "hi", "what are your hours?", "thanks") == (
        'Your first question was: "what are your hours?"'
    )


def test_first_message_counts_the_greeting():
    """Asking for the first message (not question) quotes whatever came first."""
    assert ask("what was my first message?", "hi", "what are your hours?") == 'Your first question was: "hi"'


@pytest.mark.parametrize("text", ["what was my last question", "What did I just ask?", "what did i say before"])
def test_last_question_quotes_the_previous_user_message(text):
    """Asking for the last question quotes the most recent earlier user message."""
    answer = ask(text, "what are your hours?", "where are you?")
    assert answer == 'Your last question was: "where are you?"'


def test_question_count_counts_earlier_user_messages():
    """"How many questions have I asked?" counts the user's earlier messages only."""
    assert ask("How many questions have I asked?", "hi", "where are you?", "thanks") == (
        "You have sent 3 messages before this one."
    )


@pytest.mark.parametrize(
    "text", ["what was my first question?", "what did I just ask?", "how many questions have I asked?"]
)
def test_empty_history_says_this_is_the_first_message(text):
    """With no history, questions about earlier messages say this is the first message."""
    assert "first message" in ask(text)


def test_told_name_is_acknowledged_remembered_and_recalled():
    """"My name is sam" is acknowledged, kept in state, and recalled from history later."""
    context = context_with()
    reply = FaqEngine().reply(context, UserTurn("my name is sam"))
    assert reply.texts == ["Nice to meet you, Sam! How can I help?"]
    assert context.state["customerName"] == "Sam"
    assert ask("What's my name?", "my name is Sam", "what are your hours?") == "Your name is Sam."


def test_name_never_told_says_so():
    """Asked for a name it was never told, the engine says so instead of guessing."""
    assert ask("what's my name?", "what are your hours?") == "You haven't told me your name yet."


def test_name_and_question_in_one_message_answers_both():
    """"My name is X, <question>" acknowledges the name and answers the question."""
    assert ask("My name is Sam, what are your hours?") == f"Nice to meet you, Sam! {HOURS}"


def test_greeting_uses_a_known_name():
    """Greetings use a name from the history or the assistant's variables, and read well without one."""
    assert ask("hello", "my name is Sam").startswith("Hi Sam!")
    assert ask("hello", variables={"customer.name": "Alex"}).startswith("Hi Alex!")
    assert ask("hello").startswith("Hi! ")


def test_render_drops_the_name_placeholder_with_its_separator():
    """Without a name, "$name" goes with the space or comma before it."""
    assert render("You're welcome, $name! Bye $name, ride safe.", None) == "You're welcome! Bye, ride safe."
    assert render("Hi $name!", "Sam") == "Hi Sam!"


# --- Media -----------------------------------------------------------------------------


def test_media_only_turn_says_only_text_is_read():
    """An attachment without text gets a short note that only text can be read."""
    engine = FaqEngine()
    one = engine.reply(context_with(), UserTurn("", media=(Media("https://x/1.jpg", "image/jpeg"),)))
    two = engine.reply(context_with(), UserTurn("", media=(Media("https://x/1.jpg"), Media("https://x/2.pdf"))))
    assert one.texts == ["I received 1 attachment, but I can only read text. Please type your question."]
    assert two.texts[0].startswith("I received 2 attachments")


def test_media_with_text_answers_the_text():
    """An attachment with text gets the answer to the text."""
    reply = FaqEngine().reply(context_with(), UserTurn("where are you?", media=(Media("https://x/1.jpg"),)))
    assert reply.texts == [LOCATION]


# --- SMS friendliness ------------------------------------------------------------------


def test_bundled_answers_use_only_gsm7_basic_characters():
    """Every bundled answer and the fallback, with or without a name, fits the GSM 03.38 basic set."""
    answers = [entry["answer"] for entry in BUNDLED["entries"]] + [BUNDLED["fallback"]]
    for answer in answers:
        for name in (None, "Sam"):
            text = render(answer, name)
            assert set(text) <= GSM7_BASIC, (text, set(text) - GSM7_BASIC)


def test_engine_own_replies_use_only_gsm7_basic_characters():
    """Replies the engine writes itself (memory, media, greetings) fit the GSM 03.38 basic set."""
    replies = [
        ask("what was my first question?"),
        ask("what was my first question?", "hi"),
        ask("what did I just ask?", "hi"),
        ask("how many questions have I asked?", "hi"),
        ask("what's my name?"),
        ask("my name is Sam"),
        FaqEngine().reply(context_with(), UserTurn("", media=(Media("https://x/1.jpg"),))).texts[0],
    ]
    for text in replies:
        assert set(text) <= GSM7_BASIC, (text, set(text) - GSM7_BASIC)


def test_bundled_entries_have_the_documented_shape():
    """The bundled knowledge base names the shop and has 15-20 entries with question and answer."""
    assert BUNDLED["name"] == "Harbor Bikes"
    assert 15 <= len(BUNDLED["entries"]) <= 20
    assert all(entry["question"] and entry["answer"] for entry in BUNDLED["entries"])


# --- Configuration and loading ---------------------------------------------------------


def test_inline_entries_are_used_instead_of_the_bundled_knowledge_base():
    """Entries given inline in the config answer questions, with the config's fallback."""
    engine = FaqEngine(
        {
            "provider": "faq",
            "entries": [
                {"question": "Do you deliver?", "alternatives": ["home delivery"], "answer": "Yes, within 5 miles."},
                {"question": "Are you open late?", "answer": "Until 9pm on Fridays."},
            ],
            "fallback": "Ask us about delivery.",
        }
    )
    assert ask("can I get home delivery?", engine=engine) == "Yes, within 5 miles."
    assert ask("open late tonight?", engine=engine) == "Until 9pm on Fridays."
    assert ask("what are your hours?", engine=engine) == "Ask us about delivery."


def test_keywords_alone_find_their_entry():
    """A text made of an entry's keywords finds it, however many keywords the entry lists."""
    keywords = ["puncture", "tyre", "tire", "brakes", "chain", "gears", "spokes", "wheel", "pedal", "saddle"]
    engine = FaqEngine(
        {
            "entries": [
                {"question": "Repairs", "keywords": keywords, "answer": "We fix bikes."},
                {"question": "Opening hours", "answer": "9 to 5."},
            ]
        }
    )
    assert ask("puncture", engine=engine) == "We fix bikes."
    assert ask("my chain and pedal are broken", engine=engine) == "We fix bikes."


def test_json_knowledge_base_file_is_read(tmp_path):
    """A knowledgeBase path ending in .json is read as JSON."""
    path = tmp_path / "kb.json"
    path.write_text(json.dumps({"fallback": "Hmm.", "entries": [{"question": "Wifi password?", "answer": "bikes4all"}]}))
    engine = FaqEngine({"knowledgeBase": str(path)})
    assert ask("what is the wifi password", engine=engine) == "bikes4all"
    assert ask("something else entirely", engine=engine) == "Hmm."


def test_missing_knowledge_base_is_a_permanent_error(tmp_path):
    """A knowledgeBase path that does not exist raises PermanentEngineError naming the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PermanentEngineError, match="not found") as raised:
        FaqEngine({"knowledgeBase": str(missing)})
    assert str(missing) in raised.value.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("entries: [unclosed", "not valid YAML"),
        ("name: Empty\n", "no entries"),
        ("entries:\n  - question: Hours?\n", "entry 1 needs a non-empty answer"),
        ("entries:\n  - question: Open?\n    answer: Yes\n", "quote yes/no"),
    ],
)
def test_malformed_knowledge_base_is_a_permanent_error(tmp_path, content, reason):
    """A knowledge base that does not parse or lacks entries or answers raises PermanentEngineError."""
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(PermanentEngineError, match=reason):
        FaqEngine({"knowledgeBase": str(path)})


def test_index_is_built_once_per_knowledge_base(tmp_path):
    """Engines for the same knowledge base share one index and do not read the file again."""
    path = write_knowledge_base(tmp_path / "kb.yaml", [{"question": "Do you rent boats?", "answer": "No, bikes only."}])
    first = FaqEngine({"knowledgeBase": str(path)})
    path.unlink()  # a second read would now fail
    later = [FaqEngine({"knowledgeBase": str(path)}) for _ in range(50)]
    assert all(engine.index is first.index for engine in later)
    assert ask("can I rent a boat?", engine=later[-1]) == "No, bikes only."
    assert FaqEngine().index is FaqEngine().index


def test_concurrent_engines_share_one_index(tmp_path):
    """Threads building engines for a new knowledge base at once end up with a single index."""
    path = write_knowledge_base(tmp_path / "kb.yaml", [{"question": "Do you rent boats?", "answer": "No."}])
    with ThreadPoolExecutor(max_workers=8) as pool:
        engines = list(pool.map(lambda _: FaqEngine({"knowledgeBase": str(path)}), range(32)))
    assert len({id(engine.index) for engine in engines}) == 1
