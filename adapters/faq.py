"""The faq engine: answers from a local knowledge base, with no network calls.

A knowledge base is a list of entries, each a canonical ``question`` with
optional ``alternatives`` and ``keywords`` and the ``answer`` to send. The
engine picks the entry whose words are most similar to the user's text (TF-IDF
weighted cosine similarity) and sends its answer, or the knowledge base's
``fallback`` when nothing is similar enough. It also answers a few questions
about the conversation itself ("what was my first question?", "what's my
name?") from the session history.

Engine config:

* ``knowledgeBase``: path to a YAML or JSON file ``{name, fallback, entries}``;
* ``entries``: the entries inline, instead of a file;
* ``fallback``: overrides the knowledge base's fallback answer;
* neither ``knowledgeBase`` nor ``entries``: the bundled ``faq_knowledge.yaml``.

Indexes are built once per knowledge base and shared by every engine and
worker thread, so building an engine per turn costs a dictionary look-up.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from adapters.base import EngineContext, HistoryItem, Media, PermanentEngineError, Reply, UserTurn

BUNDLED_KNOWLEDGE_BASE = Path(__file__).with_name("faq_knowledge.yaml")

# Below this similarity the best entry is more likely a wrong answer than a
# right one; the fallback, which says what we can answer, serves better.
MATCH_THRESHOLD = 0.4

# Keyword hits weigh this much of an equally close phrasing.
KEYWORD_DISCOUNT = 0.9

# Only a short text can be a follow-up such as "and on sundays?"; a longer
# text that matches nothing is a new question we cannot answer.
FOLLOW_UP_MAX_TERMS = 3

# A text made only of these ("how much?", "how long?") names no topic of its
# own, even when it happens to match some entry; after another question it
# asks about that question's topic.
VAGUE_TERMS = frozenset({"how", "much", "many", "long", "often", "far"})

# Quoting a whole essay back would split into many SMS segments.
QUOTE_MAX_CHARS = 120

DEFAULT_FALLBACK = "Sorry, I don't know the answer to that."

# Where the engine remembers a name the customer told it, so the name outlives
# the history window the turn service passes in.
STATE_NAME_KEY = "customerName"

STOPWORDS = frozenset(
    """
    a about also am an and any are as at be been but by can could did do does
    dont doesnt for from get got had has have he her here him his i id if im in
    is it its ive just know let like me might my need of on or our please pls
    plz she should so some tell than that thats the their them then there these
    they this those to too us very want was we were what whats which who whom
    will with would you youd youre your yours
    """.split()
)

VOWELS = frozenset("aeiouy")


# --- Text normalisation -------------------------------------------------------


def plain_text(text: str) -> str:
    """Lowercase words separated by single spaces: "What's up?!" -> "whats up"."""
    without_apostrophes = re.sub(r"['\u2019]", "", text.lower())
    return " ".join(re.findall(r"[^\W_]+", without_apostrophes))


def stem(word: str) -> str:
    """A light suffix stripper, so "hours", "opening" and "closed" meet "hour", "open", "close".

    It only has to map the forms of one word onto the same key, not produce
    real words: "close", "closed" and "closing" all become "clos".
    """
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 5 and word.endswith("ing") and _has_vowel(word[:-3]):
        word = _undouble(word[:-3])
    elif len(word) > 4 and word.endswith("ed") and not word.endswith("eed") and _has_vowel(word[:-2]):
        word = _undouble(word[:-2])
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _has_vowel(word: str) -> bool:
    # Guards "spring" or "string" from losing a suffix they do not have.
    return any(letter in VOWELS for letter in word)


def _undouble(word: str) -> str:
    # "shopping" -> "shopp" -> "shop"; l, s and z double in base words ("sell", "pass").
    if len(word) >= 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, stemmed."""
    return [stem(word) for word in plain_text(text).split() if word not in STOPWORDS]


# --- Knowledge base index -------------------------------------------------------

