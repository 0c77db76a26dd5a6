"""`more`: an answer that was cut goes on from where it stopped, for the person it answered,
as one answer in the context; another message in between ends the offer."""

from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs

from relaybot.bridge.layout import MORE_MARKER, Piece
from relaybot.bridge.more import joiner, more_request, resume_point
from relaybot.config.schema import PolicyConfig, ReplyConfig
from relaybot.conversation.formats import Segment, Turn
from relaybot.irc.events import Join, Message, Names, NickChange
from relaybot.irc.text import casefold
from relaybot.moderation import Verdict
from tests.support.bridge import ALICE, BOB, BOT, FakeModeration, Harness, make_relay, words

LONG = "One is first. Two comes next. Three is here. Four ends it."


def joined(**kwargs: object) -> Harness:
    harness = make_relay(reply=ReplyConfig(max_lines=1), **kwargs)  # type: ignore[arg-type]
    harness.relay.handle(Join(BOT, "#chan"))
    harness.relay.handle(Names("#chan", ("relaybot", "alice", "bob")))
    return harness


def narrow(harness: Harness, budget: int = 40) -> None:
    """Lines of `budget` bytes of text, so that LONG needs several."""
    harness.sender.payload_budget = lambda target: budget + len("\x01ACTION \x01")  # type: ignore[method-assign]


def bot_turns(harness: Harness) -> list[Turn]:
    return [turn for turn in harness.turns("#chan") if turn.role == "relaybot"]


@pytest.mark.parametrize(
    ("text", "query", "where"),
    [
        ("relaybot: more", False, "here"),
        ("relaybot, more", False, "here"),
        ("RelayBot more!", False, "here"),
        ("\x02relaybot\x02: more", False, "here"),
        ("relaybot: more pm", False, "private"),
        ("relaybot: more privately", False, "private"),
        ("relaybot: more in private", False, "private"),
        ("more pm", True, "here"),  # a query is private already
        ("more", False, None),  # not addressed in a channel
        ("more", True, "here"),  # in a query it is
        ("relaybot: more please tell me about cats", False, None),
        ("relaybot: tell me more", False, None),
        ("relaybot[m]: more", False, None),
    ],
)
def test_what_asks_for_more(text: str, query: bool, where: str | None):
    assert more_request(text, "relaybot", "rfc1459", query=query) == where


def test_a_long_answer_ends_at_a_sentence_with_the_marker_and_more_goes_on():
    h = joined()
    narrow(h)
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    assert h.texts() == ["One is first. Two comes next." + MORE_MARKER]
    h.say(ALICE, "#chan", "relaybot: more")
    assert len(h.jobs) == 1  # from text generated before: nothing is generated
    assert h.texts()[1:] == ["Three is here. Four ends it."]
    # One answer in the context: no marker, no `more` line, the same turn grown.
    assert bot_turns(h) == [Turn("relaybot", LONG)]
    assert Turn("alice", "relaybot: more") not in h.turns("#chan")
    h.say(ALICE, "#chan", "relaybot: more")  # nothing left
    assert len(h.texts()) == 2
    assert h.sender.notices == [("alice", "There is no more to my last answer.")]


def test_another_message_in_between_ends_the_offer():
    h = joined()
    narrow(h)
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    h.say(BOB, "#chan", "nice")
    h.say(ALICE, "#chan", "relaybot: more")
    assert len(h.texts()) == 1
    assert h.sender.notices == [("alice", "There is no more to my last answer.")]


def test_more_is_for_the_person_the_answer_was_for():
    h = joined()
    narrow(h)
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    h.say(BOB, "#chan", "relaybot: more")
    assert len(h.texts()) == 1
    assert h.sender.notices == [("bob", "My last answer here was for alice; ask me yourself.")]
    h.say(ALICE, "#chan", "relaybot: more")  # Bob's `more` was no message: still on
    assert len(h.texts()) == 2


def test_notices_about_no_more_are_rate_limited():
    h = joined()
    for _ in range(10):
        h.say(BOB, "#chan", "relaybot: more")
    assert len(h.sender.notices) == 2


def test_a_model_cut_off_resumes_from_the_answer_as_written():
    h = joined(context_window=4096)
    h.say(ALICE, "#chan", "relaybot: tell me about chess")
    first = h.jobs[0]
    h.complete(first, "Chess is a board game. It is played on a checkered bo", cut=True)
    assert h.texts() == ["Chess is a board game." + MORE_MARKER]
    h.say(ALICE, "#chan", "relaybot: more")
    # The unsent rest has no boundary to end at: generation resumes.
    assert len(h.jobs) == 2
    resumed = h.jobs[1]
    assert resumed.request.prompt.segments[:-1] == first.request.prompt.segments
    # The word the token limit may have cut short is written again by the model.
    assert resumed.request.prompt.segments[-1] == Segment(
        "Chess is a board game. It is played on a checkered"
    )
    assert resumed.request.cache_key == first.request.cache_key
    h.complete(resumed, "board of 64 squares. Each player has sixteen pieces.")
    assert h.texts()[1:] == [
        "It is played on a checkered board of 64 squares. Each player has sixteen pieces."
    ]
    assert bot_turns(h) == [
        Turn(
            "relaybot",
            "Chess is a board game. It is played on a checkered board of 64 squares."
            " Each player has sixteen pieces.",
        )
    ]
    h.say(ALICE, "#chan", "relaybot: more")  # the model had ended: nothing more
    assert len(h.jobs) == 2
    assert h.sender.notices[-1] == ("alice", "There is no more to my last answer.")


