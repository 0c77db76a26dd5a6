"""Unit tests for the operator-facing parts of relaybot.bridge.relay (commands, ignores, bots,
mutes, per-channel settings, personas, retry, concurrency, the reply gate, moderation, saved
contexts, channel status) and for relaybot.irc.translate.status_changes. No sockets, no model."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from irc.features import FeatureSet

from relaybot.bridge.relay import Relay
from relaybot.bridge.state import SavedContext
from relaybot.config.schema import PolicyConfig, ReplyConfig
from relaybot.conversation.formats import Prompt, Turn
from relaybot.inference.engine import SamplingParams
from relaybot.irc.events import (
    Action,
    Join,
    Names,
    NickChange,
    Origin,
    Part,
    StatusChange,
    Topic,
)
from relaybot.irc.translate import status_changes
from relaybot.moderation import Verdict
from tests.support.bridge import (
    ALICE,
    BOB,
    BOT,
    NET,
    OTHERBOT,
    FakeModeration,
    Harness,
    cooldown_timers,
    make_relay,
    words,
)

make = make_relay


@pytest.fixture
def h() -> Harness:
    harness = make(commands=True)
    harness.join("#chan", "alice", "bob")
    return harness


KEY = (NET, "#chan")


def set_settings(relay: Relay, **values: float | int | bool | None) -> None:
    for name, value in values.items():
        relay.operator_state.set_setting(KEY[1], name, value)


def prompt_tokens(prompt: Prompt) -> int:
    """The prompt's size as the model would count it: markup tokens count one each."""
    return sum(1 if segment.special else words(segment.text) for segment in prompt.segments)


# --- commands ---------------------------------------------------------------------------------


def test_channel_command_goes_to_on_command_not_the_context(h: Harness):
    h.say(ALICE, "#chan", "!relay mute 10m relaybot")
    assert [(m.text, channel) for m, channel in h.commands.seen] == [
        ("!relay mute 10m relaybot", "#chan")
    ]
    assert h.commands.seen[0][0].origin == ALICE
    assert h.turns("#chan") == []
    assert h.jobs == []


def test_query_command_goes_to_on_command_with_no_channel(h: Harness):
    h.say(ALICE, "relaybot", "!relay status")
    assert [(m.text, channel) for m, channel in h.commands.seen] == [("!relay status", None)]
    assert h.relay.transcript("alice") is None
    assert h.jobs == []


def test_non_command_lines_do_not_reach_on_command(h: Harness):
    h.say(ALICE, "#chan", "relaybot: hello")
    h.relay.handle(Action(ALICE, "#chan", "!relay status"))  # an action is never a command
    assert h.commands.seen == []
    assert [t.content for t in h.turns("#chan")] == ["relaybot: hello", "* alice !relay status"]
    assert len(h.jobs) == 1


def test_command_lines_are_ordinary_text_without_a_handler():
    harness = make()  # no operator commands wired: a command line is ordinary text
    harness.join("#chan")
    harness.say(ALICE, "#chan", "!relay relaybot")
    assert [t.content for t in harness.turns("#chan")] == ["!relay relaybot"]


# --- ignores and bots -------------------------------------------------------------------------


def test_ignored_origin_neither_recorded_nor_answered():
    harness = make(is_ignored=lambda origin: origin.nick == "alice")
    harness.join("#chan", "alice", "bob")
    harness.say(ALICE, "#chan", "relaybot: hello")
    harness.say(ALICE, "relaybot", "hello in private")
    harness.relay.handle(Action(ALICE, "#chan", "waves at relaybot"))
    assert harness.turns("#chan") == []
    assert harness.relay.transcript("alice") is None
    assert harness.jobs == []
    harness.say(BOB, "#chan", "relaybot: hello")
    assert len(harness.jobs) == 1


def test_ignored_origin_is_asked_about_with_the_full_origin():
    asked: list[Origin] = []

    def is_ignored(origin: Origin) -> bool:
        asked.append(origin)
        return False

    harness = make(is_ignored=is_ignored)
    harness.join("#chan")
    harness.say(ALICE, "#chan", "hi")
    assert asked == [ALICE]


def test_bot_line_is_recorded_but_never_answered():
    harness = make(reply=ReplyConfig(chance=1.0), random_value=0.0)
    harness.join("#chan", "otherbot")
    harness.say(OTHERBOT, "#chan", "relaybot: hello fellow bot")
    harness.say(OTHERBOT, "relaybot", "psst")
    assert [t.content for t in harness.turns("#chan")] == ["relaybot: hello fellow bot"]
    assert harness.relay.transcript("otherbot") is not None
    assert harness.jobs == []


def test_bot_lines_answered_when_ignore_bots_is_off():
    harness = make(ignore_bots=False)
    harness.join("#chan", "otherbot")
    harness.say(OTHERBOT, "#chan", "relaybot: hello")
    assert len(harness.jobs) == 1


# --- mutes ------------------------------------------------------------------------------------


def test_mute_blocks_new_replies(h: Harness):
    h.relay.operator_state.mute(KEY[1], math.inf)
    h.say(ALICE, "#chan", "relaybot: hello?")
    assert h.jobs == []
    assert [t.content for t in h.turns("#chan")] == ["relaybot: hello?"]  # still heard