Vector = dict[str, float]


@dataclass(frozen=True)
class Entry:
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    entry: Entry
    score: float


class KnowledgeIndex:
    """TF-IDF vectors of a knowledge base's entries.

    Read-only once built, so any number of threads may share one instance.
    An entry's score is the best cosine similarity between the text and:

    * all the entry's words together, so a paraphrase can borrow words from
      several phrasings;
    * each phrasing alone, so a short text equal to a phrasing is not diluted
      by the entry's other words;
    * any phrasing made of the entry's keywords, discounted a little, so
      "puncture on my tyre" finds an entry listing those keywords.
    """

    def __init__(self, name: str, fallback: str, entries: tuple[Entry, ...]):
        self.name = name
        self.fallback = fallback
        self.entries = entries
        entry_terms = [_entry_terms(entry) for entry in entries]
        self._idf = _inverse_document_frequencies(entry_terms)
        # A word no entry uses still counts against a match: "hours on the moon"
        # is less like "hours" than "hours" is.
        self._unseen_idf = math.log(1 + len(entries)) + 1
        self._vectors = [
            [self._vector(all_terms)] + [self._vector(terms(phrasing)) for phrasing in _phrasings(entry)]
            for entry, all_terms in zip(entries, entry_terms)
        ]
        self._keywords = [frozenset(word for keyword in entry.keywords for word in terms(keyword)) for entry in entries]

    def best_match(self, text: str) -> Match | None:
        """The most similar entry, however weak; None when the text has no meaningful words."""
        query = self._vector(terms(text))
        if not query:
            return None
        scored = (
            Match(entry, max(self._keyword_score(query, keywords), *(_dot(query, vector) for vector in vectors)))
            for entry, vectors, keywords in zip(self.entries, self._vectors, self._keywords)
        )
        # max keeps the first of equal scores, so earlier entries win ties.
        return max(scored, key=lambda match: match.score)

    def _vector(self, words: list[str]) -> Vector:
        counts = Counter(words)
        weights = {
            word: (1 + math.log(count)) * self._idf.get(word, self._unseen_idf)
            for word, count in counts.items()
        }
        return _unit(weights)

    @staticmethod
    def _keyword_score(query: Vector, keywords: frozenset[str]) -> float:
        # The best cosine any vector over the keywords reaches is the length of
        # the query's part on them. Discounted because loose keywords are weaker
        # evidence than a phrasing the author wrote, which should win a tie.
        covered = math.sqrt(sum(weight * weight for word, weight in query.items() if word in keywords))
        return KEYWORD_DISCOUNT * covered


def _phrasings(entry: Entry) -> tuple[str, ...]:
    return (entry.question, *entry.alternatives)


def _entry_terms(entry: Entry) -> list[str]:
    return [word for text in (*_phrasings(entry), *entry.keywords) for word in terms(text)]


def _inverse_document_frequencies(documents: list[list[str]]) -> dict[str, float]:
    document_frequency = Counter(word for document in documents for word in set(document))
    count = len(documents)
    # Smoothed so a word in every entry still weighs a little instead of nothing.
    return {word: math.log((1 + count) / (1 + df)) + 1 for word, df in document_frequency.items()}


def _unit(weights: Vector) -> Vector:
    length = math.sqrt(sum(weight * weight for weight in weights.values()))
    if length == 0:
        return {}
    return {word: weight / length for word, weight in weights.items()}


def _dot(query: Vector, vector: Vector) -> float:
    return sum(weight * vector.get(word, 0.0) for word, weight in query.items())


# --- Loading and caching ----------------------------------------------------------

_INDEXES: dict[str, KnowledgeIndex] = {}
_INDEXES_LOCK = threading.Lock()


