"""Runs a real Bot (session, relay, worker) on a thread for integration tests, and reads its
state safely by asking the reactor thread for snapshots."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from relaybot.config.schema import Config
from relaybot.conversation.formats import Turn
from relaybot.inference.engine import Engine
from relaybot.service.bot import Bot
from relaybot.service.network import Network

T = TypeVar("T")


class BotRunner:
    def __init__(self, config: Config, engine: Engine, **bot_options: Any) -> None:
        if config.state.dir is None:
            # Never the user's real state directory, and no state shared between tests.
            state = dataclasses.replace(config.state, dir=tempfile.mkdtemp(prefix="relaybot-"))
            config = dataclasses.replace(config, state=state)
        self.bot = Bot(config, engine, **bot_options)
        self.thread = threading.Thread(
            target=self.bot.run, kwargs={"install_signal_handlers": False}, daemon=True
        )

    def __enter__(self) -> BotRunner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.bot.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the bot did not stop within 20 s"

    @property
    def net(self) -> Network:
        """The network of a one-network bot, as most tests run it."""
        return self.bot.only

    def network(self, name: str | None) -> Network:
        return self.net if name is None else self.bot.networks[name]

    def on_reactor(
        self, fn: Callable[[], T], timeout: float = 10.0, network: str | None = None
    ) -> T:
        """Run `fn` on the loop thread of `network` (the one network when None), the owner of
        that network's state, and return its value."""
        done = threading.Event()
        box: list[T] = []
        self.network(network).session.call_soon(lambda: (box.append(fn()), done.set()))
        assert done.wait(timeout), "the reactor thread did not answer"
        return box[0]

    def turns(self, channel: str, network: str | None = None) -> list[Turn] | None:
        net = self.network(network)

        def read() -> list[Turn] | None:
            transcript = net.relay.transcript(channel)
            return None if transcript is None else transcript.turns_for(net.session.nick)

        return self.on_reactor(read, network=network)

    def prompt_text(self, channel: str) -> str:
        def read() -> str:
            transcript = self.net.relay.transcript(channel)
            assert transcript is not None, f"no context for {channel}"
            nick = self.net.session.nick
            return self.net.relay.fmt.render(transcript.turns_for(nick), nick).text

        return self.on_reactor(read)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_for_turn(self, channel: str, content: str, timeout: float = 10.0) -> None:
        def present() -> bool:
            turns = self.turns(channel)
            return turns is not None and any(content in turn.content for turn in turns)

        self.wait_until(present, timeout, f"{content!r} in the context of {channel}")


def with_irc(config: Config, **changes: Any) -> Config:
    """`config` (one network) with `changes` made to its `[irc]` settings."""
    (net,) = config.networks
    irc = dataclasses.replace(net.irc, **changes)
    return dataclasses.replace(config, networks=(dataclasses.replace(net, irc=irc),))