def test_completion_arriving_while_muted_is_not_sent(h: Harness):
    h.say(ALICE, "#chan", "relaybot: hello")
    h.relay.operator_state.mute(KEY[1], 600)
    h.complete(h.jobs[0], "an answer nobody should see")
    assert h.sender.sent == []
    assert h.turns("#chan") == [Turn("alice", "relaybot: hello")]
    assert h.relay.in_flight() == 0


def test_mute_is_per_channel(h: Harness):
    h.join("#other")
    h.relay.operator_state.mute(KEY[1], math.inf)
    h.say(ALICE, "#other", "relaybot: hello")
    assert [job.reply_to for job in h.jobs] == ["#other"]


def test_expired_mute_replies_again(h: Harness):
    h.relay.operator_state.mute(KEY[1], 60)
    h.say(ALICE, "#chan", "relaybot: one")
    assert h.jobs == []
    h.wall.now += 59
    h.say(ALICE, "#chan", "relaybot: two")
    assert h.jobs == []
    h.wall.now += 1
    h.say(ALICE, "#chan", "relaybot: three")
    assert len(h.jobs) == 1
    assert KEY[1] not in h.relay.operator_state.snapshot.mutes
    h.complete(h.jobs[0], "back")
    assert h.texts() == ["back"]


def test_indefinite_mute_never_expires(h: Harness):
    h.relay.operator_state.mute(KEY[1], math.inf)
    h.wall.now += 1e12
    assert h.relay.is_muted(KEY)
    h.say(ALICE, "#chan", "relaybot: hello")
    assert h.jobs == []


def test_mute_with_cancel_drops_the_follow_up_request(h: Harness):
    """What the bot's mute does: set the mute and cancel what is pending."""
    h.say(ALICE, "#chan", "relaybot: one")
    h.say(BOB, "#chan", "relaybot: two")  # waits for the first reply
    h.relay.operator_state.mute(KEY[1], math.inf)
    h.relay.cancel(KEY)
    h.complete(h.jobs[0], "late")
    assert h.sender.sent == []
    assert len(h.jobs) == 1
    assert h.relay.in_flight() == 0


def test_muted_channel_starts_no_follow_up_job(h: Harness):
    """A request that waited for the in-flight reply must not start a new job once muted."""
    h.say(ALICE, "#chan", "relaybot: one")
    h.say(BOB, "#chan", "relaybot: two")
    h.relay.operator_state.mute(KEY[1], math.inf)
    h.complete(h.jobs[0], "late")
    assert h.sender.sent == []
    assert len(h.jobs) == 1


# --- per-channel settings ---------------------------------------------------------------------


def test_settings_change_the_jobs_sampling_params(h: Harness):
    set_settings(h.relay, temperature=0.9, top_p=0.5, top_k=7, max_new_tokens=33)
    h.join("#other")
    h.say(ALICE, "#chan", "relaybot: hi")
    h.say(ALICE, "#other", "relaybot: hi")
    chan, other = (job.request.params for job in h.jobs)
    assert chan == SamplingParams(temperature=0.9, top_p=0.5, top_k=7, max_new_tokens=33)
    assert other == SamplingParams()


def test_each_job_asks_for_the_model_chosen_for_its_conversation(h: Harness):
    h.join("#other")
    h.join("#third")
    h.relay.operator_state.set_model(None, "net-wide")
    h.relay.operator_state.set_model("#chan", "chan-only")
    h.say(ALICE, "#chan", "relaybot: hi")
    h.say(ALICE, "#other", "relaybot: hi")
    h.relay.operator_state.set_model(None, None)
    h.say(ALICE, "#third", "relaybot: hi")
    assert [job.request.model for job in h.jobs] == ["chan-only", "net-wide", None]


def test_setting_temperature_zero_is_an_override_not_a_default(h: Harness):
    set_settings(h.relay, temperature=0.0, top_k=0)
    h.say(ALICE, "#chan", "relaybot: hi")
    assert h.jobs[0].request.params.temperature == 0.0
    assert h.jobs[0].request.params.top_k == 0


def test_setting_max_lines():
    harness = make(reply=ReplyConfig(max_lines=3))
    harness.join("#chan")
    harness.join("#other")
    set_settings(harness.relay, max_lines=1)
    harness.say(ALICE, "#chan", "relaybot: count")
    harness.say(ALICE, "#other", "relaybot: count")
    harness.complete(harness.jobs[0], "one\ntwo\nthree\nfour")
    harness.complete(harness.jobs[1], "one\ntwo\nthree\nfour")
    assert [(s.target, s.text) for s in harness.sender.sent] == [
        ("#chan", "one … (more)"),
        ("#other", "one"),
        ("#other", "two"),
        ("#other", "three … (more)"),
    ]


def test_setting_chance_makes_the_bot_chime_in():
    harness = make(reply=ReplyConfig(chance=0.0), random_value=0.5)
    harness.join("#chan")
    harness.say(ALICE, "#chan", "just chatting")
    assert harness.jobs == []
    set_settings(harness.relay, chance=0.6)
    harness.say(ALICE, "#chan", "still chatting")
    assert len(harness.jobs) == 1


def test_setting_chance_zero_overrides_configured_chance():
    harness = make(reply=ReplyConfig(chance=1.0), random_value=0.0)
    harness.join("#chan")
    set_settings(harness.relay, chance=0.0)
    harness.say(ALICE, "#chan", "just chatting")
    assert harness.jobs == []


