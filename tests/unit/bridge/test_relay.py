"""Unit tests for relaybot.bridge.relay with a recording sender and a recording submit: no I/O."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import ReplyConfig
from relaybot.conversation.formats import Turn
from relaybot.inference.engine import SamplingParams
from relaybot.irc.events import (
    Action,
    Join,
    Kick,
    Message,
    Names,
    NickChange,
    Origin,
    Part,
    Quit,
    Topic,
)
from relaybot.irc.text import casefold
from tests.support.bridge import ALICE, BOB, BOT, CAROL, NET, Harness, Sent, make_relay


def make_harness(
    *, reply: ReplyConfig | None = None, accept: bool = True, random_value: float = 0.99
) -> Harness:
    return make_relay(reply=reply, accept=accept, random_value=random_value)


@pytest.fixture
def h() -> Harness:
    return make_harness()


@pytest.fixture
def joined(h: Harness) -> Harness:
    """The bot in #chan with alice and bob."""
    h.relay.handle(Join(BOT, "#chan"))
    h.relay.handle(Names("#chan", ("@relaybot", "alice", "+bob")))
    return h


# --- contexts ---------------------------------------------------------------------------------


def test_own_join_creates_context_with_header(h: Harness):
    h.relay.handle(Join(BOT, "#chan"))
    transcript = h.relay.transcript("#chan")
    assert transcript is not None
    assert transcript.header == [
        Turn("relaybot", "/join #chan"),
        Turn("system", "* Now talking in #chan"),
    ]
    assert transcript.turns == []
    assert (NET, "#chan") in h.relay.transcripts


def test_context_key_is_casefolded(h: Harness):
    h.relay.handle(Join(BOT, "#Chan[1]"))
    assert h.relay.transcript("#chan{1}") is not None
    assert list(h.relay.transcripts) == [(NET, casefold("#Chan[1]"))]


def test_others_join_and_part_recorded(joined: Harness):
    joined.relay.handle(Join(CAROL, "#chan"))
    joined.relay.handle(Part(CAROL, "#chan", "bye"))
    assert joined.prompt("#chan")[2:] == [
        Turn("system", "* carol has joined #chan"),
        Turn("system", "* carol has left #chan (bye)"),
    ]


def test_topic_on_join_goes_to_header(joined: Harness):
    joined.relay.handle(Topic("#chan", "cats"))
    turns = joined.prompt("#chan")
    assert turns == [
        Turn("relaybot", "/join #chan"),
        Turn("system", "* Now talking in #chan"),
        Turn("system", "* Topic for #chan is: cats"),
    ]


def test_topic_change_recorded(joined: Harness):
    joined.relay.handle(Topic("#chan", "dogs", ALICE))
    turns = joined.relay.transcript("#chan")
    assert turns is not None
    assert turns.topic == Turn("system", "* Topic for #chan is: dogs")
    assert turns.turns == [
        Turn("alice", "/topic dogs"),
        Turn("system", "* Topic for #chan is: dogs"),
    ]


def test_message_for_unknown_channel_is_ignored(h: Harness):
    h.say(ALICE, "#nowhere", "relaybot: hi")
    assert h.jobs == []
    assert h.relay.transcripts == {}


# --- jobs -------------------------------------------------------------------------------------


