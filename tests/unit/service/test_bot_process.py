"""The process around the networks: a network's loop that crashes stops the whole bot with a
non-zero status (the service manager then restarts it) instead of leaving that network dead
while the others go on; and one moderation chain cannot be shared by several networks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from relaybot.moderation import build_chain
from relaybot.service.bot import Bot
from relaybot.service.network import Network
from tests.support.fakes import FixedEngine
from tests.support.ircservers import free_port


def two_networks(state: Path) -> str:
    # Nothing listens on these ports: both networks keep retrying, which is all this needs.
    return (
        f'[state]\ndir = "{state}"\n'
        f'[[networks]]\nname = "a"\n[networks.irc]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        'nick = "bot"\nreconnect_min = 5.0\n'
        f'[[networks]]\nname = "b"\n[networks.irc]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        'nick = "bot"\nreconnect_min = 5.0\n'
    )


def test_a_crashed_network_loop_stops_the_process_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    bot = Bot(loads_config(two_networks(tmp_path)), FixedEngine("ok"))  # type: ignore[arg-type]
    crashing = bot.networks["a"]
    real_run = Network.run

    def crash() -> None:
        real_run(crashing)  # stops cleanly when asked...
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(crashing, "run", crash)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(bot.run(install_signal_handlers=False)))
    thread.start()
    crashing.stop()  # ...and the crash comes as it ends
    thread.join(30)
    assert not thread.is_alive(), "the bot did not stop"
    assert result == [1]
    assert bot.networks["b"].session.loop.stopping.is_set()  # b was stopped too


def test_one_chain_cannot_serve_two_networks(tmp_path: Path) -> None:
    config = loads_config(two_networks(tmp_path))
    chain = build_chain(config.networks[0].moderation)
    with pytest.raises(ValueError, match="one moderation chain per network"):
        Bot(config, FixedEngine("ok"), moderation=chain)  # type: ignore[arg-type]