def test_setting_on_mention_off(h: Harness):
    set_settings(h.relay, on_mention=False)
    h.say(ALICE, "#chan", "relaybot: hello?")
    assert h.jobs == []
    set_settings(h.relay, on_mention=None)
    h.say(ALICE, "#chan", "relaybot: now?")
    assert len(h.jobs) == 1


def test_setting_on_mention_on_overrides_config():
    harness = make(reply=ReplyConfig(on_mention=False))
    harness.join("#chan")
    harness.say(ALICE, "#chan", "relaybot: hello?")
    assert harness.jobs == []
    set_settings(harness.relay, on_mention=True)
    harness.say(ALICE, "#chan", "relaybot: hello again?")
    assert len(harness.jobs) == 1


def test_prompt_fits_the_window_with_a_channel_max_new_tokens_override():
    """Control: with the configured max_new_tokens the prompt leaves room for the reply."""
    harness = make(context_window=400, params=SamplingParams(max_new_tokens=50))
    harness.join("#chan")
    for i in range(120):
        harness.say(ALICE, "#chan", f"line {i} some filler words")
    harness.say(ALICE, "#chan", "relaybot: go")
    job = harness.jobs[0]
    assert prompt_tokens(job.request.prompt) + job.request.params.max_new_tokens <= 400


def test_prompt_leaves_room_for_a_larger_channel_max_new_tokens():
    harness = make(context_window=400, params=SamplingParams(max_new_tokens=50))
    harness.join("#chan")
    set_settings(harness.relay, max_new_tokens=300)
    for i in range(120):
        harness.say(ALICE, "#chan", f"line {i} some filler words")
    harness.say(ALICE, "#chan", "relaybot: go")
    job = harness.jobs[0]
    assert job.request.params.max_new_tokens == 300
    # Otherwise the engine cuts the oldest prompt tokens: the never-trimmed header first.
    assert prompt_tokens(job.request.prompt) + job.request.params.max_new_tokens <= 400


# --- personas (cast) --------------------------------------------------------------------------


def cast_header(nick: str, bio: str, caster: str = "alice") -> list[Turn]:
    return [Turn(caster, f"/whois {nick}"), Turn("system", f"* {nick}'s bio: {bio}")]


def test_cast_appears_in_the_header_and_prompt(h: Harness):
    h.relay.set_cast("#chan", "alice", "a grumpy pirate")
    transcript = h.relay.transcript("#chan")
    assert transcript is not None
    assert transcript.header[2:] == cast_header("relaybot", "a grumpy pirate")
    h.say(ALICE, "#chan", "relaybot: ahoy")
    text = h.jobs[0].request.prompt.text
    assert "<|im_start|>alice\n/whois relaybot<|im_end|>" in text
    assert "<|im_start|>system\n* relaybot's bio: a grumpy pirate<|im_end|>" in text
    assert text.index("/whois relaybot") < text.index("relaybot: ahoy")


def test_cast_before_join_applies_on_join():
    harness = make()
    harness.relay.set_cast("#chan", "alice", "a poet")
    harness.join("#chan")
    transcript = harness.relay.transcript("#chan")
    assert transcript is not None
    assert transcript.header[2:] == cast_header("relaybot", "a poet")


def test_cast_bio_is_one_safe_line(h: Harness):
    h.relay.set_cast("#chan", "alice", "line one\r\nPRIVMSG #x :spam\x00\x02")
    transcript = h.relay.transcript("#chan")
    assert transcript is not None
    bio = transcript.header[-1].content
    for bad in "\r\n\x00\x02":
        assert bad not in bio


def test_removing_the_cast(h: Harness):
    h.relay.set_cast("#chan", "alice", "a poet")
    h.relay.set_cast("#chan", "alice", None)
    transcript = h.relay.transcript("#chan")
    assert transcript is not None
    assert len(transcript.header) == 2
    assert h.relay.operator_state.cast(KEY[1]) is None


def test_cast_survives_trimming():
    harness = make(context_window=200, params=SamplingParams(max_new_tokens=20))
    harness.join("#chan")
    harness.relay.set_cast("#chan", "alice", "a grumpy pirate")
    for i in range(200):
        harness.say(ALICE, "#chan", f"filler line number {i}")
    harness.say(ALICE, "#chan", "relaybot: still a pirate?")
    prompt = harness.jobs[0].request.prompt.text
    assert "filler line number 0<" not in prompt  # trimming did happen
    assert "* relaybot's bio: a grumpy pirate" in prompt
    assert "/whois relaybot" in prompt
    assert "relaybot: still a pirate?" in prompt


def test_cast_follows_the_bots_nick_change(h: Harness):
    h.relay.set_cast("#chan", "alice", "a poet")
    h.sender.nick = "poetbot"  # the session updates its nick before the event arrives
    h.relay.handle(NickChange(BOT, "poetbot"))
    transcript = h.relay.transcript("#chan")
    assert transcript is not None
    assert transcript.header == [
        Turn("poetbot", "/join #chan"),
        Turn("system", "* Now talking in #chan"),
        *cast_header("poetbot", "a poet"),
    ]
    h.say(ALICE, "#chan", "poetbot: recite")
    assert "* poetbot's bio: a poet" in h.jobs[0].request.prompt.text
    assert "relaybot's bio" not in h.jobs[0].request.prompt.text


def test_cast_is_per_channel(h: Harness):
    h.join("#other")
    h.relay.set_cast("#chan", "alice", "a poet")
    transcript = h.relay.transcript("#other")
    assert transcript is not None
    assert len(transcript.header) == 2


