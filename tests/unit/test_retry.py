"""The engine retry loop shared by every adapter (SPEC 6.6) and the media note (SPEC 6.10)."""

from __future__ import annotations

import random

import pytest

from adapters.base import (
    EngineContext,
    EngineError,
    Media,
    PermanentEngineError,
    Reply,
    RetryPolicy,
    TransientEngineError,
    UserTurn,
    call_with_retries,
    media_note,
    text_with_media_note,
)

CONTEXT = EngineContext(session_id="s1", assistant_id="a1", config={})
TURN = UserTurn(text="hello")


class ScriptedEngine:
    """A fake engine that plays back a script: each item is a Reply to return or an error to raise."""

    provider = "scripted"

    def __init__(self, *script):
        self.script = list(script)
        self.calls: list[tuple[EngineContext, UserTurn]] = []

    def reply(self, context: EngineContext, turn: UserTurn) -> Reply:
        self.calls.append((context, turn))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class Sleeps(list):
    """Records the waits asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


OK = Reply(texts=["hi there"])


# --- RetryPolicy.delay ------------------------------------------------------------


def test_default_policy_matches_spec():
    """Defaults are 3 tries, a first delay of 1 s and a cap of 30 s."""
    assert RetryPolicy() == RetryPolicy(tries=3, first_delay=1.0, cap=30.0)


@pytest.mark.parametrize(
    "failed, ceiling",
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0), (20, 30.0)],
)
def test_delay_stays_between_half_ceiling_and_ceiling(failed, ceiling):
    """After n failed tries the wait is in [c/2, c] where c = first_delay * 2**(n-1), capped."""
    policy = RetryPolicy(tries=30, first_delay=1.0, cap=30.0)
    rng = random.Random(failed)
    delays = [policy.delay(failed, rng) for _ in range(500)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    # Jitter really spreads the waits over the range, not one fixed value.
    assert max(delays) - min(delays) > ceiling / 4


def test_delay_never_exceeds_cap():
    """However many tries failed, no wait is longer than the cap."""
    policy = RetryPolicy(tries=100, first_delay=2.0, cap=60.0)
    rng = random.Random(7)
    assert max(policy.delay(n, rng) for n in range(1, 60) for _ in range(20)) <= 60.0


def test_delay_grows_exponentially():
    """Ranges of consecutive tries double, so the backoff grows until it meets the cap."""
    policy = RetryPolicy(tries=10, first_delay=1.0, cap=1000.0)
    rng = random.Random(3)
    lows = [min(policy.delay(n, rng) for _ in range(200)) for n in range(1, 8)]
    highs = [max(policy.delay(n, rng) for _ in range(200)) for n in range(1, 8)]
    for n in range(1, 7):
        # Each try's shortest wait is at least the previous try's longest (c/2 of the next == c of this).
        assert lows[n] >= highs[n - 1] * 0.99
    assert highs[-1] > 32 * lows[0]


def test_delay_is_reproducible_with_a_seed():
    """The same seed gives the same waits."""
    policy = RetryPolicy()
    first = [policy.delay(n, random.Random(42)) for n in range(1, 5)]
    second = [policy.delay(n, random.Random(42)) for n in range(1, 5)]
    assert first == second


# --- call_with_retries ----------------------------------------------------------------


def test_success_first_try_does_not_sleep():
    """A good first answer is returned as is, with one call and no sleep."""
    engine, sleeps = ScriptedEngine(OK), Sleeps()
    assert call_with_retries(engine, CONTEXT, TURN, RetryPolicy(), sleep=sleeps) is OK
    assert len(engine.calls) == 1
    assert engine.calls[0] == (CONTEXT, TURN)
    assert sleeps == []


def test_transient_errors_are_retried_until_success():
    """Transient errors are retried, sleeping within the backoff range between tries."""
    engine = ScriptedEngine(TransientEngineError("timeout"), TransientEngineError("503"), OK)
    sleeps = Sleeps()
    assert call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3, first_delay=1.0, cap=30.0),
                             sleep=sleeps) is OK
    assert len(engine.calls) == 3
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 2.0


@pytest.mark.parametrize("tries", [1, 2, 3, 5])
def test_transient_errors_exhaust_tries_and_raise_the_last(tries):
    """After `tries` transient failures the last error is raised, with one sleep fewer than tries."""
    errors = [TransientEngineError(f"failure {n}") for n in range(1, tries + 1)]
    engine, sleeps = ScriptedEngine(*errors, OK), Sleeps()
    with pytest.raises(TransientEngineError) as raised:
        call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=tries), sleep=sleeps)
    assert raised.value is errors[-1]
    assert len(engine.calls) == tries
    assert len(sleeps) == tries - 1


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(PermanentEngineError("bad credentials"), id="permanent"),
        pytest.param(ValueError("bug in adapter"), id="unexpected exception"),
    ],
)
def test_non_transient_error_raised_at_once(error):
    """A permanent (or unexpected) error is raised on the first try, without retry or sleep."""
    engine, sleeps = ScriptedEngine(error, OK), Sleeps()
    with pytest.raises(type(error)) as raised:
        call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=5), sleep=sleeps)
    assert raised.value is error
    assert len(engine.calls) == 1
    assert sleeps == []


def test_permanent_error_after_transient_stops_retrying():
    """A permanent error on a retry ends the loop there, even with tries left."""
    engine, sleeps = ScriptedEngine(TransientEngineError("503"), PermanentEngineError("401"), OK), Sleeps()
    with pytest.raises(PermanentEngineError):
        call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=5), sleep=sleeps)
    assert len(engine.calls) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "retry_after, cap, expected",
    [
        pytest.param(10.0, 30.0, 10.0, id="longer than backoff: honoured"),
        pytest.param(100.0, 30.0, 30.0, id="longer than cap: capped"),
        pytest.param(30.0, 30.0, 30.0, id="equal to cap"),
    ],
)
def test_retry_after_is_honoured_but_capped(retry_after, cap, expected):
    """A Retry-After longer than the backoff is waited, never beyond the policy's cap."""
    engine = ScriptedEngine(TransientEngineError("429", retry_after=retry_after), OK)
    sleeps = Sleeps()
    call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3, first_delay=1.0, cap=cap), sleep=sleeps)
    assert sleeps == [expected]


