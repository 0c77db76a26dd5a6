"""CTCP against real servers (ngIRCd, InspIRCd): a query sent to the bot in private gets its
reply in a NOTICE, PING round-trips its argument, a channel CTCP gets nothing at all, and a
burst of private queries gets at most the rate limit's worth of replies while the bot stays
connected. 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from relaybot import __version__
from relaybot.config.schema import Config
from relaybot.irc import ctcp
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, parse_line

pytestmark = pytest.mark.integration

CHANNEL = "#ctcp"
WAIT = 15.0


def ctcp_reply(to: str, command: str) -> Callable[[str], bool]:
    """A NOTICE from the bot to `to` that is one CTCP reply to `command`."""

    def match(line: str) -> bool:
        source, verb, params = parse_line(line)
        return (
            source == "relaybot"
            and verb == "NOTICE"
            and params[:1] == [to]
            and params[-1].startswith(f"\x01{command}")
        )

    return match


def from_bot(client: RawClient) -> list[str]:
    """Every PRIVMSG/NOTICE the bot sent that `client` received."""
    return [
        line
        for line in client.lines
        if parse_line(line)[0] == "relaybot" and parse_line(line)[1] in ("PRIVMSG", "NOTICE")
    ]


@pytest.mark.parametrize("kind", ["ngircd", "inspircd"])
def test_private_ctcp_is_answered_and_channel_ctcp_is_not(
    kind: str,
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory(kind)
    config = config_factory(f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
""")
    engine = FixedEngine("never asked")
    with BotRunner(config, engine) as runner:
        session = runner.net.session
        runner.wait_until(
            lambda: CHANNEL in runner.on_reactor(session.joined_channels), 20, "the bot to join"
        )
        with (
            RawClient.connect(server.host, server.port, "alice") as alice,
            RawClient.connect(server.host, server.port, "bob") as bob,
            RawClient.connect(server.host, server.port, "carol") as carol,
        ):
            alice.join(CHANNEL)
            bob.join(CHANNEL)

            # VERSION in private: one NOTICE, framed as one CTCP reply.
            alice.privmsg("relaybot", "\x01VERSION\x01")
            line = alice.wait_for(ctcp_reply("alice", "VERSION"), WAIT)
            text = parse_line(line)[2][-1]
            assert text.startswith(f"\x01VERSION relaybot {__version__} ")
            assert text.endswith("\x01") and text.count("\x01") == 2

            # PING round-trips its argument; hostile bytes in it do not.
            alice.privmsg("relaybot", "\x01PING 1700000000 42\x01")
            line = alice.wait_for(ctcp_reply("alice", "PING"), WAIT)
            assert parse_line(line)[2][-1] == "\x01PING 1700000000 42\x01"

            # A channel CTCP: nothing, to anyone. Bob's private PING afterwards is the marker:
            # a reply to the channel query would have been queued before it.
            bob.privmsg(CHANNEL, "\x01VERSION\x01")
            bob.privmsg(CHANNEL, "\x01PING 1\x01")
            bob.privmsg("relaybot", "\x01PING marker \x02bold\x02\x01")
            line = bob.wait_for(ctcp_reply("bob", "PING"), WAIT)
            assert parse_line(line)[2][-1] == "\x01PING marker bold\x01"
            assert [parse_line(line)[2][-1] for line in from_bot(bob)] == [
                "\x01PING marker bold\x01"
            ]
            assert len(from_bot(alice)) == 2  # the two replies above; nothing in the channel

            # A burst from one person: at most the per-person burst, plus what refills meanwhile.
            started = time.monotonic()
            carol.send_bytes(b"PRIVMSG relaybot :\x01VERSION\x01\r\n" * 20)
            carol.wait_for(ctcp_reply("carol", "VERSION"), WAIT)
            time.sleep(3.0)  # time for any reply past the limit to arrive (none may)
            with pytest.raises(TimeoutError):
                carol.wait_for(lambda line: False, 0.5)  # read what is there
            elapsed = time.monotonic() - started
            replies = [line for line in from_bot(carol) if ctcp_reply("carol", "VERSION")(line)]
            allowed = ctcp.PER_PERSON_BURST + int(elapsed / ctcp.PER_PERSON_INTERVAL)
            assert 1 <= len(replies) <= allowed
            assert len(from_bot(carol)) == len(replies)

            # The bot is still there, still in the channel, and said nothing in it.
            assert runner.on_reactor(session.connection.is_connected)
            assert CHANNEL in runner.on_reactor(session.joined_channels)
            assert not any(parse_line(line)[2][:1] == [CHANNEL] for line in from_bot(alice))
            assert engine.requests == 0  # no query ever reached a conversation
