"""Who is in each channel the bot is in, with their status prefixes ("@", "+", ...): fed by
JOIN, PART, KICK, QUIT, NICK, NAMES and mode changes; asked for operator rights and for the
moderation context. Nicks are kept casefolded."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from relaybot.conversation.identity import ContextKey

STATUS_PREFIXES = "~&@%+"


class Members:
    def __init__(self, fold: Callable[[str], str]) -> None:
        self.fold = fold
        self._by_channel: dict[ContextKey, dict[str, str]] = {}

    def __contains__(self, key: ContextKey) -> bool:
        return key in self._by_channel

    def start(self, key: ContextKey, own_nick: str) -> None:
        """The bot (re)joined: the channel's list starts with just the bot."""
        self._by_channel[key] = {self.fold(own_nick): ""}

    def forget(self, key: ContextKey) -> None:
        self._by_channel.pop(key, None)

    def joined(self, key: ContextKey, nick: str) -> None:
        self._by_channel.setdefault(key, {})[self.fold(nick)] = ""

    def left(self, key: ContextKey, nick: str) -> None:
        self._by_channel.get(key, {}).pop(self.fold(nick), None)

    def names(self, key: ContextKey, entries: Iterable[str]) -> None:
        """A NAMES reply: `entries` are nicks with their status prefixes."""
        members = self._by_channel.setdefault(key, {})
        for entry in entries:
            nick = entry.lstrip(STATUS_PREFIXES)
            members[self.fold(nick)] = entry[: len(entry) - len(nick)]

    def status_changed(self, key: ContextKey, nick: str, prefix: str, added: bool) -> None:
        known = self._by_channel.get(key)
        folded = self.fold(nick)
        if known is not None and folded in known:
            status = known[folded].replace(prefix, "")
            known[folded] = status + prefix if added else status

    def gone_everywhere(self, nick: str, new_nick: str | None = None) -> list[ContextKey]:
        """`nick` quit (or, with `new_nick`, is now called that): the channels it was in."""
        folded = self.fold(nick)
        channels = []
        for key, members in self._by_channel.items():
            if folded not in members:
                continue
            status = members.pop(folded)
            if new_nick is not None:
                members[self.fold(new_nick)] = status
            channels.append(key)
        return channels

    def status_of(self, key: ContextKey, nick: str) -> str:
        return self._by_channel.get(key, {}).get(self.fold(nick), "")

    def sizes(self) -> dict[ContextKey, int]:
        """How many members each channel has (bounded: the tests of hostile input check it)."""
        return {key: len(members) for key, members in self._by_channel.items()}

    def of(self, key: ContextKey) -> frozenset[str]:
        return frozenset(self._by_channel.get(key, {}))