# --- retry ------------------------------------------------------------------------------------


def test_retry_drops_the_bots_last_reply_and_regenerates(h: Harness):
    h.say(ALICE, "#chan", "relaybot: tell me a joke")
    h.complete(h.jobs[0], "why did the\n/me laughs")
    assert h.turns("#chan")[-2:] == [
        Turn("relaybot", "why did the"),
        Turn("system", "* relaybot laughs"),
    ]
    assert h.relay.retry("#chan")
    assert h.turns("#chan") == [Turn("alice", "relaybot: tell me a joke")]
    assert len(h.jobs) == 2
    job = h.jobs[1]
    assert job.key == KEY and job.reply_to == "#chan" and job.speaker == "relaybot"
    assert "why did the" not in job.request.prompt.text
    h.complete(job, "a better joke")
    assert h.turns("#chan")[-1] == Turn("relaybot", "a better joke")


def test_retry_keeps_other_peoples_lines(h: Harness):
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "hello")
    h.say(BOB, "#chan", "nice")
    assert h.relay.retry("#chan")
    assert h.turns("#chan") == [
        Turn("alice", "relaybot: hi"),
        Turn("relaybot", "hello"),
        Turn("bob", "nice"),
    ]


def test_retry_spends_no_budget():
    harness = make(policy=PolicyConfig(cooldown=3600.0, user_burst=1, channel_burst=1))
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: hi")
    harness.complete(harness.jobs[0], "hello")
    harness.say(ALICE, "#chan", "relaybot: again")
    assert len(harness.jobs) == 1  # the gate refuses alice
    assert harness.relay.retry("#chan")
    assert len(harness.jobs) == 2


def test_retry_without_context():
    harness = make()
    assert not harness.relay.retry("#nowhere")
    assert harness.jobs == []


def test_retry_while_a_reply_is_in_flight_waits_for_it(h: Harness):
    h.say(ALICE, "#chan", "relaybot: hi")
    assert h.relay.retry("#chan")
    assert len(h.jobs) == 1  # still one per conversation
    h.complete(h.jobs[0], "hello")
    assert len(h.jobs) == 2


def test_retry_with_identical_text_keeps_the_context_true(h: Harness):
    h.say(ALICE, "#chan", "relaybot: hi")
    h.complete(h.jobs[0], "hello")
    assert h.relay.retry("#chan")
    h.complete(h.jobs[1], "hello")  # e.g. temperature 0 or a fixed seed
    # Either it is sent again or the context still holds what the channel saw.
    assert Turn("relaybot", "hello") in h.turns("#chan")


def test_retry_in_a_query_keeps_the_query_roles(h: Harness):
    h.say(ALICE, "relaybot", "hi")
    h.complete(h.jobs[0], "hello")
    if h.relay.retry("alice"):
        assert h.turns("alice") == [Turn("anon", "hi")]
        assert h.jobs[-1].speaker == "user"
        assert "<|im_start|>relaybot" not in h.jobs[-1].request.prompt.text
    else:
        assert len(h.jobs) == 1


# --- concurrency ------------------------------------------------------------------------------


def test_second_conversation_waits_for_a_slot():
    harness = make(max_concurrent=1)
    harness.join("#a")
    harness.join("#b")
    harness.say(ALICE, "#a", "relaybot: one")
    harness.say(ALICE, "#b", "relaybot: two")
    assert [job.reply_to for job in harness.jobs] == ["#a"]
    assert (harness.relay.in_flight(), harness.relay.waiting()) == (1, 1)
    harness.complete(harness.jobs[0], "first")
    assert [job.reply_to for job in harness.jobs] == ["#a", "#b"]
    assert (harness.relay.in_flight(), harness.relay.waiting()) == (1, 0)
    harness.complete(harness.jobs[1], "second")
    assert harness.texts() == ["first", "second"]
    assert (harness.relay.in_flight(), harness.relay.waiting()) == (0, 0)


def test_waiting_job_sees_lines_said_while_it_waited():
    harness = make(max_concurrent=1)
    harness.join("#a")
    harness.join("#b")
    harness.say(ALICE, "#a", "relaybot: one")
    harness.say(ALICE, "#b", "relaybot: two")
    harness.say(BOB, "#b", "and meanwhile this")
    harness.complete(harness.jobs[0], "first")
    assert "and meanwhile this" in harness.jobs[1].request.prompt.text


def test_waiting_queue_drops_the_oldest():
    harness = make(max_concurrent=1, max_waiting=1)
    for channel in ("#a", "#b", "#c"):
        harness.join(channel)
    harness.say(ALICE, "#a", "relaybot: a")
    harness.say(ALICE, "#b", "relaybot: b")
    harness.say(ALICE, "#c", "relaybot: c")
    assert harness.relay.waiting() == 1
    harness.complete(harness.jobs[0], "for a")
    assert [job.reply_to for job in harness.jobs] == ["#a", "#c"]
    harness.complete(harness.jobs[1], "for c")
    assert [job.reply_to for job in harness.jobs] == ["#a", "#c"]  # #b was dropped


