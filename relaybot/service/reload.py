"""What a reload changes: the new config held against the old one, as a plan of channels to
join and part and of the sections that only a restart applies. Pure; the bot carries it out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relaybot.config.schema import ChannelConfig, Config, NetworkConfig


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    join: tuple[ChannelConfig, ...]  # newly configured, and not parted by an operator
    part: tuple[str, ...]  # no longer configured, and not joined by an operator
    needs_restart: tuple[str, ...]  # what changed but cannot be applied while running

    def summary(self) -> str:
        text = "config reloaded"
        if self.join or self.part:
            joined = ", ".join(channel.name for channel in self.join) or "none"
            text += f"; joined {joined}, left {', '.join(self.part) or 'none'}"
        if self.needs_restart:
            text += f"; restart to apply: {', '.join(self.needs_restart)}"
        return text


def plan_reload(
    old: Config,
    new: Config,
    network: str,
    *,
    operator_joined: Iterable[str],
    operator_parted: Iterable[str],
    fold: Callable[[str], str],
) -> ReloadPlan:
    """The plan for `network`, which both configs hold."""
    old_net, new_net = old.network(network), new.network(network)
    needs_restart = tuple(
        name
        for name, changed in (
            ("irc connection", _without_channels(old_net) != _without_channels(new_net)),
            ("model", old.model != new.model),
            ("state", old.state != new.state),
            ("metrics", old.metrics != new.metrics),  # the endpoint is bound at start
        )
        if changed
    )
    old_names = {fold(channel.name) for channel in old_net.irc.channels}
    new_names = {fold(channel.name): channel for channel in new_net.irc.channels}
    parted = {fold(name) for name in operator_parted}
    joined = {fold(name) for name in operator_joined}
    return ReloadPlan(
        join=tuple(
            channel
            for folded, channel in new_names.items()
            if folded not in old_names and folded not in parted
        ),
        part=tuple(
            channel.name
            for channel in old_net.irc.channels
            if fold(channel.name) not in new_names and fold(channel.name) not in joined
        ),
        needs_restart=needs_restart,
    )


def _without_channels(net: NetworkConfig) -> object:
    return dataclasses.replace(net.irc, channels=())