def test_addressed_message_creates_one_job(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    assert len(joined.jobs) == 1
    job = joined.jobs[0]
    assert job.key == (NET, "#chan")
    assert job.reply_to == "#chan"
    assert job.speaker == "relaybot"
    assert job.request.params == SamplingParams()
    text = job.request.prompt.text
    assert text.endswith("<|im_start|>relaybot\n")
    assert text == (
        "<|im_start|>relaybot\n/join #chan<|im_end|>\n"
        "<|im_start|>system\n* Now talking in #chan<|im_end|>\n"
        "<|im_start|>alice\nrelaybot: hello<|im_end|>\n"
        "<|im_start|>relaybot\n"
    )
    assert job.log_context["channel"] == "#chan"
    assert job.log_context["nick"] == "alice"


def test_non_addressed_messages_create_no_job(joined: Harness):
    joined.say(ALICE, "#chan", "just chatting")
    joined.say(BOB, "#chan", "relaybots are neat")
    joined.relay.handle(Action(ALICE, "#chan", "pokes relaybot"))
    assert joined.jobs == []
    assert joined.prompt("#chan")[2:] == [
        Turn("alice", "just chatting"),
        Turn("bob", "relaybots are neat"),
        Turn("system", "* alice pokes relaybot"),
    ]


def test_chance_reply_uses_injected_random():
    harness = make_harness(reply=ReplyConfig(chance=0.5), random_value=0.1)
    harness.relay.handle(Join(BOT, "#chan"))
    harness.say(ALICE, "#chan", "chatter")
    assert len(harness.jobs) == 1
    quiet = make_harness(reply=ReplyConfig(chance=0.5), random_value=0.9)
    quiet.relay.handle(Join(BOT, "#chan"))
    quiet.say(ALICE, "#chan", "chatter")
    assert quiet.jobs == []


def test_own_messages_never_trigger_a_job(joined: Harness):
    joined.say(BOT, "#chan", "relaybot: talking to myself")
    assert joined.jobs == []


def test_one_job_in_flight_per_conversation(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: one")
    joined.say(BOB, "#chan", "relaybot: two")
    joined.say(ALICE, "#chan", "relaybot: three")
    assert len(joined.jobs) == 1
    joined.complete(joined.jobs[0], "answer one")
    assert len(joined.jobs) == 2  # exactly one more, for the newer lines
    second = joined.jobs[1]
    assert second.job_id != joined.jobs[0].job_id
    assert "relaybot: three<|im_end|>" in second.request.prompt.text
    assert "<|im_start|>relaybot\nanswer one<|im_end|>" in second.request.prompt.text
    joined.complete(second, "answer two")
    assert len(joined.jobs) == 2  # nothing else was asked meanwhile


def test_different_channels_are_independent(joined: Harness):
    joined.relay.handle(Join(BOT, "#other"))
    joined.say(ALICE, "#chan", "relaybot: one")
    joined.say(ALICE, "#other", "relaybot: two")
    assert [job.reply_to for job in joined.jobs] == ["#chan", "#other"]


def test_rejected_submit_does_not_block_later_jobs():
    harness = make_harness(accept=False)
    harness.relay.handle(Join(BOT, "#chan"))
    harness.say(ALICE, "#chan", "relaybot: one")
    assert harness.jobs == []
    assert harness.relay.in_flight() == 0


# --- completions ------------------------------------------------------------------------------


def test_completion_sends_lines(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "hi alice\nnice to see you")
    assert joined.sender.sent == [
        Sent("#chan", "hi alice", False),
        Sent("#chan", "nice to see you", False),
    ]
    # One answer, one turn: the bot's turn as the model wrote it.
    assert joined.prompt("#chan")[-1] == Turn("relaybot", "hi alice\nnice to see you")


def test_reply_enters_transcript_only_when_sent(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "hi alice")
    assert joined.sender.sent == [Sent("#chan", "hi alice", False)]
    assert Turn("relaybot", "hi alice") not in joined.prompt("#chan")
    joined.sender.flush()
    assert joined.prompt("#chan")[-1] == Turn("relaybot", "hi alice")


def test_a_reply_counts_for_status_once_its_last_line_is_written(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "hi alice\nnice to see you")
    assert len(joined.relay.speaking.reply_times) == 0  # queued, not written
    joined.sender.flush()
    assert len(joined.relay.speaking.reply_times) == 1


def test_lines_the_server_never_confirmed_leave_the_transcript(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "hi alice\nnice to see you")
    joined.say(BOB, "#chan", "hi all")
    assert joined.prompt("#chan")[-2:] == [
        Turn("relaybot", "hi alice\nnice to see you"),
        Turn("bob", "hi all"),
    ]
    # The connection died before the server confirmed the second line (newest first).
    joined.sender.unconfirmed.pop()()
    assert joined.prompt("#chan")[-2:] == [Turn("relaybot", "hi alice"), Turn("bob", "hi all")]
    joined.sender.unconfirmed.pop()()
    assert joined.prompt("#chan")[-2:] == [
        Turn(ALICE.nick, "relaybot: hello"),
        Turn("bob", "hi all"),
    ]


def test_a_line_delivered_after_someone_spoke_starts_a_turn_of_its_own(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "hi alice\nnice to see you")
    joined.sender.pending.pop(0)()
    joined.say(BOB, "#chan", "hi all")
    joined.sender.flush()
    # The context keeps the order the channel saw.
    assert joined.prompt("#chan")[-3:] == [
        Turn("relaybot", "hi alice"),
        Turn("bob", "hi all"),
        Turn("relaybot", "nice to see you"),
    ]


def sent_events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "reply_sent"]


def test_reply_sent_is_logged_when_the_last_line_is_written(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    job = joined.jobs[0]
    with capture_logs() as logs:
        joined.complete(job, "hi alice\n/join #evil\nnice to see you")
        assert len(joined.sender.sent) == 2 and len(joined.sender.pending) == 2
        assert sent_events(logs) == []  # queued, not written
        joined.sender.pending.pop(0)()  # the first line is written
        assert sent_events(logs) == []
        assert joined.prompt("#chan")[-1] == Turn("relaybot", "hi alice")
        joined.sender.flush()  # and the last
    assert sent_events(logs) == [
        {
            "event": "reply_sent",
            "log_level": "info",
            "component": "relay",
            "lines": 2,
            "seconds": 0.01,
            "job": job.job_id,
            "network": NET,
            "channel": "#chan",
            "nick": "alice",
        }
    ]
    assert joined.prompt("#chan")[-1] == Turn("relaybot", "hi alice\nnice to see you")


def test_reply_whose_lines_are_dropped_is_not_logged_as_sent(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    with capture_logs() as logs:
        joined.complete(joined.jobs[0], "hi alice\nnice to see you")
        joined.sender.pending.pop(0)()  # the first line is written; shutdown drops the rest
        joined.sender.pending.clear()
    assert sent_events(logs) == []
    assert joined.prompt("#chan")[-1] == Turn("relaybot", "hi alice")
    assert Turn("relaybot", "nice to see you") not in joined.prompt("#chan")


def test_reply_never_written_is_not_logged_as_sent(joined: Harness):
    joined.sender.deliver_now = False
    joined.say(ALICE, "#chan", "relaybot: hello")
    with capture_logs() as logs:
        joined.complete(joined.jobs[0], "/me waves")
        joined.sender.pending.clear()
    assert joined.sender.sent == [Sent("#chan", "waves", True)]
    assert sent_events(logs) == []
    assert joined.prompt("#chan")[-1] == Turn("alice", "relaybot: hello")


def test_reply_written_at_once_is_logged_as_sent(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    with capture_logs() as logs:
        joined.complete(joined.jobs[0], "/me waves\nhi")
    assert [entry["lines"] for entry in sent_events(logs)] == [2]


def test_reply_respects_max_lines():
    harness = make_harness(reply=ReplyConfig(max_lines=2))
    harness.relay.handle(Join(BOT, "#chan"))
    harness.say(ALICE, "#chan", "relaybot: count")
    harness.complete(harness.jobs[0], "one\ntwo\nthree\nfour")
    # What does not fit waits for `more`; the marker says so.
    assert [sent.text for sent in harness.sender.sent] == ["one", "two … (more)"]


def test_failed_completion_sends_nothing(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], None, "EngineError: out of memory")
    assert joined.sender.sent == []
    joined.say(ALICE, "#chan", "relaybot: again?")
    assert len(joined.jobs) == 2  # the conversation is not stuck in flight


def test_completion_for_parted_channel_sends_nothing(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.relay.handle(Part(BOT, "#chan"))
    assert joined.relay.transcript("#chan") is None
    joined.complete(joined.jobs[0], "too late")
    assert joined.sender.sent == []


def test_completion_after_kick_sends_nothing(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.relay.handle(Kick(ALICE, "#chan", "RelayBot", "bye"))
    joined.complete(joined.jobs[0], "too late")
    assert joined.sender.sent == []
    assert joined.relay.transcript("#chan") is None


def test_empty_completion_sends_nothing(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.complete(joined.jobs[0], "  \n\x00\x01\n")
    assert joined.sender.sent == []


def test_reply_speaks_as_current_nick(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hello")
    joined.sender.nick = "relaybot_"
    joined.complete(joined.jobs[0], "hi")
    assert joined.prompt("#chan")[-1] == Turn("relaybot_", "hi")


# --- routing: nothing leaks between channels --------------------------------------------------


def all_text(harness: Harness, name: str) -> str:
    return "\n".join(f"{t.role}: {t.content}" for t in harness.prompt(name))


def test_lines_never_cross_channels(h: Harness):
    h.relay.handle(Join(BOT, "#a"))
    h.relay.handle(Names("#a", ("relaybot", "@alice")))
    h.relay.handle(Join(BOT, "#b"))
    h.relay.handle(Names("#b", ("relaybot",)))
    h.relay.handle(Join(BOB, "#b"))

    h.say(ALICE, "#a", "secret of #a")
    h.relay.handle(Action(ALICE, "#a", "whispers in #a"))
    h.relay.handle(Topic("#a", "topic-a", ALICE))
    h.say(BOB, "#b", "hello from #b")

    h.relay.handle(NickChange(ALICE, "alicia"))
    h.relay.handle(Quit(Origin("alicia", "al", "a.example"), "gone"))
    h.relay.handle(Quit(BOB, "also gone"))

    text_a, text_b = all_text(h, "#a"), all_text(h, "#b")
    assert "secret of #a" in text_a and "secret of #a" not in text_b
    assert "whispers in #a" in text_a and "whispers" not in text_b
    assert "topic-a" in text_a and "topic-a" not in text_b
    assert "hello from #b" in text_b and "hello from #b" not in text_a
    assert "* alice is now known as alicia" in text_a and "alicia" not in text_b
    assert "* alicia has quit (gone)" in text_a and "has quit (gone)" not in text_b
    assert "* bob has quit (also gone)" in text_b and "bob" not in text_a


def test_quit_of_stranger_recorded_nowhere(joined: Harness):
    joined.relay.handle(Quit(CAROL, "bye"))
    joined.relay.handle(NickChange(CAROL, "caroline"))
    assert joined.prompt("#chan") == [
        Turn("relaybot", "/join #chan"),
        Turn("system", "* Now talking in #chan"),
    ]


def test_membership_follows_nick_changes(joined: Harness):
    joined.relay.handle(NickChange(ALICE, "alicia"))
    joined.relay.handle(Quit(ALICE, "old nick"))  # no longer a member under the old nick
    joined.relay.handle(Quit(Origin("alicia"), "new nick"))
    assert joined.prompt("#chan")[2:] == [
        Turn("system", "* alice is now known as alicia"),
        Turn("system", "* alicia has quit (new nick)"),
    ]


def test_part_and_kick_remove_membership(joined: Harness):
    joined.relay.handle(Part(ALICE, "#chan"))
    joined.relay.handle(Kick(ALICE, "#chan", "bob", "spam"))
    joined.relay.handle(Quit(ALICE))
    joined.relay.handle(Quit(BOB))
    assert joined.prompt("#chan")[2:] == [
        Turn("system", "* alice has left #chan"),
        Turn("system", "* bob was kicked by alice (spam)"),
    ]


def test_names_with_status_prefixes_and_casefolding(h: Harness):
    h.relay.handle(Join(BOT, "#chan"))
    h.relay.handle(Names("#chan", ("@Dan[1]", "~+Eve")))
    h.relay.handle(Quit(Origin("dan{1}"), "x"))
    h.relay.handle(Quit(Origin("EVE"), "y"))
    assert h.prompt("#chan")[2:] == [
        Turn("system", "* dan{1} has quit (x)"),
        Turn("system", "* EVE has quit (y)"),
    ]


# --- private queries --------------------------------------------------------------------------


def test_query_uses_trained_roles_and_replies_to_peer(h: Harness):
    h.say(ALICE, "relaybot", "hello there")
    assert len(h.jobs) == 1
    job = h.jobs[0]
    assert job.key == (NET, "alice")
    assert job.reply_to == "alice"
    assert job.speaker == "user"
    assert job.request.prompt.text == (
        "<|im_start|>anon\nhello there<|im_end|>\n<|im_start|>user\n"
    )
    h.complete(job, "hi!")
    assert h.sender.sent == [Sent("alice", "hi!", False)]
    transcript = h.relay.transcript("alice")
    assert transcript is not None
    assert transcript.turns == [Turn("anon", "hello there"), Turn("user", "hi!")]


def test_query_never_uses_real_nicks_as_roles(h: Harness):
    h.say(ALICE, "relaybot", "relaybot: hi, I am alice")
    prompt = h.jobs[0].request.prompt.text
    assert "<|im_start|>alice" not in prompt
    assert "<|im_start|>relaybot" not in prompt


def test_query_from_self_ignored(h: Harness):
    h.say(BOT, "relaybot", "echo")
    assert h.jobs == [] and h.relay.transcripts == {}


def test_query_disabled():
    harness = make_harness(reply=ReplyConfig(in_query=False))
    harness.say(ALICE, "relaybot", "hello")
    assert harness.jobs == []


def test_query_action_recorded_as_anon(h: Harness):
    h.relay.handle(Action(ALICE, "relaybot", "waves"))
    transcript = h.relay.transcript("alice")
    assert transcript is not None
    assert transcript.turns == [Turn("system", "* anon waves")]
    assert h.jobs == []


def test_query_action_is_cleaned(h: Harness):
    h.relay.handle(Action(ALICE, "relaybot", "\x02waves\x02\x00 "))
    transcript = h.relay.transcript("alice")
    assert transcript is not None
    assert transcript.turns == [Turn("system", "* anon waves")]


def test_query_follows_peer_nick_change(h: Harness):
    h.say(ALICE, "relaybot", "hello")
    h.complete(h.jobs[0], "hi")
    h.relay.handle(NickChange(ALICE, "alicia"))
    assert h.relay.transcript("alice") is None
    transcript = h.relay.transcript("alicia")
    assert transcript is not None
    assert transcript.turns == [Turn("anon", "hello"), Turn("user", "hi")]


# --- hostile model output ---------------------------------------------------------------------


def test_command_lines_are_not_sent(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: do stuff")
    joined.complete(joined.jobs[0], "/quit bye\n/join #evil\nfine")
    assert joined.sender.sent == [Sent("#chan", "fine", False)]
    assert "/quit" not in all_text(joined, "#chan")


def test_me_line_is_sent_as_action(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: wave")
    joined.complete(joined.jobs[0], "/me waves")
    assert joined.sender.sent == [Sent("#chan", "waves", True)]
    assert joined.prompt("#chan")[-1] == Turn("system", "* relaybot waves")


def test_injected_quit_is_only_text(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hi")
    joined.complete(joined.jobs[0], "hello\r\nQUIT :x\x00\r\n\x01PRIVMSG #other :spam\x01")
    texts = [sent.text for sent in joined.sender.sent]
    assert texts == ["hello", "QUIT :x", "PRIVMSG #other :spam"]
    for sent in joined.sender.sent:
        assert sent.target == "#chan"
        assert not sent.action
        for bad in ("\r", "\n", "\x00", "\x01"):
            assert bad not in sent.text


def test_long_reply_fits_with_action_wrapper(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: talk")
    joined.complete(joined.jobs[0], "/me " + "😀" * 400)
    budget = joined.sender.payload_budget("#chan")
    assert joined.sender.sent
    for sent in joined.sender.sent:
        body = f"\x01ACTION {sent.text}\x01" if sent.action else sent.text
        assert len(body.encode()) <= budget


def test_query_reply_in_flight_survives_peer_nick_change(h: Harness):
    h.say(ALICE, "relaybot", "hello")
    h.relay.handle(NickChange(ALICE, "alicia"))
    h.complete(h.jobs[0], "hi!")
    assert [sent.text for sent in h.sender.sent] == ["hi!"]


def test_forgetting_a_conversation_drops_the_engines_cached_prefix(joined: Harness):
    key = joined.relay.key("#CHAN")
    joined.relay.cancel(key)  # what reset and mute do
    joined.relay.forget("#chan")  # what part, kick and a lost channel do
    assert joined.queue.forgotten == [key, key]


# --- threading (IRCv3 +draft/reply) -----------------------------------------------------------


def test_a_reply_is_threaded_to_the_line_it_answers(joined: Harness):
    joined.relay.handle(Message(ALICE, "#chan", "relaybot: hi", "id-1"))
    joined.complete(joined.jobs[0], "hello\nthere")
    assert joined.sender.threads == ["id-1", "id-1"]


def test_a_reply_that_answers_newer_lines_threads_to_the_newest(joined: Harness):
    joined.relay.handle(Message(ALICE, "#chan", "relaybot: one", "id-1"))
    joined.relay.handle(Message(BOB, "#chan", "relaybot: two", "id-2"))  # while generating
    joined.complete(joined.jobs[0], "first")
    joined.complete(joined.jobs[1], "second")
    assert joined.sender.threads == ["id-1", "id-2"]


def test_a_line_without_msgid_gets_an_unthreaded_reply(joined: Harness):
    joined.say(ALICE, "#chan", "relaybot: hi")
    joined.complete(joined.jobs[0], "hello")
    assert joined.sender.threads == [None]