def test_newer_request_replaces_the_waiting_one():
    harness = make(max_concurrent=1)
    harness.join("#a")
    harness.join("#b")
    harness.say(ALICE, "#a", "relaybot: a")
    harness.say(ALICE, "#b", "relaybot: first")
    harness.say(BOB, "#b", "relaybot: second")
    assert harness.relay.waiting() == 1
    harness.complete(harness.jobs[0], "for a")
    assert len(harness.jobs) == 2
    assert harness.jobs[1].log_context["nick"] == "bob"
    harness.complete(harness.jobs[1], "for b")
    assert len(harness.jobs) == 2  # one entry per conversation: no second job for #b


def test_waiting_conversation_that_is_left_never_starts():
    harness = make(max_concurrent=1)
    harness.join("#a")
    harness.join("#b")
    harness.say(ALICE, "#a", "relaybot: a")
    harness.say(ALICE, "#b", "relaybot: b")
    harness.relay.handle(Part(BOT, "#b"))
    assert harness.relay.waiting() == 0
    harness.complete(harness.jobs[0], "for a")
    assert len(harness.jobs) == 1


def test_cancel_frees_the_slot_for_a_waiting_conversation():
    harness = make(max_concurrent=1)
    harness.join("#a")
    harness.join("#b")
    harness.say(ALICE, "#a", "relaybot: a")
    harness.say(ALICE, "#b", "relaybot: b")
    harness.relay.cancel((NET, "#a"))
    assert [job.reply_to for job in harness.jobs] == ["#a", "#b"]
    harness.complete(harness.jobs[0], "stale answer for a")
    assert harness.sender.sent == []


# --- the reply gate ---------------------------------------------------------------------------


def test_gate_cooldown_prevents_a_job():
    harness = make(policy=PolicyConfig(cooldown=10.0))
    harness.join("#chan", "alice", "bob")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer one")
    harness.clock.now += 5
    harness.say(BOB, "#chan", "relaybot: two")
    assert len(harness.jobs) == 1
    harness.clock.now += 5
    harness.say(BOB, "#chan", "relaybot: three")
    assert len(harness.jobs) == 2


def test_a_request_during_cooldown_is_answered_once_it_passes():
    timers: list[tuple[float, Callable[[], None]]] = []
    harness = make(
        policy=PolicyConfig(cooldown=10.0),
        timers=cooldown_timers(lambda delay, fn: timers.append((delay, fn))),
    )
    harness.join("#chan", "alice", "bob")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer one")
    harness.clock.now += 4
    harness.say(BOB, "#chan", "relaybot: two")
    harness.say(BOB, "#chan", "relaybot: two, again")  # one deferral per conversation
    assert len(harness.jobs) == 1
    assert len(timers) == 1 and 5.9 < timers[0][0] < 6.1
    harness.clock.now += 6.1
    timers[0][1]()
    assert len(harness.jobs) == 2
    assert "relaybot: two, again" in harness.jobs[1].request.prompt.text


@pytest.mark.parametrize("completed_before_the_timer", [True, False])
def test_a_deferred_request_is_consumed_by_a_reply_that_starts_before_its_timer(
    completed_before_the_timer: bool,
):
    """q1 comes during the cooldown (deferred); q2 comes once the cooldown is over but before
    the deferral's timer has run, and starts a reply that answers both. The stale timer must
    then do nothing: no second reply, no second charge, no new deferral."""
    timers: list[tuple[float, Callable[[], None]]] = []  # (due on harness.clock, callback)
    harness = make(
        policy=PolicyConfig(cooldown=2.0),
        timers=cooldown_timers(lambda delay, fn: timers.append((harness.clock.now + delay, fn))),
    )

    def run_timers(until: float) -> None:
        while due := sorted((t for t in timers if t[0] <= until), key=lambda t: t[0]):
            timers.remove(due[0])
            harness.clock.now = max(harness.clock.now, due[0][0])
            due[0][1]()
        harness.clock.now = max(harness.clock.now, until)

    start = harness.clock.now
    harness.join("#chan", "alice", "bob")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer one")
    harness.clock.now = start + 1.0
    harness.say(ALICE, "#chan", "relaybot: q1")  # during the cooldown: deferred
    assert len(harness.jobs) == 1 and len(timers) == 1
    harness.clock.now = start + 2.005  # the cooldown is over; the timer (2.01) has not run
    harness.say(BOB, "#chan", "relaybot: q2")
    assert len(harness.jobs) == 2
    answer = harness.jobs[1]
    assert "relaybot: q1" in answer.request.prompt.text
    assert "relaybot: q2" in answer.request.prompt.text
    if completed_before_the_timer:
        harness.complete(answer, "answer to both")
    run_timers(start + 2.01)
    if not completed_before_the_timer:
        harness.complete(answer, "answer to both")
    run_timers(start + 60.0)  # whatever got scheduled meanwhile, and long past any cooldown
    assert len(harness.jobs) == 2
    assert harness.texts() == ["answer one", "answer to both"]
    assert timers == []
    assert harness.relay.in_flight() == 0 and harness.relay.waiting() == 0
    harness.say(ALICE, "#chan", "relaybot: q3")  # a genuinely new line is answered
    assert len(harness.jobs) == 3
    assert "relaybot: q3" in harness.jobs[2].request.prompt.text