def test_an_answer_goes_on_with_the_model_that_began_it():
    h = joined()
    h.relay.operator_state.set_model("#chan", "first-model")
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "Hello there.", cut=True)
    # Switched meanwhile: the rest of this answer is still the first model's to write.
    h.relay.operator_state.set_model("#chan", "second-model")
    h.say(ALICE, "#chan", "relaybot: more")
    assert [job.request.model for job in h.jobs] == ["first-model", "first-model"]


def test_a_resumed_generation_that_ends_at_once_says_so():
    h = joined()
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "Hello there.", cut=True)
    assert h.texts() == ["Hello there." + MORE_MARKER]
    h.say(ALICE, "#chan", "relaybot: more")
    h.complete(h.jobs[1], "")
    assert h.sender.notices == [("alice", "That was all I had to say.")]
    assert bot_turns(h) == [Turn("relaybot", "Hello there.")]


def test_budgets_apply_to_more():
    h = joined(policy=PolicyConfig(cooldown=0.0, user_per_minute=1, user_burst=1))
    narrow(h)
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    with capture_logs() as logs:
        h.say(ALICE, "#chan", "relaybot: more")
    assert len(h.texts()) == 1
    assert any(e.get("reason") == "user_budget" for e in logs)


def test_more_in_a_query():
    h = joined()
    narrow(h)
    h.relay.handle(Message(ALICE, "relaybot", "count"))
    h.complete(h.jobs[0], LONG)
    assert h.sender.sent[0].target == "alice"
    h.relay.handle(Message(ALICE, "relaybot", "more"))
    assert [s.text for s in h.sender.sent][1:] == ["Three is here. Four ends it."]
    assert [t for t in h.turns("alice") if t.role == "user"] == [Turn("user", LONG)]


def test_a_new_answer_replaces_the_offer():
    h = joined()
    narrow(h)
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    h.say(ALICE, "#chan", "relaybot: again")
    h.complete(h.jobs[1], "Short.")
    h.say(ALICE, "#chan", "relaybot: more")
    assert h.texts()[-1] == "Short."
    assert h.sender.notices == [("alice", "There is no more to my last answer.")]


def test_resume_point_drops_a_word_the_limit_may_have_cut():
    rest = (Piece("It is played on a checkered bo", False, " "),)
    base, kept = resume_point("Chess. It is played on a checkered bo", rest)
    assert base == "Chess. It is played on a checkered"
    assert kept == (Piece("It is played on a checkered", False, " "),)
    assert resume_point("Done.", ()) == ("Done.", ())


@pytest.mark.parametrize(
    ("continuation", "join"), [("board", " "), (", and", ""), ("'s", ""), ("", "")]
)
def test_joiner(continuation: str, join: str):
    assert joiner("the", continuation) == join


def test_the_key_is_the_conversation():
    h = joined()
    narrow(h)
    h.relay.handle(Join(BOT, "#other"))
    h.say(ALICE, "#chan", "relaybot: count")
    h.complete(h.jobs[0], LONG)
    h.say(ALICE, "#other", "relaybot: more")
    assert len(h.texts()) == 1
    assert casefold("#chan") in {key[1] for key in h.relay.continuing.offers}


def cut_answer(
    h: Harness, text: str = "Chess is a board game. It is played on a checkered bo"
) -> None:
    h.say(ALICE, "#chan", "relaybot: tell me about chess")
    h.complete(h.jobs[-1], text, cut=True)


def test_a_reset_or_mute_ends_the_offer():
    h = joined()
    cut_answer(h)
    h.relay.cancel(h.relay.key("#chan"))  # what reset, mute and part do
    h.say(ALICE, "#chan", "relaybot: more")
    assert len(h.jobs) == 1
    assert h.sender.notices == [("alice", "There is no more to my last answer.")]


def test_a_failed_resume_loses_nothing_and_may_be_asked_again():
    h = joined()
    cut_answer(h)
    h.say(ALICE, "#chan", "relaybot: more")
    first_try = h.jobs[1].request.prompt.segments[-1]
    h.complete(h.jobs[1], None, "EngineError: out of memory")
    h.say(ALICE, "#chan", "relaybot: more")
    assert h.jobs[2].request.prompt.segments[-1] == first_try  # no further word dropped
    h.complete(h.jobs[2], "board.")
    assert h.texts()[-1] == "It is played on a checkered board."


