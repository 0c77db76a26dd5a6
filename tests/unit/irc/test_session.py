"""IrcSession fed server lines without a socket: which named handler each numeric reaches, the
lines it answers with, and the relaybot.irc.events values the rest of the bot gets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relaybot.config.schema import ChannelConfig, IrcConfig, SaslConfig, Secret
from relaybot.irc import numerics
from relaybot.irc.events import (
    Action,
    IrcEvent,
    Join,
    Message,
    NickChange,
    Origin,
    Quit,
    StatusChange,
)
from relaybot.irc.session import IrcSession


class Recording(IrcSession):
    """Records what the session would send instead of writing it."""

    def __init__(self, config: IrcConfig) -> None:
        self.events: list[IrcEvent] = []
        self.forgotten: list[str] = []
        self.sent: list[str] = []
        super().__init__(config, on_event=self.events.append, on_forget=self.forgotten.append)
        # What BotConnection.connect sets; no socket here.
        self.connection.real_nickname = config.nick
        self.connection.real_server_name = ""
        self.nicks.reset()

    def _send_raw(self, line: str) -> None:
        self.sent.append(line)

    def feed(self, *lines: str) -> None:
        for line in lines:
            self.connection._process_line(line)


@pytest.fixture
def session() -> Iterator[Recording]:
    recording = Recording(
        IrcConfig(
            host="127.0.0.1",
            nick="relaybot",
            alt_nicks=("rbot",),
            channels=(ChannelConfig("#relay"),),
            sasl=SaslConfig("relaybot", Secret("hunter2")),
        )
    )
    yield recording
    recording.loop.close()


def test_numerics_reach_named_handlers(session: Recording) -> None:
    lines = session.inbound
    handlers = lines.handlers
    assert handlers[numerics.ERR_NICKNAMEINUSE] == lines.on_nick_refused
    assert handlers[numerics.ERR_ERRONEUSNICKNAME] == lines.on_nick_refused
    assert handlers[numerics.ERR_UNAVAILRESOURCE] == lines.on_nick_refused
    assert handlers[numerics.RPL_WELCOME] == lines.on_welcome
    assert handlers[numerics.RPL_WHOSPCRPL] == lines.on_whox_reply
    assert handlers[numerics.ERR_BANNEDFROMCHAN] == lines.on_join_refused
    # Every line the capabilities class answers, and only those, goes to it.
    negotiated = {command for command, fn in handlers.items() if fn == lines.negotiate}
    assert negotiated == session.caps.commands
    assert all((len(key) == 3 and key.isdigit()) or key.isupper() for key in handlers)


def test_library_event_names_are_not_commands(session: Recording) -> None:
    # Handlers were once looked up by the irc library's names for numerics; a server could
    # reach them by sending the name as a command.
    session.feed(
        ":evil WELCOME relaybot :hi",
        ":evil NICKNAMEINUSE relaybot relaybot :x",
        ":evil DISCONNECT :bye",
        ":evil PUBMSG #relay :hello",
    )
    assert not session.registered
    assert session.sent == [] and session.events == []


def test_433_then_welcome(session: Recording) -> None:
    session.feed(":irc.test 433 * relaybot :Nickname is already in use")
    assert session.sent == ["NICK rbot"] and session.nick == "rbot"
    session.feed(":irc.test 433 * rbot :Nickname is already in use")
    assert session.sent[-1] == "NICK relaybo_"
    session.feed(":irc.test 001 relaybo_ :Welcome")
    assert session.registered and session.caps.ended
    assert session.sent[-1] == "JOIN #relay"
    session.feed(":irc.test 433 relaybo_ relaybot :in use")  # registered: not ours to fix
    assert session.sent[-1] == "JOIN #relay"
    # The wanted nick is freed: take it back.
    session.feed(":relaybot!u@h QUIT :bye")
    assert session.sent[-1] == "NICK relaybot"


def test_cap_and_sasl_go_through_the_capabilities(session: Recording) -> None:
    session.feed(":irc.test CAP * LS :sasl=PLAIN multi-prefix")
    assert session.sent == ["CAP REQ :sasl multi-prefix"]
    session.feed(":irc.test CAP * ACK :sasl multi-prefix")
    assert session.sent[-1] == "AUTHENTICATE PLAIN"
    assert session._caps_enabled == {"sasl", "multi-prefix"}
    session.feed("AUTHENTICATE +")
    assert session.sent[-1] == "AUTHENTICATE cmVsYXlib3QAcmVsYXlib3QAaHVudGVyMg=="
    session.feed(":irc.test 903 relaybot :SASL authentication successful")
    assert session.sent[-1] == "CAP END"


def test_accounts_and_bot_flags_reach_the_origin(session: Recording) -> None:
    session.feed(
        ":irc.test 001 relaybot :Welcome",
        ":irc.test 005 relaybot WHOX BOT=B :are supported by this server",
        ":relaybot!u@h JOIN #relay * :Relay Bot",
        ":irc.test 354 relaybot 171 hu hh helper H*B helperacct",
        ":alice!a@ha JOIN #relay alice :Alice",
        ":helper!hu@hh PRIVMSG #relay :hello",
    )
    assert "WHO #relay %tuhnfa,171" in session.sent
    assert session.joined_channels() == ["#relay"]
    assert Join(Origin("alice", "a", "ha", "alice"), "#relay") in session.events
    assert session.events[-1] == Message(
        Origin("helper", "hu", "hh", "helperacct", bot=True), "#relay", "hello"
    )
    session.feed(":helper!hu@hh NICK helper2", ":helper2!hu@hh QUIT :gone")
    assert session.events[-2] == NickChange(
        Origin("helper", "hu", "hh", "helperacct", True), "helper2"
    )
    assert session.events[-1] == Quit(Origin("helper2", "hu", "hh", "helperacct", True), "gone")
    assert session.accounts == {"relaybot": None, "alice": "alice"} and session.bots == set()


def test_ctcp_action_and_the_text_around_it(session: Recording) -> None:
    session.feed(
        ":bob!b@h PRIVMSG #relay :\x01ACTION waves\x01",
        ":bob!b@h PRIVMSG #relay :before\x01ACTION jumps\x01after",
        ":bob!b@h NOTICE #relay :not for the model",
        ":bob!b@h PRIVMSG #relay :\x01VERSION\x01",
        # Text between CTCP parts counts as CTCP too (the irc library's reading, kept).
        ":bob!b@h PRIVMSG #relay :a\x01VERSION\x01b\x01ACTION sits\x01",
    )
    bob = Origin("bob", "b", "h")
    assert session.events == [
        Action(bob, "#relay", "waves"),
        Message(bob, "#relay", "before"),
        Action(bob, "#relay", "jumps"),
        Message(bob, "#relay", "a"),
        Action(bob, "#relay", "sits"),
    ]


def test_status_modes_and_refused_joins(session: Recording) -> None:
    session.feed(
        ":irc.test 005 relaybot PREFIX=(ov)@+ CHANMODES=beI,k,l,imnst :are supported",
        ":op!o@h MODE #relay +ko-v sekrit alice bob",
        ":irc.test 474 relaybot #relay :Cannot join channel (+b)",
    )
    assert session.events == [
        StatusChange("#relay", "alice", "@", True),
        StatusChange("#relay", "bob", "+", False),
    ]
    assert session.forgotten == ["#relay"] and session.wanted_channels() == []


def test_own_lines_echoed_back_go_to_the_writer_and_on_as_events(session: Recording) -> None:
    said: list[str] = []
    echoes = session.writer.echoes
    echoes.written("PRIVMSG", "#relay", "\x01ACTION waves\x01", lambda: said.append("waves"))
    echoes.written("NOTICE", "alice", "psst", lambda: said.append("psst"))
    session.feed(
        # Someone else saying the same words, and server notices: no echo of ours.
        ":alice!a@h PRIVMSG #relay :\x01ACTION waves\x01",
        ":irc.test NOTICE * :*** Looking up your hostname",
        "NOTICE relaybot :no source at all",
    )
    assert said == [] and len(echoes) == 2
    session.feed(":RelayBot!u@h PRIVMSG #Relay :\x01ACTION waves\x01")  # casefolded nick too
    assert said == ["waves"]
    # The relay still gets our own line, and knows it for ours.
    assert session.events[-1] == Action(Origin("RelayBot", "u", "h"), "#Relay", "waves")
    session.feed(":relaybot!u@h NOTICE alice :psst")
    assert said == ["waves", "psst"] and len(echoes) == 0
