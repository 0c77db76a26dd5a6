"""The bot's own channels: one entry per channel it wants (configured, invited or joined on
command) with its key and whether it is in it now; why a JOIN was refused; whose INVITE it
follows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relaybot.config.schema import IrcConfig
from relaybot.irc.numerics import (
    ERR_BADCHANNELKEY,
    ERR_BANNEDFROMCHAN,
    ERR_CHANNELISFULL,
    ERR_INVITEONLYCHAN,
)
from relaybot.policy.permissions import glob_match

# A refused JOIN forgets the channel (no retry loop against a ban); the reason is logged.
JOIN_REFUSED = {
    ERR_BANNEDFROMCHAN: "banned",
    ERR_INVITEONLYCHAN: "invite only",
    ERR_BADCHANNELKEY: "bad key",
    ERR_CHANNELISFULL: "full",
}


@dataclass(slots=True)
class Channel:
    """Not frozen: `joined` follows our JOIN, PART, KICK and the connection's state."""

    name: str
    key: str | None
    joined: bool = False


def join_line(name: str, key: str | None) -> str:
    return f"JOIN {name} {key}" if key else f"JOIN {name}"


def invite_allowed(
    hostmask: str, account: str | None, config: IrcConfig, fold: Callable[[str], str]
) -> bool:
    """Whether an INVITE from this user is followed: an invite account, or an invite mask."""
    if account and any(fold(account) == fold(allowed) for allowed in config.invite_accounts):
        return True
    return any(glob_match(glob, hostmask, fold) for glob in config.invite_from)