def test_short_retry_after_does_not_shorten_backoff():
    """A Retry-After shorter than the backoff leaves the backoff wait in place."""
    engine = ScriptedEngine(TransientEngineError("429", retry_after=0.01), OK)
    sleeps = Sleeps()
    call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3, first_delay=4.0, cap=30.0), sleep=sleeps)
    assert len(sleeps) == 1
    assert 2.0 <= sleeps[0] <= 4.0


def test_before_try_is_called_before_each_try():
    """before_try gets the 1-based try number before each call to the engine."""
    events: list = []

    class RecordingEngine(ScriptedEngine):
        def reply(self, context, turn):
            events.append("reply")
            return super().reply(context, turn)

    engine = RecordingEngine(TransientEngineError("a"), TransientEngineError("b"), OK)
    call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3), sleep=lambda s: events.append("sleep"),
                      before_try=events.append)
    assert events == [1, "reply", "sleep", 2, "reply", "sleep", 3, "reply"]


def test_before_try_called_for_every_try_when_all_fail():
    """before_try sees 1..tries even when the last try fails."""
    seen: list[int] = []
    engine = ScriptedEngine(*[TransientEngineError("x") for _ in range(3)])
    with pytest.raises(TransientEngineError):
        call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3), sleep=Sleeps(), before_try=seen.append)
    assert seen == [1, 2, 3]


@pytest.mark.parametrize(
    "texts",
    [
        pytest.param([], id="no texts"),
        pytest.param([""], id="one empty text"),
        pytest.param(["   "], id="spaces only"),
        pytest.param(["\n\t", " "], id="whitespace texts"),
    ],
)
def test_empty_reply_is_a_permanent_error(texts):
    """A reply with no visible text raises PermanentEngineError naming the provider, without retry."""
    engine, sleeps = ScriptedEngine(Reply(texts=texts), OK), Sleeps()
    with pytest.raises(PermanentEngineError, match="scripted") as raised:
        call_with_retries(engine, CONTEXT, TURN, RetryPolicy(tries=3), sleep=sleeps)
    assert raised.value.reason == str(raised.value)
    assert len(engine.calls) == 1
    assert sleeps == []


def test_reply_with_one_visible_text_is_accepted():
    """One non-blank text among blank ones is enough to count as an answer."""
    reply = Reply(texts=["", "ok", " "])
    assert call_with_retries(ScriptedEngine(reply), CONTEXT, TURN, RetryPolicy(), sleep=Sleeps()) is reply


def test_error_tree():
    """Transient and permanent errors are EngineErrors carrying a storable reason."""
    transient = TransientEngineError("timeout", retry_after=2.5)
    assert isinstance(transient, EngineError) and isinstance(PermanentEngineError("x"), EngineError)
    assert (transient.reason, transient.retry_after) == ("timeout", 2.5)
    assert TransientEngineError("x").retry_after is None


# --- media notes ---------------------------------------------------------------------------

JPEG = Media("https://m.example/1", "image/jpeg")
PNG = Media("https://m.example/2", "image/png")
UNTYPED = Media("https://m.example/3")


@pytest.mark.parametrize(
    "media, expected",
    [
        pytest.param((), "", id="no media"),
        pytest.param((JPEG,), "[1 attachment: image/jpeg]", id="one"),
        pytest.param((JPEG, PNG), "[2 attachments: image/jpeg, image/png]", id="two"),
        pytest.param((UNTYPED,), "[1 attachment: file]", id="untyped is a file"),
        pytest.param((PNG, UNTYPED, JPEG), "[3 attachments: image/png, file, image/jpeg]", id="mixed, in order"),
    ],
)
def test_media_note(media, expected):
    """The note counts attachments and names each content type, 'file' when unknown."""
    assert media_note(media) == expected


@pytest.mark.parametrize(
    "turn, expected",
    [
        pytest.param(UserTurn("hello"), "hello", id="text only"),
        pytest.param(UserTurn("look", media=(JPEG,)), "look\n[1 attachment: image/jpeg]", id="text and media"),
        pytest.param(UserTurn("", media=(JPEG, PNG)), "[2 attachments: image/jpeg, image/png]", id="media only"),
        pytest.param(UserTurn(""), "", id="nothing"),
    ],
)
def test_text_with_media_note(turn, expected):
    """Text-only engines get the text, then the media note on its own line."""
    assert text_with_media_note(turn) == expected
