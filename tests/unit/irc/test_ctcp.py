"""CTCP queries: which get a reply and what it says (relaybot.irc.ctcp), the rate limits on a
hand-moved clock, and the session's wiring: a private query becomes one paced NOTICE in the
outbox, a channel CTCP or a CTCP reply becomes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relaybot import __version__
from relaybot.config.schema import ChannelConfig, IrcConfig
from relaybot.irc import ctcp
from relaybot.irc.ctcp import CtcpQuery, CtcpResponder, parse_query, ping_argument, reply_body
from relaybot.irc.events import Action, IrcEvent, Origin
from relaybot.irc.message import parse
from relaybot.irc.session import IrcSession

NOON = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def responder(clock: Clock) -> CtcpResponder:
    return CtcpResponder(clock=clock, wall_clock=lambda: NOON)


def ask(responder: CtcpResponder, text: str, sender: str = "a@h") -> str | None:
    return responder.reply(text, private=True, sender=sender)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("\x01VERSION\x01", CtcpQuery("VERSION", "")),
        ("\x01version\x01", CtcpQuery("VERSION", "")),
        ("\x01PING 123 456\x01", CtcpQuery("PING", "123 456")),
        ("\x01PING 123", CtcpQuery("PING", "123")),  # the closing \x01 may be left out
        ("\x01TIME\x01", CtcpQuery("TIME", "")),
        ("\x01ACTION waves\x01", CtcpQuery("ACTION", "waves")),
        ("hello", None),
        ("", None),
        ("\x01", None),
        ("\x01\x01", None),
        ("before\x01VERSION\x01", None),  # text around it: no query
        ("\x01VERSION\x01after", None),
        ("\x01VERSION\x01\x01VERSION\x01", None),  # several in one line: not answered at all
        ("\x01 VERSION\x01", None),
        ("\x01VER-SION\x01", None),
        ("\x01VËRSION\x01", None),
        ("\x01PING " + "9" * 600 + "\x01", None),
    ],
)
def test_parse_query(text: str, query: CtcpQuery | None) -> None:
    assert parse_query(text) == query


# --- what each reply says --------------------------------------------------------------------


def test_version_names_the_bot_and_its_version(responder: CtcpResponder) -> None:
    body = ask(responder, "\x01VERSION\x01")
    assert body is not None and body.startswith(f"VERSION relaybot {__version__} ")


def test_ping_echoes_its_argument(responder: CtcpResponder) -> None:
    assert ask(responder, "\x01PING 1700000000 123456\x01") == "PING 1700000000 123456"
    assert ask(responder, "\x01PING\x01", "b@h") == "PING"


def test_time_is_rfc_1123_in_utc(responder: CtcpResponder) -> None:
    assert ask(responder, "\x01TIME\x01") == "TIME Tue, 14 Nov 2023 22:13:20 GMT"


def test_source_invents_no_url(responder: CtcpResponder) -> None:
    assert ask(responder, "\x01SOURCE\x01") == "SOURCE relaybot"


def test_clientinfo_lists_every_supported_command(responder: CtcpResponder) -> None:
    body = ask(responder, "\x01CLIENTINFO\x01")
    assert body == "CLIENTINFO ACTION CLIENTINFO PING SOURCE TIME VERSION"


@pytest.mark.parametrize(
    ("argument", "echoed"),
    [
        ("abc\r\nQUIT :x", "abcQUIT :x"),
        ("a\x00b", "ab"),
        ("\x02bold\x02 \x0304red", "bold red"),
        ("\x7fdel", "del"),
        ("  spaced  ", "spaced"),
        ("9" * 300, "9" * ctcp.MAX_PING_BYTES),
        ("é" * 80, "é" * (ctcp.MAX_PING_BYTES // 2)),  # bytes, never half a character
        ("x" * 99 + "é", "x" * 99),
    ],
)
def test_ping_argument_is_sanitised_and_bounded(argument: str, echoed: str) -> None:
    assert ping_argument(argument) == echoed
    assert len(echoed.encode()) <= ctcp.MAX_PING_BYTES


def test_ping_reply_carries_no_control_bytes(responder: CtcpResponder) -> None:
    body = ask(responder, "\x01PING a\rb\nc\x00d\x03e\x01")
    assert body == "PING abcde"


@pytest.mark.parametrize(
    "text",
    [
        "\x01ACTION waves\x01",  # stays an event; never answered
        "\x01FINGER\x01",
        "\x01USERINFO\x01",
        "\x01DCC SEND x 1 2 3\x01",
        "\x01ERRMSG what\x01",
        "\x01XYZZY\x01",
        "plain text",
    ],
)
def test_other_messages_get_no_reply_and_cost_nothing(responder: CtcpResponder, text: str) -> None:
    for _ in range(20):
        assert ask(responder, text) is None
    assert responder.people == {}
    assert responder.overall.full
    assert reply_body(CtcpQuery("FINGER", ""), NOON) is None


def test_channel_ctcp_is_never_answered_and_costs_nothing(responder: CtcpResponder) -> None:
    for command in ("VERSION", "PING 1", "TIME", "SOURCE", "CLIENTINFO"):
        for _ in range(10):
            assert responder.reply(f"\x01{command}\x01", private=False, sender="a@h") is None
    assert responder.people == {} and responder.overall.full
    assert ask(responder, "\x01VERSION\x01") is not None  # the budget is all still there


# --- rate limits -----------------------------------------------------------------------------


def test_per_person_limit(responder: CtcpResponder, clock: Clock) -> None:
    burst = ctcp.PER_PERSON_BURST
    answered = [ask(responder, "\x01PING 1\x01") for _ in range(burst + 5)]
    assert answered[:burst] == ["PING 1"] * burst
    assert answered[burst:] == [None] * 5
    assert ask(responder, "\x01VERSION\x01", "someone@else") is not None  # others still may
    clock.now += ctcp.PER_PERSON_INTERVAL - 0.1
    assert ask(responder, "\x01PING 1\x01") is None
    clock.now += 0.2
    assert ask(responder, "\x01PING 2\x01") == "PING 2"
    assert ask(responder, "\x01PING 3\x01") is None


def test_overall_limit_across_people(responder: CtcpResponder, clock: Clock) -> None:
    burst = ctcp.OVERALL_BURST
    answered = [ask(responder, "\x01VERSION\x01", f"u{n}@h{n}") for n in range(burst + 10)]
    assert sum(body is not None for body in answered) == burst
    assert answered[burst:] == [None] * 10
    # Refused overall: the person's own budget was not spent.
    assert responder.people[f"u{burst}@h{burst}"].full
    clock.now += ctcp.OVERALL_INTERVAL
    assert ask(responder, "\x01TIME\x01", "late@comer") is not None
    assert ask(responder, "\x01TIME\x01", "later@comer") is None


def test_a_flood_from_many_people_stays_within_the_overall_rate(
    responder: CtcpResponder, clock: Clock
) -> None:
    answered = 0
    for step in range(600):  # ten minutes, a query from a new host every second
        clock.now += 1.0
        answered += ask(responder, "\x01VERSION\x01", f"u@h{step}") is not None
    assert answered <= ctcp.OVERALL_BURST + 600 / ctcp.OVERALL_INTERVAL
    assert len(responder.people) <= ctcp.MAX_PEOPLE


def test_per_person_buckets_are_bounded(clock: Clock) -> None:
    responder = CtcpResponder(clock=clock, max_people=3, overall_burst=100)
    for name in ("a", "b", "c", "d"):
        ask(responder, "\x01VERSION\x01", name)
    assert list(responder.people) == ["b", "c", "d"]
    ask(responder, "\x01VERSION\x01", "b")  # used: now the most recent
    ask(responder, "\x01VERSION\x01", "e")
    assert list(responder.people) == ["d", "b", "e"]


# --- the session's wiring --------------------------------------------------------------------


class Session(IrcSession):
    """A session fed server lines without a socket, whose writer takes lines as if registered."""

    def __init__(self, clock: Clock) -> None:
        self.events: list[IrcEvent] = []
        config = IrcConfig(host="127.0.0.1", nick="relaybot", channels=(ChannelConfig("#relay"),))
        super().__init__(config, on_event=self.events.append, on_forget=lambda _: None, clock=clock)
        self.connection.real_nickname = "relaybot"
        self.connection.real_server_name = ""
        self.writer.ready = lambda: True
        self.ctcp.wall_clock = lambda: NOON

    def feed(self, *lines: str) -> None:
        for line in lines:
            self.connection._process_line(line)

    def queued(self) -> list[str]:
        items = self.outbox.clear()
        assert all(item.on_sent is None and item.on_lost is None for item in items)
        assert all(item.target == "" and item.batch is None for item in items)
        return [item.line for item in items]


@pytest.fixture
def session(clock: Clock) -> Iterator[Session]:
    recording = Session(clock)
    yield recording
    recording.loop.close()


def test_a_private_query_is_answered_with_one_notice(session: Session) -> None:
    session.feed(":alice!a@host PRIVMSG relaybot :\x01VERSION\x01")
    [line] = session.queued()
    assert line.startswith(f"NOTICE alice :\x01VERSION relaybot {__version__} ")
    assert line.endswith("\x01") and line.count("\x01") == 2
    session.feed(":alice!a@host PRIVMSG RelayBot :\x01PING 42\x01")  # the nick, casefolded
    assert session.queued() == ["NOTICE alice :\x01PING 42\x01"]
    session.feed(":alice!a@host PRIVMSG relaybot :\x01TIME\x01")
    assert session.queued() == ["NOTICE alice :\x01TIME Tue, 14 Nov 2023 22:13:20 GMT\x01"]
    assert session.events == []  # queries are no events: they never reach a conversation


def test_a_hostile_ping_becomes_one_well_formed_line(session: Session) -> None:
    session.feed(":alice!a@host PRIVMSG relaybot :\x01PING x\x03y\x02z " + "9" * 600)
    assert session.queued() == []  # too long to be a query at all
    # (A NUL, CR or LF never gets this far: the line parser drops such a line.)
    session.feed(":alice!a@host PRIVMSG relaybot :\x01PING x\x0304y\x02z\x7f \x1fq\x01")
    [line] = session.queued()
    assert line == "NOTICE alice :\x01PING xyz q\x01"
    message = parse(line)
    assert message is not None and message.params == ("alice", "\x01PING xyz q\x01")


def test_channel_ctcp_and_statusmsg_get_nothing(session: Session) -> None:
    for target in ("#relay", "@#relay", "+#relay", "relaybot,#relay", "someoneelse"):
        for query in ("VERSION", "PING 1", "TIME", "SOURCE", "CLIENTINFO"):
            session.feed(f":eve!e@host PRIVMSG {target} :\x01{query}\x01")
    assert session.queued() == []
    session.feed(":eve!e@host PRIVMSG relaybot :\x01VERSION\x01")  # eve's budget is untouched
    assert len(session.queued()) == 1


def test_ctcp_replies_and_notices_are_never_answered(session: Session) -> None:
    session.feed(
        ":eve!e@host NOTICE relaybot :\x01VERSION evilclient 1.0\x01",
        ":eve!e@host NOTICE relaybot :\x01PING 123\x01",
        ":eve!e@host NOTICE #relay :\x01VERSION\x01",
    )
    assert session.queued() == [] and session.events == []


def test_action_in_private_stays_an_event_with_no_reply(session: Session) -> None:
    session.feed(":bob!b@h PRIVMSG relaybot :\x01ACTION waves\x01")
    assert session.events == [Action(Origin("bob", "b", "h"), "relaybot", "waves")]
    assert session.queued() == []


def test_queries_from_the_bot_itself_or_odd_sources_get_nothing(session: Session) -> None:
    session.feed(
        ":relaybot!r@h PRIVMSG relaybot :\x01VERSION\x01",
        ":#chan!x@h PRIVMSG relaybot :\x01VERSION\x01",
        "PRIVMSG relaybot :\x01VERSION\x01",
    )
    assert session.queued() == []


def test_a_private_flood_gets_the_rate_limit_and_no_more(session: Session, clock: Clock) -> None:
    session.feed(*[":eve!e@host PRIVMSG relaybot :\x01VERSION\x01"] * 50)
    assert len(session.queued()) == ctcp.PER_PERSON_BURST
    # Another nick on the same user@host is the same person.
    session.feed(":eve2!E@HOST PRIVMSG relaybot :\x01PING 1\x01")
    assert session.queued() == []
    # Many people together: the overall bucket.
    session.feed(*[f":n{i}!u{i}@h{i} PRIVMSG relaybot :\x01PING {i}\x01" for i in range(50)])
    assert len(session.queued()) == ctcp.OVERALL_BURST - ctcp.PER_PERSON_BURST
    clock.now += ctcp.OVERALL_INTERVAL
    session.feed(":late!l@lh PRIVMSG relaybot :\x01PING 9\x01")
    assert session.queued() == ["NOTICE late :\x01PING 9\x01"]


def test_replies_wait_their_turn_in_the_paced_outbox(session: Session, clock: Clock) -> None:
    session.send_message("#relay", "\n".join(f"line {n}" for n in range(8)))
    session.feed(":alice!a@host PRIVMSG relaybot :\x01PING 1\x01")
    assert len(session.outbox) == 9  # queued like any line, not written past the pacing
    first = [item.line for item in session.outbox.due(clock.now)]
    assert len(first) == session.outbox.burst
    # Its own queue takes turns with the channel's: it went in the first burst.
    assert "NOTICE alice :\x01PING 1\x01" in first
    session.outbox.clear()


def test_writer_frames_and_bounds_the_reply(session: Session) -> None:
    writer = session.writer
    assert writer.queue_ctcp_reply("alice", "PING a\x01b\r\nc")
    assert session.queued() == ["NOTICE alice :\x01PING abc\x01"]
    assert not writer.queue_ctcp_reply("alice,bob", "VERSION x")
    assert not writer.queue_ctcp_reply("$*", "VERSION x")
    assert not writer.queue_ctcp_reply("alice", "")
    assert not writer.queue_ctcp_reply("alice", "PING " + "x" * 600)  # dropped, never cut
    assert session.queued() == []
