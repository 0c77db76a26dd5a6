"""One bot process on two real IRC servers at once (InspIRCd and ngIRCd), through the real
embedded model: it answers on both; replies from both networks decode in one batch of the one
engine; nothing said on one network enters the other's context, though the channel has the
same name on both; an operator of one network has no rights on the other; `!relay status` is
the network's own; and killing one server leaves the other answering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, notice_to, parse_line

pytestmark = pytest.mark.integration

CHANNEL = "#relay"  # the same name on both networks: their contexts must stay apart
REPLY_TIMEOUT = 90.0
OPERATOR_MASK = "*!*oper@127.0.0.1"


def config_text(alpha: RunningServer, beta: RunningServer, state: Path) -> str:
    return f"""
[model]
max_new_tokens = 24
seed = 7
[policy]
cooldown = 0.0
user_burst = 50
channel_burst = 50
[state]
dir = "{state}"

[[networks]]
name = "alpha"
[networks.irc]
host = "{alpha.host}"
port = {alpha.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
reconnect_min = 0.5
reconnect_max = 1.0
[networks.operators]
hostmasks = ["{OPERATOR_MASK}"]

[[networks]]
name = "beta"
[networks.irc]
host = "{beta.host}"
port = {beta.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
reconnect_min = 0.5
reconnect_max = 1.0
"""


def bot_says(line: str) -> bool:
    source, verb, params = parse_line(line)
    return source == "relaybot" and verb == "PRIVMSG" and params[:1] == [CHANNEL]


def batches(logs: list[dict[str, Any]]) -> list[list[str]]:
    return [e["networks"] for e in logs if e.get("event") == "batch_generated"]


def test_one_process_two_networks(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
    tmp_path: Path,
) -> None:
    alpha = irc_server_factory("inspircd")
    beta = irc_server_factory("ngircd")
    state = tmp_path / "state"
    config = config_factory(config_text(alpha, beta, state))
    assert [net.name for net in config.networks] == ["alpha", "beta"]
    with capture_logs() as logs, BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        for name in ("alpha", "beta"):
            runner.wait_until(
                lambda name=name: runner.turns(CHANNEL, name) is not None,  # type: ignore[misc]
                30,
                f"the bot to join {CHANNEL} on {name}",
            )
        alice = RawClient.connect(alpha.host, alpha.port, "alice")
        bob = RawClient.connect(beta.host, beta.port, "bob")
        alice.join(CHANNEL)
        bob.join(CHANNEL)

        # Replies on both, from one batch: both questions are asked together (continuous
        # batching lets the later one join the batch the earlier one started). The engine
        # logs the batch when its last row ends, after the replies went out.
        topics = [("the sea", "mountains"), ("rivers", "forests"), ("the moon", "deserts")]
        for round_, (sea, mountain) in enumerate(topics):
            alice.privmsg(CHANNEL, f"relaybot: alpha question {round_}, what is {sea} like?")
            bob.privmsg(CHANNEL, f"relaybot: beta question {round_}, what are {mountain} like?")
            alice.wait_for(bot_says, REPLY_TIMEOUT)
            bob.wait_for(bot_says, REPLY_TIMEOUT)
            try:
                runner.wait_until(lambda: ["alpha", "beta"] in batches(logs), 10, "the batch")
                break
            except AssertionError:
                continue
        assert ["alpha", "beta"] in batches(logs), batches(logs)

        # No context crosses networks: each holds its own questions and none of the other's.
        alpha_turns = [t.content for t in runner.turns(CHANNEL, "alpha") or []]
        beta_turns = [t.content for t in runner.turns(CHANNEL, "beta") or []]
        assert any("alpha question 0" in text for text in alpha_turns), alpha_turns
        assert any("beta question 0" in text for text in beta_turns), beta_turns
        assert not any("beta question" in text for text in alpha_turns), alpha_turns
        assert not any("alpha question" in text for text in beta_turns), beta_turns

        # The same person (same user@host) is an operator on alpha only.
        oper_a = RawClient.connect(alpha.host, alpha.port, "oper")
        oper_b = RawClient.connect(beta.host, beta.port, "oper")
        oper_a.join(CHANNEL)
        oper_b.join(CHANNEL)
        oper_a.privmsg(CHANNEL, "!relay status")
        status = parse_line(oper_a.wait_for(notice_to("oper", "network alpha"), 20))[2][-1]
        assert "channels: #relay" in status and "pending for all 2 networks" in status
        oper_b.privmsg(CHANNEL, "!relay mute")
        refusal = oper_b.wait_for(notice_to("oper", "for the bot's operators"), 20)
        assert "mute" in refusal
        runner.wait_until(
            lambda: any(
                e.get("event") == "command_refused" and e.get("network") == "beta" for e in logs
            ),
            10,
            "the refusal logged on beta",
        )

        # Killing one server leaves the other answering.
        beta.stop()
        runner.wait_until(
            lambda: (
                not runner.on_reactor(
                    lambda: runner.bot.networks["beta"].session.registered, network="beta"
                )
            ),
            30,
            "beta to notice its server is gone",
        )
        alice.privmsg(CHANNEL, "relaybot: are you still there on alpha?")
        alice.wait_for(bot_says, REPLY_TIMEOUT)
        assert runner.thread.is_alive()
        alpha_net = runner.bot.networks["alpha"]
        assert runner.on_reactor(lambda: alpha_net.session.registered, network="alpha")
        for client in (alice, bob, oper_a, oper_b):
            client.close()
    # Each network's state in its own folder (the contexts are saved at shutdown).
    assert list((state / "alpha").glob("contexts/*")) and list((state / "beta").glob("contexts/*"))