def load_index(config: dict[str, Any]) -> KnowledgeIndex:
    """The index for an engine config, built on first use and cached for the process."""
    path_setting = config.get("knowledgeBase")
    inline_entries = config.get("entries")
    if path_setting and inline_entries:
        raise PermanentEngineError("faq engine config has both knowledgeBase and entries; keep one")
    if inline_entries is not None and not path_setting:
        return _inline_index(inline_entries)
    if path_setting and not isinstance(path_setting, str):
        raise PermanentEngineError("faq engine knowledgeBase must be a file path")
    path = Path(path_setting).expanduser() if path_setting else BUNDLED_KNOWLEDGE_BASE
    key = f"file:{path.resolve()}"
    return _cached(key, lambda: _index_from_data(_read_knowledge_file(path), source=str(path)))


def _inline_index(entries: Any) -> KnowledgeIndex:
    # Keyed by content: the same inline entries in many engine configs share one index.
    canonical = json.dumps(entries, sort_keys=True, default=str)
    key = "inline:" + hashlib.sha256(canonical.encode()).hexdigest()
    return _cached(key, lambda: _index_from_data({"entries": entries}, source="inline entries"))


def _cached(key: str, build: Callable[[], KnowledgeIndex]) -> KnowledgeIndex:
    index = _INDEXES.get(key)
    if index is not None:
        return index
    # Built under the lock so threads asking for a new knowledge base at once
    # read and index it once; failures are not cached, so a fixed file loads next time.
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = build()
            _INDEXES[key] = index
        return index


def _read_knowledge_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PermanentEngineError(f"faq knowledge base not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PermanentEngineError(f"faq knowledge base {path} could not be read: {error}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PermanentEngineError(f"faq knowledge base {path} is not valid {kind}: {first_line}") from None


def _index_from_data(data: Any, source: str) -> KnowledgeIndex:
    if isinstance(data, list):
        data = {"entries": data}
    if not isinstance(data, dict):
        raise PermanentEngineError(f"faq knowledge base {source} must be a mapping with entries")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise PermanentEngineError(f"faq knowledge base {source} has no entries list")
    entries = tuple(_parse_entry(raw, number, source) for number, raw in enumerate(raw_entries, start=1))
    name = _optional_text(data.get("name"), "name", source) or source
    fallback = _optional_text(data.get("fallback"), "fallback", source) or DEFAULT_FALLBACK
    return KnowledgeIndex(name=name, fallback=fallback, entries=entries)


def _parse_entry(raw: Any, number: int, source: str) -> Entry:
    where = f"faq knowledge base {source}, entry {number}"
    if not isinstance(raw, dict):
        raise PermanentEngineError(f"{where} must be a mapping with question and answer")
    question = _required_text(raw.get("question"), "question", where)
    answer = _required_text(raw.get("answer"), "answer", where)
    entry = Entry(
        question=question,
        answer=answer,
        alternatives=_text_list(raw.get("alternatives"), "alternatives", where),
        keywords=_text_list(raw.get("keywords"), "keywords", where),
    )
    if not _entry_terms(entry):
        # Such an entry could never be matched; better to say so than to ignore it quietly.
        raise PermanentEngineError(f"{where} ({question!r}) has no words to match on")
    return entry


def _is_text(value: Any) -> bool:
    # YAML reads an unquoted 42 as a number, which is fine as text; it reads an
    # unquoted Yes or No as a boolean, which is not what the author meant.
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _required_text(value: Any, field: str, where: str) -> str:
    if not _is_text(value) or not str(value).strip():
        raise PermanentEngineError(f"{where} needs a non-empty {field} (quote yes/no answers in YAML)")
    return str(value).strip()


def _optional_text(value: Any, field: str, source: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PermanentEngineError(f"faq knowledge base {source}: {field} must be text")
    return value.strip() or None


def _text_list(value: Any, field: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(_is_text(item) for item in value):
        raise PermanentEngineError(f"{where}: {field} must be a list of texts (quote yes/no in YAML)")
    return tuple(str(item).strip() for item in value if str(item).strip())


# --- Conversation memory ------------------------------------------------------------
# These run on plain_text(), so case, apostrophes and punctuation do not matter.

FIRST_QUESTION = re.compile(
    r"\bmy first (?:question|message|text)\b"
    r"|\bthe first thing i (?:asked|said|sent|wrote)\b"
    r"|\bwhat did i (?:ask|say|send|write) first\b"
    r"|\bwhat did i first (?:ask|say|send|write)\b"
)
# Checked after FIRST_QUESTION, which "what did i ask first" also matches.
LAST_QUESTION = re.compile(
    r"\bmy (?:last|previous|prior|earlier|most recent) (?:question|message|text)\b"
    r"|\bthe (?:last|previous) thing i (?:asked|said|sent|wrote)\b"
    r"|\bwhat did i (?:just )?(?:ask|say|send|write)\b"
    r"|\bwhat was i (?:just )?(?:asking|saying)\b"
)
QUESTION_COUNT = re.compile(r"\bhow many (?:questions|messages|texts)\b")
ASK_NAME = re.compile(r"\b(?:whats|what is) my name\b|\bdo you (?:know|remember) my name\b|\bwho am i\b")

# Runs on the original text to keep the name as typed ("McKay", not "mckay").
TELL_NAME = re.compile(
    r"\bmy name(?:\s+is|\s*['\u2019]s)\s+(?P<name>[^\W\d_]+(?:['\u2019-][^\W\d_]+)*)",
    re.IGNORECASE,
)

# Words that open a message without asking anything: "hi, what are your hours?"
# is a question about hours, not a greeting.
LEADING_SMALL_TALK = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|yo|ok|okay|thanks|thank you|cheers|great|cool|good (?:morning|afternoon|evening))\b\s*)+"
)


