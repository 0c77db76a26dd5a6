"""Who is an operator, as the server tells it: services accounts from account-tag,
extended-join, account-notify and WHOX, against a scripted server; a nick that merely
equals an operator's account grants nothing, and `bot`-tagged lines get no reply."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration


def test_operators_are_recognised_by_services_account(
    config_factory: Callable[[str], Config],
) -> None:
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
[operators]
accounts = ["opacct"]
[policy]
cooldown = 0.0
""")
    engine = FixedEngine("ok")
    with BotRunner(config, engine) as runner:  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"USER ", 10)
        server.send(
            b":irc.test 001 relaybot :Welcome\r\n"
            b":irc.test 005 relaybot WHOX BOT=B CASEMAPPING=rfc1459 :are supported\r\n"
        )
        server.wait_for(b"MODE relaybot +B", 10)  # bot mode, as the server advertised
        server.wait_for(b"JOIN #relay", 10)
        server.send(b":relaybot!bot@10.0.0.1 JOIN #relay\r\n")
        server.wait_for(b"WHO #relay %tuhnfa,171", 10)
        server.send(
            b":irc.test 354 relaybot 171 e erin.example erin H opacct\r\n"
            b":irc.test 354 relaybot 171 o other.example otto H@B 0\r\n"
            b":irc.test 315 relaybot #relay :End of WHO\r\n"
        )

        def answered(nick: str, text: str) -> None:
            server.wait_for(f"NOTICE {nick} :{text}".encode(), 10)

        # account-tag on the message itself
        server.send(b"@account=opacct :boss!x@evil.example PRIVMSG #relay :!relay status\r\n")
        answered("boss", "network default; model fixed")
        # extended-join told us carol's account
        server.send(b":carol!c@h.example JOIN #relay opacct :Carol\r\n")
        server.send(b":carol!c@h.example PRIVMSG #relay :!relay mute 1m\r\n")
        answered("carol", "muted in #relay 1m")
        # account-notify: dave logs in, then out
        server.send(b":dave!d@h.example ACCOUNT opacct\r\n")
        server.send(b":dave!d@h.example PRIVMSG #relay :!relay unmute\r\n")
        answered("dave", "unmuted in #relay")
        server.send(b":dave!d@h.example ACCOUNT *\r\n")
        server.send(b":dave!d@h.example PRIVMSG #relay :!relay mute\r\n")
        answered("dave", "Sorry, mute is for the bot's operators.")
        # WHOX on join told us erin's account
        server.send(b":erin!e@erin.example PRIVMSG #relay :!relay set chance 0.5\r\n")
        answered("erin", "chance in #relay is now 0.5")
        # a nick equal to the operator account, with no account: nothing
        server.send(b":opacct!x@h.example PRIVMSG #relay :!relay join #evil\r\n")
        answered("opacct", "Sorry, join is for the bot's operators.")
        assert not any(b"JOIN #evil" in line for line in server.received)

        # Lines from bots (the IRCv3 tag, or the WHO flag) are never answered.
        before = engine.requests
        server.send(b"@bot :robo!r@h PRIVMSG #relay :relaybot: hello\r\n")
        server.send(b":otto!o@other.example PRIVMSG #relay :relaybot: hello too\r\n")
        runner.wait_for_turn("#relay", "relaybot: hello too")
        server.send(b":human!h@h PRIVMSG #relay :relaybot: and me?\r\n")
        server.wait_for(b"PRIVMSG #relay :ok", 10)
        assert engine.requests == before + 1
    server.close()