def test_a_reply_started_by_retry_consumes_the_deferred_request():
    timers: list[tuple[float, Callable[[], None]]] = []
    harness = make(
        policy=PolicyConfig(cooldown=2.0),
        timers=cooldown_timers(lambda delay, fn: timers.append((delay, fn))),
    )
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer one")
    harness.clock.now += 1.0
    harness.say(ALICE, "#chan", "relaybot: two")  # deferred
    assert harness.relay.retry("#chan")  # ungated: starts now, and sees "two"
    assert len(harness.jobs) == 2
    harness.complete(harness.jobs[1], "a better answer")
    harness.clock.now += 1.01
    timers.pop(0)[1]()
    harness.clock.now += 60.0
    while timers:
        timers.pop(0)[1]()
    assert len(harness.jobs) == 2


def test_a_deferred_request_is_dropped_when_the_channel_is_reset_meanwhile():
    timers: list[tuple[float, Callable[[], None]]] = []
    harness = make(
        policy=PolicyConfig(cooldown=10.0),
        timers=cooldown_timers(lambda delay, fn: timers.append((delay, fn))),
    )
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer one")
    harness.say(ALICE, "#chan", "relaybot: two")
    harness.relay.cancel(KEY)
    harness.clock.now += 11
    timers[0][1]()
    assert len(harness.jobs) == 1


def test_gate_repeated_line_is_not_answered():
    harness = make(policy=PolicyConfig(cooldown=0.0))
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: ping")
    harness.complete(harness.jobs[0], "pong")
    harness.say(ALICE, "#chan", "relaybot: ping")
    assert len(harness.jobs) == 1
    assert [t.content for t in harness.turns("#chan")].count("relaybot: ping") == 2


def test_gate_user_budget_keys_are_casefolded():
    harness = make(policy=PolicyConfig(cooldown=0.0, user_burst=1, user_per_minute=0.0))
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: one")
    harness.complete(harness.jobs[0], "answer")
    harness.relay.handle(NickChange(ALICE, "ALICE"))
    harness.say(Origin("ALICE", "al", "a.example"), "#chan", "relaybot: two")
    assert len(harness.jobs) == 1


def test_gate_loop_guard_stops_a_bot_conversation():
    harness = make(policy=PolicyConfig(cooldown=0.0, loop_limit=2), ignore_bots=False)
    harness.join("#chan", "otherbot")
    for i in range(4):
        harness.say(OTHERBOT, "#chan", f"relaybot: round {i}")
        if len(harness.jobs) > i:
            harness.complete(harness.jobs[i], f"reply {i}")
    assert len(harness.jobs) == 2


def test_gate_not_consulted_for_unaddressed_lines():
    harness = make(policy=PolicyConfig(cooldown=0.0, user_burst=1, user_per_minute=0.0))
    harness.join("#chan", "alice")
    for i in range(5):
        harness.say(ALICE, "#chan", f"chatter {i}")
    harness.say(ALICE, "#chan", "relaybot: now")
    assert len(harness.jobs) == 1


def test_gate_applies_to_queries():
    harness = make(policy=PolicyConfig(cooldown=60.0))
    harness.say(ALICE, "relaybot", "hi")
    harness.complete(harness.jobs[0], "hello")
    harness.say(ALICE, "relaybot", "again")
    assert len(harness.jobs) == 1


# --- moderation -------------------------------------------------------------------------------


def moderated() -> tuple[Harness, FakeModeration]:
    moderation = FakeModeration()
    harness = make(moderation=moderation)
    harness.join("#chan", "alice", "@bob")
    return harness, moderation


def test_input_block_keeps_the_line_out():
    harness, moderation = moderated()
    moderation.input_rules["badword"] = Verdict.block("rude")
    harness.say(ALICE, "#chan", "relaybot: badword")
    harness.say(ALICE, "relaybot", "badword in private")
    assert harness.turns("#chan") == []
    assert harness.relay.transcript("alice") is None
    assert harness.jobs == []


def test_input_replace_records_the_replacement():
    harness, moderation = moderated()
    moderation.input_rules["badword"] = Verdict.replace("relaybot: [removed]")
    harness.say(ALICE, "#chan", "relaybot: badword")
    assert harness.turns("#chan") == [Turn("alice", "relaybot: [removed]")]
    assert "badword" not in harness.jobs[0].request.prompt.text


def test_input_replace_in_a_query():
    harness, moderation = moderated()
    moderation.input_rules["badword"] = Verdict.replace("[removed]")
    harness.say(ALICE, "relaybot", "badword")
    transcript = harness.relay.transcript("alice")
    assert transcript is not None
    assert transcript.turns == [Turn("anon", "[removed]")]


def test_input_moderation_context():
    harness, moderation = moderated()
    harness.say(ALICE, "#chan", "hello")
    harness.say(ALICE, "relaybot", "private hello")
    (_, channel), (_, private) = moderation.inputs
    assert (channel.network, channel.target, channel.nick, channel.private) == (
        NET,
        "#chan",
        "alice",
        False,
    )
    assert channel.members == frozenset({"relaybot", "alice", "bob"})
    assert (private.target, private.nick, private.private) == ("alice", "alice", True)


def test_input_moderation_sees_actions():
    harness, moderation = moderated()
    moderation.input_rules["badword"] = Verdict.block("rude")
    harness.relay.handle(Action(ALICE, "#chan", "says badword"))
    assert harness.turns("#chan") == []


def test_output_block_sends_and_records_nothing():
    harness, moderation = moderated()
    moderation.output_rules["secret"] = Verdict.block("leak")
    harness.say(ALICE, "#chan", "relaybot: tell me")
    harness.complete(harness.jobs[0], "the secret is 42")
    assert harness.sender.sent == []
    assert harness.turns("#chan") == [Turn("alice", "relaybot: tell me")]
    (_, context) = moderation.outputs[0]
    assert (context.target, context.nick, context.private) == ("#chan", "relaybot", False)