@dataclass(frozen=True)
class NameIntroduction:
    name: str
    rest: str  # the text around "my name is ...", which may hold a question too


def told_name(text: str) -> NameIntroduction | None:
    found = TELL_NAME.search(text)
    if found is None:
        return None
    name = found.group("name").replace("\u2019", "'")
    if name.islower() or name.isupper():
        name = name.title()
    rest = (text[: found.start()] + " " + text[found.end() :]).strip()
    return NameIntroduction(name=name, rest=rest)


def user_texts(history: list[HistoryItem]) -> list[str]:
    """The customer's earlier texts, oldest first; attachment-only messages have none."""
    return [item.content.strip() for item in history if item.role == "user" and item.content.strip()]


def known_name(context: EngineContext) -> str | None:
    """The name the customer told us most recently, else one the assistant's variables give."""
    for text in reversed(user_texts(context.history)):
        introduction = told_name(text)
        if introduction is not None:
            return introduction.name
    for value in (
        context.state.get(STATE_NAME_KEY),
        context.variables.get("customer.name"),
        context.variables.get("name"),
    ):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


QUESTION_WORDS = frozenset(
    "what when where who whom whose which why how can could do does did is are was were will would should may "
    "might have has any".split()
)


def questions(texts: list[str]) -> list[str]:
    """The texts that ask something: end in '?' or start with a question word."""
    asked = []
    for text in texts:
        words = plain_text(text).split()
        if text.rstrip().endswith("?") or (words and words[0] in QUESTION_WORDS):
            asked.append(text)
    return asked


def conversation_answer(text: str, earlier: list[str], name: str | None) -> str | None:
    """An answer to a question about the conversation itself, or None if it is not one."""
    plain = plain_text(text)
    # "question" means a text that asks something: a bare "hi" is skipped when
    # a real question exists; "message" or "text" means any text.
    candidates = questions(earlier) if "question" in plain else earlier
    candidates = candidates or earlier
    if FIRST_QUESTION.search(plain):
        if not earlier:
            return "This is your first message, so there is no earlier question yet."
        return f"Your first question was: {quote(candidates[0])}"
    if LAST_QUESTION.search(plain):
        if not earlier:
            return "This is your first message, so there is nothing before it yet."
        return f"Your last question was: {quote(candidates[-1])}"
    if QUESTION_COUNT.search(plain):
        if not earlier:
            return "This is your first message."
        noun = "message" if len(earlier) == 1 else "messages"
        return f"You have sent {len(earlier)} {noun} before this one."
    if ASK_NAME.search(plain):
        if name is None:
            return "You haven't told me your name yet."
        return f"Your name is {name}."
    return None


