"""Unit tests for relaybot.conversation.transcript: events become Relay turns; the budget trims
the oldest."""

from __future__ import annotations

import itertools

import pytest

from relaybot.conversation.formats import Turn
from relaybot.conversation.transcript import (
    QUERY_BOT_ROLE,
    QUERY_PEER_ROLE,
    SYSTEM,
    Transcript,
    bot_join_turns,
    channel_event_turns,
    topic_line,
)
from relaybot.irc.events import (
    Action,
    Invite,
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

ALICE = Origin("alice", "al", "host.example")
BOB = Origin("bob", "b", "other.example")


def words(text: str) -> int:
    return len(text.split())


# --- events -> turns --------------------------------------------------------------------------


def test_roles():
    assert SYSTEM == "system"
    assert QUERY_BOT_ROLE == "user"
    assert QUERY_PEER_ROLE == "anon"


def test_message():
    event = Message(ALICE, "#c", "hello there")
    assert channel_event_turns(event, "#c") == [Turn("alice", "hello there")]


def test_message_is_cleaned():
    event = Message(ALICE, "#c", "  \x02bold\x02 \x0304red\x00\x01 ")
    assert channel_event_turns(event, "#c") == [Turn("alice", "bold red")]


@pytest.mark.parametrize("text", ["", "   ", "\x02\x02 \x0304"])
def test_a_message_with_nothing_left_is_the_silence_marker(text: str):
    # The format writes a turn as it is, so the marker is put in here.
    assert channel_event_turns(Message(ALICE, "#c", text), "#c") == [Turn("alice", "...")]


def test_action():
    event = Action(ALICE, "#c", "does something")
    assert channel_event_turns(event, "#c") == [Turn("system", "* alice does something")]


def test_empty_action():
    assert channel_event_turns(Action(ALICE, "#c", ""), "#c") == [Turn("system", "* alice")]


def test_join():
    assert channel_event_turns(Join(BOB, "#c"), "#c") == [Turn("system", "* bob has joined #c")]


def test_join_uses_channel_argument_spelling():
    # The transcript passes the channel as the server spelled it when the bot joined.
    assert channel_event_turns(Join(BOB, "#C"), "#c") == [Turn("system", "* bob has joined #c")]


def test_part_without_reason():
    assert channel_event_turns(Part(BOB, "#c"), "#c") == [Turn("system", "* bob has left #c")]


def test_part_with_reason():
    assert channel_event_turns(Part(BOB, "#c", "see you"), "#c") == [
        Turn("system", "* bob has left #c (see you)")
    ]


def test_part_with_blank_reason():
    assert channel_event_turns(Part(BOB, "#c", " \x02\x02 "), "#c") == [
        Turn("system", "* bob has left #c")
    ]


def test_quit():
    assert channel_event_turns(Quit(BOB), "#c") == [Turn("system", "* bob has quit")]
    assert channel_event_turns(Quit(BOB, "Ping timeout: 240 seconds"), "#c") == [
        Turn("system", "* bob has quit (Ping timeout: 240 seconds)")
    ]


def test_nick_change():
    assert channel_event_turns(NickChange(BOB, "robert"), "#c") == [
        Turn("system", "* bob is now known as robert")
    ]


def test_topic_with_origin():
    assert channel_event_turns(Topic("#c", "x", ALICE), "#c") == [
        Turn("alice", "/topic x"),
        Turn("system", "* Topic for #c is: x"),
    ]


def test_topic_is_cleaned():
    assert channel_event_turns(Topic("#c", "\x02cats\x02\r\n", ALICE), "#c") == [
        Turn("alice", "/topic cats"),
        Turn("system", "* Topic for #c is: cats"),
    ]


def test_topic_without_origin_adds_no_turns():
    assert channel_event_turns(Topic("#c", "x"), "#c") == []


def test_kick():
    assert channel_event_turns(Kick(ALICE, "#c", "bob"), "#c") == [
        Turn("system", "* bob was kicked by alice")
    ]
    assert channel_event_turns(Kick(ALICE, "#c", "bob", "spam"), "#c") == [
        Turn("system", "* bob was kicked by alice (spam)")
    ]


def test_invite_and_names_add_nothing():
    assert channel_event_turns(Invite(ALICE, "#c"), "#c") == []
    assert channel_event_turns(Names("#c", ("alice", "@bob")), "#c") == []


def test_bot_join_turns_and_topic_line():
    assert bot_join_turns("relaybot", "#c") == [
        Turn("relaybot", "/join #c"),
        Turn("system", "* Now talking in #c"),
    ]
    assert topic_line("#c", "x") == Turn("system", "* Topic for #c is: x")


# --- Transcript -------------------------------------------------------------------------------


def cost(turn: Turn, overhead: int = 3) -> int:
    return words(f"{turn.role}\n{turn.content}") + overhead


def msg(i: int) -> Turn:
    return Turn("alice", f"message number {i}")  # 4 words + 3 overhead = 7 tokens


def make(budget: int, **kwargs: int) -> Transcript:
    return Transcript(name="#c", count_tokens=words, budget=budget, **kwargs)


def test_cost_helper_matches_transcript():
    transcript = make(1000)
    transcript.add([msg(1)])
    assert transcript.token_count == cost(msg(1)) == 7


def test_add_keeps_turns_in_order():
    transcript = make(1000)
    transcript.add([msg(1), msg(2)])
    transcript.add([msg(3)])
    assert transcript.turns == [msg(1), msg(2), msg(3)]
    assert transcript.token_count == 21


def test_trims_oldest_when_over_budget():
    transcript = make(30)  # room for 4 turns of 7 tokens
    transcript.add([msg(i) for i in range(10)])
    assert transcript.turns == [msg(6), msg(7), msg(8), msg(9)]
    assert transcript.token_count == 28
    transcript.add([msg(10)])
    assert transcript.turns == [msg(7), msg(8), msg(9), msg(10)]
    assert transcript.token_count <= 30


def test_exact_budget_is_kept():
    transcript = make(28)
    transcript.add([msg(i) for i in range(4)])
    assert len(transcript.turns) == 4


def test_header_and_topic_are_never_trimmed():
    transcript = make(40)
    header = bot_join_turns("relaybot", "#c")
    transcript.set_header(header)
    transcript.set_topic("cats and dogs")
    fixed = sum(cost(turn) for turn in [*header, topic_line("#c", "cats and dogs")])
    assert transcript.token_count == fixed
    transcript.add([msg(i) for i in range(20)])
    assert transcript.header == header
    assert transcript.topic == Turn("system", "* Topic for #c is: cats and dogs")
    kept = transcript.turns
    assert kept and kept[-1] == msg(19)
    assert fixed + 7 * len(kept) <= 40 < fixed + 7 * (len(kept) + 1)
    for_bot = transcript.turns_for("relaybot")
    assert for_bot[: len(header)] == header
    assert for_bot[len(header)] == transcript.topic


def test_header_larger_than_budget_drops_all_turns_but_keeps_header():
    transcript = make(5)
    transcript.set_header(bot_join_turns("relaybot", "#c"))
    transcript.add([msg(1)])
    assert transcript.turns == []
    assert transcript.turns_for("relaybot") == bot_join_turns("relaybot", "#c")


def test_set_topic_replaces_previous_topic():
    transcript = make(1000)
    transcript.set_topic("one")
    transcript.set_topic("\x02two\x02")
    assert transcript.topic == Turn("system", "* Topic for #c is: two")
    assert transcript.token_count == cost(Turn("system", "* Topic for #c is: two"))


def test_turns_for_reserves_room_for_speaker_prefix():
    # 4 turns of 7 = 28 fit a budget of 29 with reserve 0, but the speaker prefix needs
    # words("relaybot\n") + 1 = 2 more: one turn must go.
    transcript = make(29)
    transcript.add([msg(i) for i in range(4)])
    assert len(transcript.turns) == 4
    assert transcript.turns_for("relaybot") == [msg(1), msg(2), msg(3)]


def test_turns_for_exact_fit_with_prefix():
    transcript = make(30)
    transcript.add([msg(i) for i in range(4)])
    assert transcript.turns_for("relaybot") == [msg(i) for i in range(4)]


def test_turns_for_longer_speaker_name_reserves_more():
    transcript = make(31)
    transcript.add([msg(i) for i in range(4)])
    # "a b c d\n" counts 4 words: reserve 5, limit 26, so only 3 turns fit
    assert len(transcript.turns_for("a b c d")) == 3


def test_max_turns_bound():
    transcript = make(10_000, max_turns=3)
    transcript.add([msg(i) for i in range(5)])
    assert transcript.turns == [msg(2), msg(3), msg(4)]
    assert transcript.token_count == 21


def test_turn_overhead_is_counted():
    transcript = make(1000, turn_overhead=0)
    transcript.add([msg(1)])
    assert transcript.token_count == 4


def test_clear_keeps_header():
    transcript = make(1000)
    transcript.set_header(bot_join_turns("relaybot", "#c"))
    transcript.add([msg(1)])
    transcript.clear()
    assert transcript.turns == []
    assert transcript.turns_for("relaybot") == bot_join_turns("relaybot", "#c")
    assert transcript.token_count == sum(cost(t) for t in bot_join_turns("relaybot", "#c"))


@pytest.mark.parametrize("budget", [0, 7, 50, 100])
def test_token_count_never_exceeds_budget_after_turns_for(budget: int):
    transcript = make(budget)
    transcript.add([msg(i) for i in range(30)])
    returned = transcript.turns_for("relaybot")
    assert returned == transcript.turns
    if returned:
        assert transcript.token_count + words("relaybot\n") + 1 <= budget
    # and no more turns were dropped than needed
    assert transcript.token_count + 7 + words("relaybot\n") + 1 > budget


# --- trimming in chunks ------------------------------------------------------------------------


def test_over_budget_a_quarter_of_the_turns_goes_at_once():
    transcript = make(7 * 40)  # room for 40 turns of 7 tokens
    transcript.add([msg(i) for i in range(40)])
    assert len(transcript.turns) == 40
    transcript.add([msg(40)])  # one over: a chunk of int(41 * 0.25) = 10 turns goes
    assert transcript.turns == [msg(i) for i in range(10, 41)]
    assert transcript.token_count == 7 * 31


def test_the_start_of_the_context_stays_put_while_the_slack_lasts():
    transcript = make(7 * 40)
    transcript.set_header(bot_join_turns("relaybot", "#c"))
    transcript.add([msg(i) for i in range(60)])
    starts = []
    for i in range(60, 90):
        transcript.add([msg(i)])
        starts.append(transcript.turns_for("relaybot")[2])
    # 30 messages, and the first rolling turn changed only when a chunk was dropped.
    assert len(set(starts)) <= 4
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert changes <= 3


def test_a_chunk_never_drops_less_than_needed_nor_the_header():
    transcript = make(50)
    transcript.set_header(bot_join_turns("relaybot", "#c"))
    transcript.add([msg(i) for i in range(100)])
    assert transcript.token_count <= 50
    assert transcript.turns and transcript.turns[-1] == msg(99)
    assert transcript.turns_for("relaybot")[:2] == bot_join_turns("relaybot", "#c")


def test_max_turns_also_trims_in_chunks():
    transcript = make(10_000, max_turns=20)
    transcript.add([msg(i) for i in range(20)])
    transcript.add([msg(20)])
    assert transcript.turns == [msg(i) for i in range(5, 21)]  # int(21 * 0.25) = 5 dropped


def test_trim_fraction_zero_trims_one_turn_at_a_time():
    transcript = Transcript(name="#c", count_tokens=words, budget=7 * 40, trim_fraction=0.0)
    transcript.add([msg(i) for i in range(41)])
    assert transcript.turns == [msg(i) for i in range(1, 41)]


def test_trimming_marks_the_transcript_changed():
    transcript = make(29)
    transcript.add([msg(i) for i in range(4)])
    before = transcript.revision
    transcript.turns_for("relaybot")  # the speaker prefix forces one turn out
    assert transcript.revision > before


def test_retract_removes_that_very_turn_and_its_cost() -> None:
    transcript = Transcript("#c", lambda text: len(text.split()), budget=1000)
    first, same_text, other = Turn("bot", "hi there"), Turn("bot", "hi there"), Turn("a", "yo")
    transcript.add([first, other, same_text])
    tokens = transcript.token_count
    assert transcript.retract(first)
    # An equal turn that is another line stays: only the retracted line goes.
    assert transcript.turns == [other, same_text] and transcript.turns[1] is same_text
    assert transcript.token_count == tokens - transcript._cost(first)
    assert not transcript.retract(first)
