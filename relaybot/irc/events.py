"""Frozen values for what happens on IRC, as the pure core sees it.

The session turns wire messages into these; the transcript and the relay consume them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    """Who did something: nick plus what the server told us about them."""

    nick: str
    user: str = ""
    host: str = ""
    account: str | None = None
    bot: bool = False  # tagged `bot` (IRCv3) or known to be in the server's bot mode

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"


@dataclass(frozen=True, slots=True)
class Message:
    origin: Origin
    target: str  # a channel, or the bot's nick for a private query
    text: str
    msgid: str | None = None  # the server's id for it (IRCv3 msgid), to thread a reply to


@dataclass(frozen=True, slots=True)
class Action:
    """A CTCP ACTION (/me)."""

    origin: Origin
    target: str
    text: str


@dataclass(frozen=True, slots=True)
class Join:
    origin: Origin
    channel: str


@dataclass(frozen=True, slots=True)
class Part:
    origin: Origin
    channel: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Quit:
    origin: Origin
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NickChange:
    origin: Origin
    new_nick: str


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic change by someone (origin), or the topic reported on join (origin None)."""

    channel: str
    text: str
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class Kick:
    origin: Origin
    channel: str
    target: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Invite:
    origin: Origin
    channel: str


@dataclass(frozen=True, slots=True)
class Names:
    """Members reported by RPL_NAMREPLY, status prefixes removed."""

    channel: str
    nicks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A member gained or lost a channel status (MODE +o/-o and the like), as its prefix."""

    channel: str
    nick: str
    prefix: str  # "@", "+", ...
    added: bool


IrcEvent = (
    Message
    | Action
    | Join
    | Part
    | Quit
    | NickChange
    | Topic
    | Kick
    | Invite
    | Names
    | StatusChange
)
