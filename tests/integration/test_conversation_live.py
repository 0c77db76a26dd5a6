"""The bot against real IRC servers on loopback, replying through the real embedded model."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import SERVER_KINDS, RawClient, RunningServer

pytestmark = pytest.mark.integration
REPLY_TIMEOUT = 90.0


def bot_config(
    config_factory: Callable[[str], Config],
    server: RunningServer,
    extra: str = "",
    channels: str = '["#relay"]',
    nick: str = "relaybot",
    reply: str = "",
) -> Config:
    return config_factory(f"""
[irc]
network = "test"
host = "{server.host}"
port = {server.port}
nick = "{nick}"
channels = {channels}
{extra}
[reply]
max_lines = 2
{reply}
[model]
max_new_tokens = 48
seed = 7
""")


def from_bot(nick: str, command: str, target: str) -> Callable[[str], bool]:
    prefix = f":{nick}!"
    return lambda line: line.startswith(prefix) and f" {command} {target}" in line


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_bot_joins_and_replies_through_the_real_model(
    kind: str,
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory(kind)
    with BotRunner(bot_config(config_factory, server), real_engine) as runner:  # type: ignore[arg-type]
        alice = RawClient.connect(server.host, server.port, "alice")
        runner.wait_until(lambda: runner.turns("#relay") is not None, 20, "the bot to join")
        alice.join("#relay")
        runner.wait_for_turn("#relay", "* alice has joined #relay")
        alice.privmsg("#relay", "relaybot: hello! what do you like to do on weekends?")
        reply = alice.wait_for(from_bot("relaybot", "PRIVMSG", "#relay"), REPLY_TIMEOUT)
        text = reply.split(" :", 1)[1]
        assert text.strip()
        assert len(reply.encode()) + 2 <= 512
        # The reply entered the context as the bot's own turn once sent.
        runner.wait_for_turn("#relay", text)
        turns = runner.turns("#relay")
        assert turns is not None
        roles = [(turn.role, turn.content) for turn in turns]
        assert ("alice", "relaybot: hello! what do you like to do on weekends?") in roles
        assert ("relaybot", text) in roles
        alice.close()


GOLDEN_PROMPT = (
    "<|im_start|>relaybot\n/join #golden<|im_end|>\n"
    "<|im_start|>system\n* Now talking in #golden<|im_end|>\n"
    # The header carries the current topic, so trimming never loses it.
    "<|im_start|>system\n* Topic for #golden is: all about salmon<|im_end|>\n"
    "<|im_start|>system\n* bob has joined #golden<|im_end|>\n"
    "<|im_start|>alice\nhi bob, welcome <|im_end|> to the channel<|im_end|>\n"
    "<|im_start|>system\n* bob waves at everyone<|im_end|>\n"
    "<|im_start|>system\n* bob is now known as bobby<|im_end|>\n"
    "<|im_start|>bobby\n...<|im_end|>\n"
    "<|im_start|>system\n* carol has joined #golden<|im_end|>\n"
    "<|im_start|>carol\n/topic all about salmon<|im_end|>\n"
    "<|im_start|>system\n* Topic for #golden is: all about salmon<|im_end|>\n"
    "<|im_start|>system\n* bobby was kicked by alice (be nice)<|im_end|>\n"
    "<|im_start|>system\n* carol has left #golden (gone fishing)<|im_end|>\n"
    "<|im_start|>system\n* dave has joined #golden<|im_end|>\n"
    "<|im_start|>system\n* dave has quit (Quit: bye)<|im_end|>\n"
    "<|im_start|>relaybot\n"
)


def test_channel_events_become_the_relay_context(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("inspircd")
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#golden")  # alice creates the channel and is its operator
    alice.send("TOPIC #golden :all about trout")
    alice.wait_for(lambda line: " TOPIC #golden " in line, 10)
    alice.send("MODE #golden -t")
    config = bot_config(config_factory, server, channels='["#golden"]', reply="on_mention = false")
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#golden") is not None, 20, "the bot to join")
        bob = RawClient.connect(server.host, server.port, "bob")
        bob.join("#golden")
        runner.wait_for_turn("#golden", "* bob has joined")
        # A ChatML marker typed by a person is text, not structure.
        alice.privmsg("#golden", "hi bob, welcome <|im_end|> to the channel")
        runner.wait_for_turn("#golden", "welcome")
        bob.privmsg("#golden", "\x01ACTION waves at everyone\x01")
        runner.wait_for_turn("#golden", "waves at everyone")
        bob.send("NICK bobby")
        runner.wait_for_turn("#golden", "is now known as bobby")
        bob.privmsg("#golden", "   ")
        carol = RawClient.connect(server.host, server.port, "carol")
        carol.join("#golden")
        carol.send("TOPIC #golden :all about salmon")
        runner.wait_for_turn("#golden", "/topic all about salmon")
        alice.send("KICK #golden bobby :be nice")
        runner.wait_for_turn("#golden", "was kicked by alice")
        carol.send("PART #golden :gone fishing")
        runner.wait_for_turn("#golden", "has left #golden")
        dave = RawClient.connect(server.host, server.port, "dave")
        dave.join("#golden")
        runner.wait_for_turn("#golden", "* dave has joined")
        dave.send("QUIT :bye")
        runner.wait_for_turn("#golden", "* dave has quit")
        prompt = runner.prompt_text("#golden")
        assert prompt == GOLDEN_PROMPT
        for client in (alice, bob, carol):
            client.close()


def test_one_channel_never_sees_another_channels_lines(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("ngircd")
    config = bot_config(config_factory, server, channels='["#alpha", "#beta"]')
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(
            lambda: runner.turns("#alpha") is not None and runner.turns("#beta") is not None,
            20,
            "the bot to join both channels",
        )
        anna = RawClient.connect(server.host, server.port, "anna")
        anna.join("#alpha")
        ben = RawClient.connect(server.host, server.port, "ben")
        ben.join("#beta")
        anna.privmsg("#alpha", "alpha secret: the password is swordfish")
        ben.privmsg("#beta", "relaybot: beta question, how is the weather?")
        ben.wait_for(from_bot("relaybot", "PRIVMSG", "#beta"), REPLY_TIMEOUT)
        anna.send("QUIT :leaving")
        runner.wait_for_turn("#alpha", "* anna has quit")
        alpha = runner.prompt_text("#alpha")
        beta = runner.prompt_text("#beta")
        assert "swordfish" in alpha and "swordfish" not in beta
        assert "beta question" in beta and "beta question" not in alpha
        assert "anna" not in beta  # anna's QUIT goes only where anna was
        assert "ben" not in alpha
        ben.close()


def test_taken_nick_falls_back_and_still_works(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("inspircd")
    squatter = RawClient.connect(server.host, server.port, "relaybot")
    config = bot_config(config_factory, server, extra='alt_nicks = ["relaybot_"]')
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#relay") is not None, 20, "the bot to join")
        assert runner.on_reactor(lambda: runner.net.session.nick) == "relaybot_"
        turns = runner.turns("#relay")
        assert turns is not None and turns[0].role == "relaybot_"
        alice = RawClient.connect(server.host, server.port, "alice")
        alice.join("#relay")
        alice.privmsg("#relay", "relaybot_: are you there?")
        alice.wait_for(from_bot("relaybot_", "PRIVMSG", "#relay"), REPLY_TIMEOUT)
        alice.close()
    squatter.close()


def test_invite_from_an_allowed_user_is_accepted_and_others_ignored(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("inspircd")
    config = bot_config(config_factory, server, channels="[]", extra='invite_from = ["alice!*@*"]')
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.net.session.registered, 20, "the bot to register")
        mallory = RawClient.connect(server.host, server.port, "mallory")
        mallory.join("#trap")
        mallory.send("INVITE relaybot #trap")
        alice = RawClient.connect(server.host, server.port, "alice")
        alice.join("#invited")
        alice.send("INVITE relaybot #invited")
        alice.wait_for(lambda line: line.startswith(":relaybot!") and " JOIN " in line, 20)
        runner.wait_until(lambda: runner.turns("#invited") is not None, 10, "a context")
        assert runner.turns("#trap") is None
        alice.privmsg("#invited", "relaybot: thanks for coming!")
        alice.wait_for(from_bot("relaybot", "PRIVMSG", "#invited"), REPLY_TIMEOUT)
        assert not any(line.startswith(":relaybot!") and "JOIN" in line for line in mallory.lines)
        for client in (alice, mallory):
            client.close()


def test_private_query_uses_the_trained_two_party_roles(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("miniircd")
    with BotRunner(bot_config(config_factory, server), real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.net.session.registered, 20, "the bot to register")
        zoe = RawClient.connect(server.host, server.port, "zoe")
        zoe.privmsg("relaybot", "hi, can we talk privately?")
        reply = zoe.wait_for(from_bot("relaybot", "PRIVMSG", "zoe"), REPLY_TIMEOUT)
        text = reply.split(" :", 1)[1]
        runner.wait_for_turn("zoe", text)
        turns = runner.turns("zoe")
        assert turns is not None
        assert [(t.role, t.content) for t in turns][:2] == [
            ("anon", "hi, can we talk privately?"),
            ("user", text),
        ]
        assert runner.turns("#relay") is not None
        assert "privately" not in runner.prompt_text("#relay")
        zoe.close()


@pytest.mark.parametrize("rejoin", [False, True])
def test_kick_forgets_the_channel_or_rejoins_when_configured(
    rejoin: bool,
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("inspircd")
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#relay")  # alice is the channel operator
    extra = f"rejoin_on_kick = {'true' if rejoin else 'false'}\nrejoin_delay = 0.5"
    with BotRunner(bot_config(config_factory, server, extra=extra), real_engine) as runner:  # type: ignore[arg-type]
        alice.wait_for(lambda line: line.startswith(":relaybot!") and " JOIN " in line, 20)
        alice.privmsg("#relay", "remember this line")
        runner.wait_for_turn("#relay", "remember this line")
        alice.send("KICK #relay relaybot :out")
        alice.wait_for(lambda line: " KICK #relay relaybot" in line, 10)
        if rejoin:
            # wait_for consumes lines: this is the second JOIN, after the kick.
            alice.wait_for(lambda line: line.startswith(":relaybot!") and " JOIN " in line, 10)
            runner.wait_until(lambda: runner.turns("#relay") is not None, 10, "a fresh context")
        else:
            runner.wait_until(lambda: runner.turns("#relay") is None, 10, "the context to go")
            assert runner.on_reactor(lambda: "#relay" not in runner.net.session.channels)
        alice.close()


def test_an_instruct_format_renders_the_channel_and_the_bot_replies(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("miniircd")
    config = config_factory(f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
[model]
format = "chatml"
max_new_tokens = 48
seed = 7
""")
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        alice = RawClient.connect(server.host, server.port, "alice")
        runner.wait_until(lambda: runner.turns("#relay") is not None, 20, "the bot to join")
        alice.join("#relay")
        alice.privmsg("#relay", "relaybot: what is the capital of France?")
        reply = alice.wait_for(from_bot("relaybot", "PRIVMSG", "#relay"), REPLY_TIMEOUT)
        text = reply.split(" :", 1)[1]
        assert text.strip() and not text.startswith("<relaybot>")
        prompt = runner.prompt_text("#relay")
        assert prompt.startswith("<|im_start|>system\nYou are relaybot")
        assert "<alice> relaybot: what is the capital of France?" in prompt
        assert prompt.endswith("<|im_start|>assistant\n")
        alice.close()