def test_more_asked_while_the_bot_is_still_writing_loses_no_part():
    h = joined()
    narrow(h, 30)
    cut_answer(h, "One is first. Two comes next. Three is here. Four ends it. Five is")
    h.sender.deliver_now = False
    h.say(ALICE, "#chan", "relaybot: more")  # from the kept text, queued, not yet written
    h.say(ALICE, "#chan", "relaybot: more")  # the next part, queued behind it
    h.sender.flush()
    sent = h.texts()
    assert sent[1:] == ["Two comes next." + MORE_MARKER, "Three is here." + MORE_MARKER]
    # Parts of one answer never supersede each other in the outbox.
    assert all(batch is None or batch.key is None for batch in h.sender.batches[1:])


def test_the_offer_follows_a_query_peer_to_a_new_nick():
    h = joined()
    narrow(h)
    h.relay.handle(Message(ALICE, "relaybot", "count"))
    h.complete(h.jobs[0], LONG)
    h.relay.handle(NickChange(ALICE, "alice2"))
    alice2 = dataclasses.replace(ALICE, nick="alice2")
    h.relay.handle(Message(alice2, "relaybot", "more"))
    assert [(s.target, s.text) for s in h.sender.sent][1:] == [
        ("alice2", "Three is here. Four ends it.")
    ]


def test_a_plain_more_in_a_query_without_an_offer_is_a_line():
    h = joined()
    h.relay.handle(Message(ALICE, "relaybot", "more"))
    assert len(h.jobs) == 1 and h.sender.notices == []
    assert h.turns("alice")[-1] == Turn("anon", "more")


def test_an_answer_moderation_replaced_offers_nothing_to_resume():
    moderation = FakeModeration()
    moderation.output_rules["board"] = Verdict.replace("Cleaned up.", "test")
    h = joined(moderation=moderation)
    cut_answer(h)
    assert h.texts() == ["Cleaned up."]
    h.say(ALICE, "#chan", "relaybot: more")
    assert len(h.jobs) == 1


def test_the_resumed_prompt_fits_the_context_window_with_its_header():
    window = 300
    h = joined(context_window=window)
    for i in range(60):
        h.say(BOB, "#chan", f"line {i} with a few words in it")
    long = " ".join(f"w{i}" for i in range(80)) + ". and then some more wor"
    cut_answer(h, long)
    h.say(ALICE, "#chan", "relaybot: more")
    prompt = h.jobs[-1].request.prompt
    assert prompt.text.startswith("<|im_start|>relaybot\n/join #chan")
    assert prompt.segments[-1].text.startswith("w0 w1")
    budget = window - h.jobs[-1].request.params.max_new_tokens
    assert words(prompt.text) <= budget


def test_resume_point_drops_nothing_the_text_does_not_end_with():
    rest = (Piece("some words", False),)
    assert resume_point("some words\n/join #x", rest) == ("some words\n/join #x", rest)


def test_more_by_private_message_goes_on_there_and_stays_out_of_the_channel():
    h = joined()
    narrow(h, 30)
    cut_answer(h, "One is first. Two comes next. Three is here. Four ends it. Five is")
    h.say(ALICE, "#chan", "relaybot: more pm")
    assert [(s.target, s.text) for s in h.sender.sent][1:] == [
        ("alice", "Two comes next." + MORE_MARKER)
    ]
    # A plain `more` in the query goes on with the channel's answer, privately.
    h.relay.handle(Message(ALICE, "relaybot", "more"))
    assert (h.sender.sent[-1].target, h.sender.sent[-1].text) == (
        "alice",
        "Three is here." + MORE_MARKER,
    )
    # The channel saw only the first part; its context holds only that. `more` there goes on.
    assert bot_turns(h) == [Turn("relaybot", "One is first.")]
    h.say(ALICE, "#chan", "relaybot: more")
    # What is left is less than a part: the model writes on first.
    h.complete(h.jobs[-1], "is over.")
    assert (h.sender.sent[-1].target, h.sender.sent[-1].text) == (
        "#chan",
        "Four ends it. Five is over.",
    )
    assert bot_turns(h) == [Turn("relaybot", "One is first. Four ends it. Five is over.")]
    assert h.relay.transcript("alice") is None  # the private parts opened no query context


def test_more_by_private_message_resumes_generation_there_too():
    h = joined()
    cut_answer(h)
    h.say(ALICE, "#chan", "relaybot: more pm")
    h.complete(h.jobs[1], "board.")
    assert (h.sender.sent[-1].target, h.sender.sent[-1].text) == (
        "alice",
        "It is played on a checkered board.",
    )
    assert bot_turns(h) == [Turn("relaybot", "Chess is a board game.")]
    # The channel saw the bot typing while the part generated, and then that it stopped.
    assert h.sender.typed[-2:] == [("#chan", True), ("#chan", False)]
