"""Client tags on a real InspIRCd (message-tags, msgid): a reply is threaded to the line it
answers (`+draft/reply`), and `+typing` notices go out while it is generated: "active" first,
"done" when the generation ends without a reply. On ngIRCd, which has no message-tags, the same
reply goes out untagged and no TAGMSG is sent.

A watcher client asks for message-tags after registering, so that it sees the tags the server
relays; the asker is a plain client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, parse_line

pytestmark = pytest.mark.integration

CHANNEL = "#tags"
TIMEOUT = 20.0


def toml(server: RunningServer) -> str:
    return f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
[policy]
cooldown = 0.0
"""


def tags_of(line: str) -> dict[str, str]:
    if not line.startswith("@"):
        return {}
    tags: dict[str, str] = {}
    for item in line[1:].split(" ", 1)[0].split(";"):
        name, _, value = item.partition("=")
        tags[name] = value
    return tags


def watcher_with_tags(server: RunningServer) -> RawClient:
    watcher = RawClient.connect(server.host, server.port, "watcher")
    watcher.send("CAP REQ :message-tags")
    watcher.wait_for(lambda line: parse_line(line)[1] == "CAP", TIMEOUT)
    watcher.join(CHANNEL)
    return watcher


def from_bot(command: str) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        source, verb, params = parse_line(line)
        return source == "relaybot" and verb == command and params[:1] == [CHANNEL]

    return match


def bot_in_channel(runner: BotRunner) -> None:
    runner.wait_until(lambda: runner.turns(CHANNEL) is not None, TIMEOUT, "the bot to join")


def test_a_reply_is_threaded_and_typing_is_shown_on_inspircd(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("inspircd")
    with BotRunner(config_factory(toml(server)), FixedEngine("hello there")) as runner:
        bot_in_channel(runner)
        watcher = watcher_with_tags(server)
        asker = RawClient.connect(server.host, server.port, "asker")
        asker.join(CHANNEL)
        asker.privmsg(CHANNEL, "relaybot: hi")
        question = watcher.wait_for(lambda line: "relaybot: hi" in line, TIMEOUT)
        msgid = tags_of(question).get("msgid")
        assert msgid, question
        typing = watcher.wait_for(from_bot("TAGMSG"), TIMEOUT)
        assert tags_of(typing).get("+typing") == "active"
        reply = watcher.wait_for(from_bot("PRIVMSG"), TIMEOUT)
        assert parse_line(reply)[2][1] == "hello there"
        assert tags_of(reply).get("+draft/reply") == msgid
        assert watcher.lines.index(typing) < watcher.lines.index(reply)
        # The context holds the reply as said, untouched by the tags.
        runner.wait_for_turn(CHANNEL, "hello there")


def test_typing_ends_with_done_when_nothing_is_said_on_inspircd(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("inspircd")
    # A command-looking line is never sent: the generation ends with nothing to say.
    with BotRunner(config_factory(toml(server)), FixedEngine("/join #elsewhere")) as runner:
        bot_in_channel(runner)
        watcher = watcher_with_tags(server)
        watcher.privmsg(CHANNEL, "relaybot: hi")
        active = watcher.wait_for(from_bot("TAGMSG"), TIMEOUT)
        done = watcher.wait_for(from_bot("TAGMSG"), TIMEOUT)
        assert [tags_of(active).get("+typing"), tags_of(done).get("+typing")] == [
            "active",
            "done",
        ]
        assert not any(from_bot("PRIVMSG")(line) for line in watcher.lines)


def test_without_message_tags_the_reply_is_plain_on_ngircd(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("ngircd")
    with BotRunner(config_factory(toml(server)), FixedEngine("hello there")) as runner:
        bot_in_channel(runner)
        watcher = RawClient.connect(server.host, server.port, "watcher")
        watcher.join(CHANNEL)
        watcher.privmsg(CHANNEL, "relaybot: hi")
        reply = watcher.wait_for(from_bot("PRIVMSG"), TIMEOUT)
        assert parse_line(reply)[2][1] == "hello there" and not reply.startswith("@")
        assert not any(from_bot("TAGMSG")(line) for line in watcher.lines)