def quote(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > QUOTE_MAX_CHARS:
        flat = flat[: QUOTE_MAX_CHARS - 3].rstrip() + "..."
    return f'"{flat}"'


def render(answer: str, name: str | None) -> str:
    """Fill ``$name``; with no name, drop it with the space or comma before it ("Hi $name!" -> "Hi!")."""
    if name:
        return answer.replace("$name", name)
    return re.sub(r"[ ,]*\$name\b", "", answer)


def media_only_answer(media: tuple[Media, ...]) -> str:
    noun = "attachment" if len(media) == 1 else "attachments"
    return f"I received {len(media)} {noun}, but I can only read text. Please type your question."


def after_small_talk(text: str) -> str:
    """The text without its opening pleasantries: "Hi, what are your hours?" -> "what are your hours"."""
    return LEADING_SMALL_TALK.sub("", plain_text(text))


def matchable_text(text: str) -> str:
    rest = after_small_talk(text)
    # "hi" alone is a greeting to answer, so keep it when nothing else is left.
    return rest if terms(rest) else plain_text(text)


# --- The engine -----------------------------------------------------------------------


class FaqEngine:
    provider = "faq"

    def __init__(self, config: dict | None = None):
        self.config = config or {}
        self.index = load_index(self.config)
        fallback = self.config.get("fallback")
        self.fallback = fallback.strip() if isinstance(fallback, str) and fallback.strip() else self.index.fallback

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        text = turn.text.strip()
        if not text and turn.media:
            return Reply(texts=[media_only_answer(turn.media)], cost=0.0)
        return Reply(texts=[self._answer(context, text)], cost=0.0)

    def _answer(self, context: EngineContext, text: str) -> str:
        introduction = told_name(text)
        if introduction is None:
            return self._answer_question(context, text, known_name(context))
        # Remembered in state too, in case the history window later drops this message.
        context.state[STATE_NAME_KEY] = introduction.name
        greeting = f"Nice to meet you, {introduction.name}!"
        if not terms(after_small_talk(introduction.rest)):
            return f"{greeting} How can I help?"
        return f"{greeting} {self._answer_question(context, introduction.rest, introduction.name)}"

    def _answer_question(self, context: EngineContext, text: str, name: str | None) -> str:
        earlier = user_texts(context.history)
        about_conversation = conversation_answer(text, earlier, name)
        if about_conversation is not None:
            return about_conversation
        match = self._match(text, earlier)
        return render(match.entry.answer if match else self.fallback, name)

    def _match(self, text: str, earlier: list[str]) -> Match | None:
        query = matchable_text(text)
        match = self._confident(self.index.best_match(query))
        if earlier and _is_follow_up(query, match):
            # A follow-up ("and in winter?", "how much?") borrows its topic from the
            # question before it; tried once, then we fall back.
            previous = matchable_text(earlier[-1])
            return self._confident(self.index.best_match(f"{previous} {query}")) or match
        return match

    @staticmethod
    def _confident(match: Match | None) -> Match | None:
        return match if match is not None and match.score >= MATCH_THRESHOLD else None


def _is_follow_up(query: str, standalone_match: Match | None) -> bool:
    query_terms = terms(query)
    if not 0 < len(query_terms) <= FOLLOW_UP_MAX_TERMS:
        return False
    return standalone_match is None or all(term in VAGUE_TERMS for term in query_terms)
