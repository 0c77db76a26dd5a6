"""Server lines in, relaybot.irc.events values out: relaybot.irc.translate without a session."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from relaybot.irc import translate
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
    StatusChange,
    Topic,
)
from relaybot.irc.message import IrcMessage, parse
from relaybot.irc.text import casefold
from relaybot.irc.tracking import UserTracker

BOB = Origin("bob", "b", "h")


def line(text: str) -> IrcMessage:
    message = parse(text)
    assert message is not None
    return message


def origin(text: str, users: UserTracker | None = None) -> Origin:
    return translate.origin_of(line(text), users or UserTracker(casefold))


def test_origin_from_the_source_tags_and_what_the_server_said_before() -> None:
    users = UserTracker(casefold)
    assert origin(":bob!b@h PRIVMSG #c :hi", users) == BOB
    assert origin("PING :x", users) == Origin("")
    assert origin(":irc.test NOTICE * :hi", users) == Origin("irc.test")
    # A hostile server's nick loses its controls and spaces.
    assert origin(":b\x01ob!b@h PRIVMSG #c :hi", users).nick == "bob"
    assert origin("@account=acct;bot :bob!b@h PRIVMSG #c :hi", users) == Origin(
        "bob", "b", "h", "acct", True
    )
    users.account("BOB", "known")
    users.whois_bot("bob")
    assert origin(":bob!b@h PRIVMSG #c :hi", users) == Origin("bob", "b", "h", "known", True)


@pytest.mark.parametrize(
    ("text", "events"),
    [
        ("hello", [Message(BOB, "#c", "hello")]),
        ("\x01ACTION waves\x01", [Action(BOB, "#c", "waves")]),
        ("\x01ACTION\x01", [Action(BOB, "#c", "")]),
        ("\x01VERSION\x01", []),
        (
            "before\x01ACTION jumps\x01after",
            [Message(BOB, "#c", "before"), Action(BOB, "#c", "jumps")],
        ),
        (
            "a\x01VERSION\x01b\x01ACTION sits\x01",
            [Message(BOB, "#c", "a"), Action(BOB, "#c", "sits")],
        ),
    ],
)
def test_privmsg_text_and_ctcp_actions(text: str, events: list[object]) -> None:
    message = line(f":bob!b@h PRIVMSG #c :{text}")
    assert translate.privmsg_events(message, BOB) == events


@pytest.mark.parametrize(
    ("tags", "msgid"),
    [
        ("@msgid=abc-123;time=2026-01-01T00:00:00Z ", "abc-123"),
        ("@msgid=a\\sb ", None),  # unescaped to a space: not an id a server made
        ("@msgid= ", None),
        ("@msgid=" + "x" * 300 + " ", None),
        ("", None),
    ],
)
def test_a_message_carries_its_msgid(tags: str, msgid: str | None) -> None:
    events = translate.privmsg_events(line(f"{tags}:bob!b@h PRIVMSG #c :hi"), BOB)
    assert events == [Message(BOB, "#c", "hi", msgid)]


def test_a_privmsg_without_text_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        translate.privmsg_events(line(":bob!b@h PRIVMSG #c"), BOB)


def test_join_plain_and_extended() -> None:
    assert translate.join_event(line(":bob!b@h JOIN #c"), BOB) == Join(BOB, "#c")
    extended = translate.join_event(line(":bob!b@h JOIN #c acct :Bob"), BOB)
    assert extended == Join(Origin("bob", "b", "h", "acct"), "#c")
    for none in (":bob!b@h JOIN #c * :Bob", ":bob!b@h JOIN #c :"):  # not logged in
        joined = translate.join_event(line(none), BOB)
        assert joined is not None and joined.origin.account is None
    assert translate.join_event(line(":bob!b@h JOIN"), BOB) is None


def test_part_quit_nick() -> None:
    assert translate.part_event(line(":bob!b@h PART #c :bye"), BOB) == Part(BOB, "#c", "bye")
    assert translate.part_event(line(":bob!b@h PART #c"), BOB) == Part(BOB, "#c", "")
    assert translate.part_event(line(":bob!b@h PART"), BOB) is None
    assert translate.quit_event(line(":bob!b@h QUIT :gone"), BOB) == Quit(BOB, "gone")
    assert translate.quit_event(line(":bob!b@h QUIT"), BOB) == Quit(BOB, "")
    assert translate.nick_event(line(":bob!b@h NICK :bob2"), BOB) == NickChange(BOB, "bob2")
    assert translate.nick_event(line(":bob!b@h NICK :b\x7fob 2"), BOB) == NickChange(BOB, "bob2")
    assert translate.nick_event(line(":bob!b@h NICK"), BOB) == NickChange(BOB, "")


def test_topics_and_names() -> None:
    assert translate.topic_event(line(":bob!b@h TOPIC #c :new"), BOB) == Topic("#c", "new", BOB)
    assert translate.topic_event(line(":bob!b@h TOPIC #c"), BOB) == Topic("#c", "", BOB)
    assert translate.topic_event(line(":bob!b@h TOPIC"), BOB) is None
    current = line(":irc.test 332 relaybot #c :the topic")
    assert translate.current_topic_event(current) == Topic("#c", "the topic", None)
    assert translate.current_topic_event(line(":irc.test 332 relaybot #c")) is None
    # Prefixes stay on the nicks here (as before the split); userhost-in-names' do not.
    names = line(":irc.test 353 relaybot = #c :@op +voice alice!a@h")
    assert translate.names_event(names) == Names("#c", ("@op", "+voice", "alice"))
    assert translate.names_event(line(":irc.test 353 relaybot = #c")) is None


def test_kick() -> None:
    kick = translate.kick_event(line(":bob!b@h KICK #c alice :out"), BOB)
    assert kick == Kick(BOB, "#c", "alice", "out")
    assert translate.kick_event(line(":bob!b@h KICK #c"), BOB) == Kick(BOB, "#c", "", "")
    assert translate.kick_event(line(":bob!b@h KICK"), BOB) is None


def test_invite_only_of_the_bot_itself() -> None:
    def is_me(nick: str) -> bool:
        return casefold(nick) == "relaybot"

    invite = line(":bob!b@h INVITE RelayBot :#c")
    assert translate.invite_event(invite, BOB, is_me) == Invite(BOB, "#c")
    # invite-notify: someone else was invited
    assert translate.invite_event(line(":bob!b@h INVITE alice :#c"), BOB, is_me) is None
    assert translate.invite_event(line(":bob!b@h INVITE relaybot"), BOB, is_me) is None
    assert translate.invite_event(line(":bob!b@h INVITE"), BOB, is_me) is None


def test_mode_status_changes_use_isupport() -> None:
    features = SimpleNamespace(prefix={"@": "o", "+": "v"}, chanmodes=["beI", "k", "l", "imnst"])
    mode = line(":op!o@h MODE #c +ko-v+l sekrit alice bob 10")
    assert translate.mode_events(mode, features) == [
        StatusChange("#c", "alice", "@", True),
        StatusChange("#c", "bob", "+", False),
    ]
    # Without ISUPPORT: the defaults still know +k and +b take a parameter.
    bare = SimpleNamespace(prefix={"@": "o"})
    assert translate.mode_events(line(":op!o@h MODE #c +bo *!*@x alice"), bare) == [
        StatusChange("#c", "alice", "@", True)
    ]
    assert translate.mode_events(line(":relaybot MODE relaybot +B"), features) == []
    assert translate.mode_events(line(":op!o@h MODE #c"), features) == []
    assert translate.mode_events(line(":op!o@h MODE"), features) == []
    # -l takes no parameter, so the next one belongs to +o.
    assert translate.status_changes("-l+o", ["alice"], features) == [("alice", "@", True)]
