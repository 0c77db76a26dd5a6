"""When the bot replies: addressed by nick, in a private query, or (optionally) by chance."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from relaybot.text import casefold, strip_formatting

# Characters that may appear in a nick (RFC 2812 plus common extensions); used as word edges.
_NICK_CHARS = r"A-Za-z0-9\[\]\\`_\^\{\|\}\-"


def is_addressed(text: str, nick: str, casemapping: str = "rfc1459") -> bool:
    """`nick: hi`, `nick, hi`, or the nick mentioned anywhere as a word."""
    folded_text = casefold(strip_formatting(text), casemapping)
    folded_nick = casefold(nick, casemapping)
    pattern = rf"(?<![{_NICK_CHARS}]){re.escape(folded_nick)}(?![{_NICK_CHARS}])"
    return re.search(pattern, folded_text) is not None


@dataclass(frozen=True, slots=True)
class ReplyPolicy:
    on_mention: bool = True
    in_query: bool = True
    chance: float = 0.0

    def should_reply(
        self,
        *,
        text: str,
        sender: str,
        bot_nick: str,
        private: bool,
        casemapping: str = "rfc1459",
        random: Callable[[], float],
    ) -> bool:
        if casefold(sender, casemapping) == casefold(bot_nick, casemapping):
            return False
        if private:
            return self.in_query
        if self.on_mention and is_addressed(text, bot_nick, casemapping):
            return True
        return self.chance > 0.0 and random() < self.chance
