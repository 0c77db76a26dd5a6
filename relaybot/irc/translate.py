"""Server lines as relaybot.irc.events values: pure functions from a parsed IrcMessage (and
who sent it) to the event it means, or None for a line too short to mean one. What the bot
itself does about a line (its own JOIN, a KICK of itself, an INVITE) stays in the session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import irc.client
import irc.ctcp

from relaybot.irc.events import (
    Action,
    Invite,
    Join,
    Kick,
    Message,
    Names,
    NickChange,
    Origin,
    Part,
    Quit,
    StatusChange,
    Topic,
)
from relaybot.irc.message import IrcMessage
from relaybot.irc.text import clean_nick, is_channel_name
from relaybot.irc.tracking import UserTracker


def origin_of(message: IrcMessage, users: UserTracker) -> Origin:
    """Who sent `message`: its source, with the account and bot flag the server gave."""
    if not message.source:
        return Origin("")
    source = irc.client.NickMask(message.source)
    nick = clean_nick(source.nick or "")
    # Without account-tag, fall back to what extended-join, account-notify or WHOX said.
    account = users.account_of(nick, message.tags)
    bot = users.is_bot(nick, message.tags)
    return Origin(nick, source.user or "", source.host or "", account, bot)


# Longer ids are not ids a server made: not sent back (the tags of a line hold 4,094 bytes).
MAX_MSGID = 256


def privmsg_events(message: IrcMessage, origin: Origin) -> list[Message | Action]:
    """A PRIVMSG as plain text and CTCP ACTIONs, in order; other CTCP is no event."""
    # Unpacked as before the split: a PRIVMSG without text raises, and the line is dropped.
    target, text = message.params[:2]
    events: list[Message | Action] = []
    ctcp = False
    for part in irc.ctcp.dequote(text):
        if isinstance(part, tuple):
            # Text after a CTCP part is no message either: the irc library's reading.
            ctcp = True
            if part[0] == "ACTION":
                events.append(Action(origin, target, part[1] if len(part) > 1 else ""))
        elif not ctcp:
            events.append(Message(origin, target, part, message_id(message)))
    return events


def message_id(message: IrcMessage) -> str | None:
    """The line's IRCv3 msgid, if it has a usable one: printable, no spaces, and short enough
    to send back in a `+draft/reply` tag."""
    value = message.tags.get("msgid", "")
    if not value or len(value) > MAX_MSGID or not value.isprintable() or " " in value:
        return None
    return value


def join_event(message: IrcMessage, origin: Origin) -> Join | None:
    if not message.params:
        return None
    channel, args = message.params[0], message.params[1:]
    if args:  # extended-join: the account, or * for none
        account = args[0] if args[0] not in ("", "*") else None
        origin = Origin(origin.nick, origin.user, origin.host, account, origin.bot)
    return Join(origin, channel)


def part_event(message: IrcMessage, origin: Origin) -> Part | None:
    if not message.params:
        return None
    reason = message.params[1] if len(message.params) > 1 else ""
    return Part(origin, message.params[0], reason)


def quit_event(message: IrcMessage, origin: Origin) -> Quit:
    return Quit(origin, message.params[0] if message.params else "")


def nick_event(message: IrcMessage, origin: Origin) -> NickChange:
    return NickChange(origin, clean_nick(message.params[0] if message.params else ""))


def topic_event(message: IrcMessage, origin: Origin) -> Topic | None:
    """TOPIC: someone changed it."""
    if not message.params:
        return None
    text = message.params[1] if len(message.params) > 1 else ""
    return Topic(message.params[0], text, origin)


def current_topic_event(message: IrcMessage) -> Topic | None:
    """332 (me channel :topic): the topic as it is, on join; nobody changed it."""
    if len(message.params) >= 3:
        return Topic(message.params[1], message.params[2], None)
    return None


def names_event(message: IrcMessage) -> Names | None:
    """353 (me symbol channel :names), also with userhost-in-names' nick!user@host."""
    if len(message.params) >= 4:
        names = message.params[3].split()
        return Names(message.params[2], tuple(clean_nick(item.split("!")[0]) for item in names))
    return None


def kick_event(message: IrcMessage, origin: Origin) -> Kick | None:
    if not message.params:
        return None
    target = clean_nick(message.params[1]) if len(message.params) > 1 else ""
    reason = message.params[2] if len(message.params) > 2 else ""
    return Kick(origin, message.params[0], target, reason)


def invite_event(
    message: IrcMessage, origin: Origin, is_me: Callable[[str], bool]
) -> Invite | None:
    """An INVITE of the bot itself; with invite-notify the server also tells of others'."""
    invited = message.params[0] if message.params else ""
    channel = message.params[1] if len(message.params) > 1 else ""
    if not is_me(invited) or not channel:
        return None
    return Invite(origin, channel)


def mode_events(message: IrcMessage, features: Any) -> list[StatusChange]:
    """The status changes (op, voice, ...) in a channel MODE; user modes are none."""
    if not message.params:
        return []
    channel, args = message.params[0], message.params[1:]
    if not args or not is_channel_name(channel):
        return []  # user modes, or a channel MODE without changes
    return [
        StatusChange(channel, nick, prefix, added)
        for nick, prefix, added in status_changes(args[0], args[1:], features)
    ]


def status_changes(modes: str, params: Sequence[str], features: Any) -> list[tuple[str, str, bool]]:
    """(nick, prefix, added) for each status mode in a channel MODE line, using ISUPPORT
    PREFIX and CHANMODES to know which modes take a parameter."""
    prefixes: dict[str, str] = {
        mode: prefix for prefix, mode in dict(getattr(features, "prefix", {})).items()
    }
    chanmodes = getattr(features, "chanmodes", None)
    kinds = list(chanmodes) if isinstance(chanmodes, list) else ["beI", "k", "l", ""]
    always = set("".join(kinds[:2])) | set(prefixes)
    when_set = set(kinds[2]) if len(kinds) > 2 else set()
    result = []
    adding = True
    queue = list(params)
    for char in modes:
        if char in "+-":
            adding = char == "+"
            continue
        takes = char in always or (adding and char in when_set)
        param = queue.pop(0) if takes and queue else None
        if char in prefixes and param:
            result.append((param, prefixes[char], adding))
    return result