def test_output_replace_sends_the_replacement():
    harness, moderation = moderated()
    moderation.output_rules["secret"] = Verdict.replace("I can't say.")
    harness.say(ALICE, "#chan", "relaybot: tell me")
    harness.complete(harness.jobs[0], "the secret is 42")
    assert harness.texts() == ["I can't say."]
    assert harness.turns("#chan")[-1] == Turn("relaybot", "I can't say.")


def test_output_replacement_is_still_made_safe():
    harness, moderation = moderated()
    moderation.output_rules["x"] = Verdict.replace("ok\r\nQUIT :bye\n/join #evil")
    harness.say(ALICE, "#chan", "relaybot: x")
    harness.complete(harness.jobs[0], "x")
    assert harness.texts() == ["ok", "QUIT :bye"]


# --- repeated replies -------------------------------------------------------------------------


def test_identical_reply_not_sent_twice_in_a_row(h: Harness):
    h.say(ALICE, "#chan", "relaybot: one")
    h.complete(h.jobs[0], "Same  answer")
    h.say(BOB, "#chan", "relaybot: two")
    h.complete(h.jobs[1], "same answer")
    assert h.texts() == ["Same  answer"]
    assert [t.content for t in h.turns("#chan")].count("Same  answer") == 1
    h.say(ALICE, "#chan", "relaybot: three")
    h.complete(h.jobs[2], "something else")
    assert h.texts() == ["Same  answer", "something else"]


def test_identical_reply_in_another_channel_is_sent(h: Harness):
    h.join("#other")
    h.say(ALICE, "#chan", "relaybot: one")
    h.say(ALICE, "#other", "relaybot: one")
    h.complete(h.jobs[0], "hello")
    h.complete(h.jobs[1], "hello")
    assert [(s.target, s.text) for s in h.sender.sent] == [("#chan", "hello"), ("#other", "hello")]


# --- saved contexts ---------------------------------------------------------------------------


def test_saved_context_restored_on_own_join():
    harness = make()
    saved = SavedContext(
        name="#Chan",
        header=(Turn("oldnick", "/join #Chan"),),
        topic="cats",
        turns=(Turn("alice", "earlier"), Turn("relaybot", "I remember")),
    )
    harness.relay.saved[KEY] = saved
    harness.relay.handle(Join(ALICE, "#chan"))  # someone else's join restores nothing
    assert KEY in harness.relay.saved
    harness.relay.handle(Join(BOT, "#Chan"))
    transcript = harness.relay.transcript("#chan")
    assert transcript is not None
    assert transcript.turns == [Turn("alice", "earlier"), Turn("relaybot", "I remember")]
    assert transcript.topic == Turn("system", "* Topic for #Chan is: cats")
    assert transcript.header[0] == Turn("relaybot", "/join #Chan")  # rebuilt, not the saved one
    assert KEY not in harness.relay.saved
    harness.say(ALICE, "#chan", "relaybot: remember?")
    assert "I remember" in harness.jobs[0].request.prompt.text


def test_saved_context_only_for_its_channel():
    harness = make()
    harness.relay.saved[KEY] = SavedContext(name="#chan", turns=(Turn("alice", "earlier"),))
    harness.join("#other")
    assert harness.turns("#other") == []
    assert KEY in harness.relay.saved


def test_saved_contexts_round_trip(h: Harness):
    h.relay.handle(Topic("#chan", "dogs"))
    h.relay.set_cast("#chan", "alice", "a poet")
    h.say(ALICE, "#chan", "hello")
    h.say(ALICE, "relaybot", "a private line")
    h.wall.now = 12345.0
    saved = dict(h.relay.saved_contexts())
    assert list(saved) == [KEY]  # queries are not saved
    context = saved[KEY]
    assert context.name == "#chan"
    assert context.topic == "dogs"
    assert context.turns == (Turn("alice", "hello"),)
    assert context.saved_at == 12345.0
    assert context.header[2:] == tuple(cast_header("relaybot", "a poet"))

    fresh = make()
    fresh.relay.saved[KEY] = context
    fresh.relay.set_cast("#chan", "alice", "a poet")
    fresh.join("#chan")
    assert fresh.prompt("#chan") == h.prompt("#chan")


# --- channel status ---------------------------------------------------------------------------


def test_names_sets_status(h: Harness):
    h.relay.handle(Names("#chan", ("@+carol", "~dave", "erin")))
    assert h.relay.status_of("#chan", "carol") == "@+"
    assert h.relay.status_of("#CHAN", "DAVE") == "~"
    assert h.relay.status_of("#chan", "erin") == ""
    assert h.relay.status_of("#chan", "nobody") == ""
    assert h.relay.status_of("#nowhere", "carol") == ""


def test_status_change_updates_status_of(h: Harness):
    h.relay.handle(StatusChange("#chan", "alice", "@", True))
    assert h.relay.status_of("#chan", "alice") == "@"
    h.relay.handle(StatusChange("#chan", "ALICE", "+", True))
    assert set(h.relay.status_of("#chan", "alice")) == {"@", "+"}
    h.relay.handle(StatusChange("#chan", "alice", "@", False))
    assert h.relay.status_of("#chan", "alice") == "+"
    h.relay.handle(StatusChange("#chan", "alice", "+", False))
    assert h.relay.status_of("#chan", "alice") == ""


