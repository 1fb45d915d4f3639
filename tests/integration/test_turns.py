"""The turn job: what reaches the engine, what comes back, and what the gateway answers by itself."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.db.models import Chat, Message, OptOut
from gateway.domain.segments import describe
from gateway.schemas import AssistantUpdate, PhoneNumberUpdate
from gateway.services.assistants import update_assistant
from gateway.services.phone_numbers import update_phone_number


@pytest.fixture(autouse=True)
def configured(number):
    """Every test here texts the business number, answered by the echo assistant unless it says otherwise."""
    return number


@pytest.fixture
def converse(webhook, runtime):
    """Send texts one by one, waiting for each to be fully handled; returns the transcript."""

    def run(*texts: str, **params) -> list[Message]:
        for body in texts:
            assert webhook(body, **params).status_code == 200
            assert runtime.queue.wait_idle(10)
        return transcript(runtime)

    return run


def transcript(runtime) -> list[Message]:
    with runtime.db.begin() as tx:
        return list(tx.scalars(select(Message).order_by(Message.seq)))


def replies(messages: list[Message]) -> list[str]:
    return [m.content for m in messages if m.role == "assistant"]


def test_echo_engine_answers_each_text_in_order(converse):
    """Each text gets its own reply, in the order sent, in one session."""
    messages = converse("one", "two", "three")
    assert [(m.role, m.content) for m in messages] == [
        ("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two"), ("user", "three"), ("assistant", "three"),
    ]
    assert {m.status for m in messages if m.role == "user"} == {"processed"}


def test_every_turn_is_recorded_as_a_chat(converse, runtime):
    """An SMS turn is a chat too: input, output, status and the engine that answered."""
    converse("hello")
    with runtime.db.begin() as tx:
        chat = tx.scalar(select(Chat))
    assert chat.input == "hello"
    assert chat.output == [{"role": "assistant", "content": "hello"}]
    assert (chat.status, chat.engine) == ("completed", "echo")


def test_engine_failure_sends_the_fallback_and_marks_the_text_failed(converse, runtime, assistant):
    """When the engine cannot answer, the fallback (with variables filled in) goes out and the reason is kept."""
    update_assistant(
        runtime,
        assistant.id,
        AssistantUpdate(
            engine={"provider": "faq", "knowledgeBase": "/nonexistent/kb.yaml"},
            fallbackMessage="Sorry {{customer.number}}, try again later.",
        ),
    )
    messages = converse("what are your hours?")
    inbound = messages[0]
    assert inbound.status == "failed"
    assert "knowledge base" in inbound.error_message
    assert replies(messages) == ["Sorry +14155550123, try again later."]
    assert messages[1].kind == "fallback"


def test_engine_failure_without_fallback_sends_nothing(converse, runtime, assistant):
    """No fallbackMessage: the text is failed with its reason and nothing is sent."""
    update_assistant(runtime, assistant.id, AssistantUpdate(engine={"provider": "faq", "knowledgeBase": "/nope.yaml"}))
    messages = converse("hi")
    assert [(m.role, m.status) for m in messages] == [("user", "failed")]


def test_number_without_assistant_fails_the_text_with_a_reason(converse, runtime, number):
    """A number with no assistant cannot answer: the text ends failed, saying why."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(assistantId=None))
    messages = converse("anyone?")
    assert messages[0].status == "failed"
    assert messages[0].error_message == "no assistant is configured for this number"


def test_help_keyword_answers_with_the_help_message(converse, runtime, number):
    """HELP or INFO answers with the number's helpMessage, not the engine."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(helpMessage="Text us anything. STOP to opt out."))
    assert replies(converse("help")) == ["Text us anything. STOP to opt out."]
    assert replies(converse(" Info. "))[-1] == "Text us anything. STOP to opt out."


def test_stop_opts_out_and_later_texts_are_not_forwarded(converse, runtime, number):
    """STOP opts the customer out (with the optOutMessage); later texts are stored, processed, not answered."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(optOutMessage="You are unsubscribed."))
    messages = converse("Stop!", "are you there?")
    assert replies(messages) == ["You are unsubscribed."]
    assert messages[-1].content == "are you there?" and messages[-1].status == "processed"
    with runtime.db.begin() as tx:
        assert tx.scalar(select(OptOut.source)) == "keyword"


def test_start_opts_back_in(converse, runtime, number):
    """START removes the opt-out, answers with optInMessage, and the engine answers again."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(optInMessage="Welcome back."))
    messages = converse("STOP", "START", "hello again")
    assert replies(messages) == ["Welcome back.", "hello again"]


def test_opt_out_type_from_twilio_is_recorded_without_a_reply(converse, runtime, number):
    """With Advanced Opt-Out, Twilio already answered: the gateway records the state and sends nothing."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(optOutMessage="should not be sent"))
    messages = converse("STOP", OptOutType="STOP")
    assert replies(messages) == []
    with runtime.db.begin() as tx:
        assert tx.scalar(select(OptOut.source)) == "keyword"


def test_media_reaches_a_text_only_engine_as_a_note(converse):
    """An engine that takes no media gets the text plus a short note naming the attachments."""
    messages = converse("see this", NumMedia="1", MediaUrl0="https://media.example/a.jpg", MediaContentType0="image/jpeg")
    assert replies(messages) == ["see this\n[1 attachment: image/jpeg]"]


def test_long_reply_is_split_into_parts_of_at_most_1600_characters(converse, runtime, assistant):
    """A reply over 1600 characters becomes several outbound messages, in order, none over 1600."""
    sentence = "Our rental bikes are serviced every week by our own mechanics. "
    answer = (sentence * 40).strip()
    update_assistant(
        runtime, assistant.id,
        AssistantUpdate(engine={"provider": "faq", "entries": [{"question": "tell me about your bikes", "answer": answer}]}),
    )
    parts = [m for m in converse("tell me about your bikes") if m.role == "assistant"]
    assert len(parts) == 2
    assert all(len(p.content) <= 1600 for p in parts)
    assert " ".join(p.content for p in parts) == answer
    assert all(p.content.endswith(".") for p in parts)
    assert [p.segments for p in parts] == [describe(p.content).segments for p in parts]
    assert {p.encoding for p in parts} == {"GSM-7"}


def test_segments_and_encoding_are_recorded_per_message(converse):
    """GSM-7 and UCS-2 replies record their encoding and segment count."""
    messages = converse("a" * 200, "café ☕")
    gsm, ucs = [m for m in messages if m.role == "assistant"]
    assert (gsm.encoding, gsm.segments) == ("GSM-7", 2)
    assert (ucs.encoding, ucs.segments) == ("UCS-2", 1)


def test_burst_of_texts_is_merged_into_one_turn(webhook, runtime, number):
    """With mergeBurstSeconds, texts sent close together reach the engine as one turn, one per line."""
    update_phone_number(runtime, number.id, PhoneNumberUpdate(mergeBurstSeconds=0.5))
    for body in ("hi", "I need a bike", "for tomorrow"):
        assert webhook(body).status_code == 200
    assert runtime.queue.wait_idle(10, include_delayed_within=2)
    messages = transcript(runtime)
    assert replies(messages) == ["hi\nI need a bike\nfor tomorrow"]
    assert {m.status for m in messages if m.role == "user"} == {"processed"}