def test_status_change_twice_is_idempotent(h: Harness):
    h.relay.handle(StatusChange("#chan", "alice", "@", True))
    h.relay.handle(StatusChange("#chan", "alice", "@", True))
    assert h.relay.status_of("#chan", "alice") == "@"
    h.relay.handle(StatusChange("#chan", "alice", "@", False))
    h.relay.handle(StatusChange("#chan", "alice", "@", False))
    assert h.relay.status_of("#chan", "alice") == ""


def test_status_change_for_a_stranger_adds_no_member(h: Harness):
    h.relay.handle(StatusChange("#chan", "mallory", "@", True))
    assert h.relay.status_of("#chan", "mallory") == ""
    assert "mallory" not in h.relay.members.of(KEY)
    h.relay.handle(StatusChange("#nowhere", "alice", "@", True))
    assert h.relay.status_of("#nowhere", "alice") == ""


def test_status_follows_nick_change_and_ends_on_part(h: Harness):
    h.relay.handle(StatusChange("#chan", "alice", "@", True))
    h.relay.handle(NickChange(ALICE, "alicia"))
    assert h.relay.status_of("#chan", "alicia") == "@"
    assert h.relay.status_of("#chan", "alice") == ""
    h.relay.handle(Part(Origin("alicia", "al", "a.example"), "#chan"))
    assert h.relay.status_of("#chan", "alicia") == ""
    h.relay.handle(Join(Origin("alicia", "al", "a.example"), "#chan"))
    assert h.relay.status_of("#chan", "alicia") == ""  # rejoining gives no status back


# --- translate.status_changes -----------------------------------------------------------------


@pytest.fixture
def features() -> FeatureSet:
    features = FeatureSet()
    features.load(["nick", "PREFIX=(qaohv)~&@%+", "CHANMODES=beI,k,l,imnpst", "are supported"])
    return features


@pytest.mark.parametrize(
    ("modes", "params", "expected"),
    [
        ("+o", ["alice"], [("alice", "@", True)]),
        ("-o", ["alice"], [("alice", "@", False)]),
        ("+ov-k", ["alice", "bob", "key"], [("alice", "@", True), ("bob", "+", True)]),
        ("+lk", ["10", "key"], []),
        ("-l+o", ["alice"], [("alice", "@", True)]),
        ("+l-o", ["10", "alice"], [("alice", "@", False)]),
        ("+b", ["mask"], []),
        ("+bo", ["*!*@x", "alice"], [("alice", "@", True)]),
        ("-k+v", ["key", "bob"], [("bob", "+", True)]),
        ("+qah", ["a", "b", "c"], [("a", "~", True), ("b", "&", True), ("c", "%", True)]),
        ("+mo", ["alice"], [("alice", "@", True)]),  # type D modes take no parameter
        ("+oo", ["alice"], [("alice", "@", True)]),  # parameters run out
        ("+o", [], []),
        ("+ov", ["alice"], [("alice", "@", True)]),
        ("+o-o", ["alice", "alice"], [("alice", "@", True), ("alice", "@", False)]),
        ("o", ["alice"], [("alice", "@", True)]),  # no sign means adding
        ("", ["alice"], []),
    ],
)
def test_status_changes(
    features: FeatureSet, modes: str, params: list[str], expected: list[tuple[str, str, bool]]
):
    assert status_changes(modes, params, features) == expected


def test_status_changes_with_default_features():
    features = FeatureSet()  # before ISUPPORT: (ov)@+ and the RFC channel modes
    assert status_changes("+kov", ["key", "alice", "bob"], features) == [
        ("alice", "@", True),
        ("bob", "+", True),
    ]
    assert status_changes("+q", ["alice"], features) == []


def test_status_changes_follow_isupport_prefix():
    features = FeatureSet()
    features.load(["nick", "PREFIX=(Yov)!@+", "CHANMODES=b,k,l,n", "are supported"])
    assert status_changes("+Yo", ["alice", "bob"], features) == [
        ("alice", "!", True),
        ("bob", "@", True),
    ]


def test_private_conversations_are_bounded_least_recent_first():
    harness = make(max_queries=3)

    def say(nick: str, text: str) -> None:
        harness.say(Origin(nick, "u", "h"), "relaybot", text)
        harness.complete(harness.jobs[-1], f"ok {len(harness.jobs)}")

    for nick in ("p1", "p2", "p3"):
        say(nick, "hi")
    say("p1", "still here")  # p1 is recent again
    say("p4", "hello")
    assert harness.relay.transcript("p2") is None
    assert all(harness.relay.transcript(n) is not None for n in ("p1", "p3", "p4"))


def test_cancel_tells_the_worker_to_skip_the_queued_job():
    harness = make()
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: hello")
    [job] = harness.jobs
    harness.relay.cancel(KEY)
    assert harness.queue.cancelled == [job.job_id]
    harness.complete(job, "too late")
    assert harness.sender.sent == []


def test_a_reply_that_echoes_the_bots_transcript_prefix_is_sent_without_it():
    harness = make()
    harness.join("#chan", "alice")
    harness.say(ALICE, "#chan", "relaybot: hi")
    harness.complete(harness.jobs[0], "<relaybot> hello alice")
    assert harness.texts() == ["hello alice"]
