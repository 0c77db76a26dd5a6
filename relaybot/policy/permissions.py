"""Who someone is, for the bot: IRC masks, ignore lists and operator rights.

Operators are recognised by services account or by a full nick!user@host glob, and channel
operators (when allowed) by their status in that channel. A nick alone never grants anything.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from relaybot.config.schema import OperatorConfig
from relaybot.irc.events import Origin

Fold = Callable[[str], str]
ACCOUNT_PREFIX = "$a:"
CHANNEL_OP_PREFIXES = frozenset("~&@")  # founder, admin, op; halfop (%) and voice are not ops


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    # IRC masks know only * and ?; brackets are ordinary nick characters, unlike fnmatch.
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), re.DOTALL)


def glob_match(glob: str, text: str, fold: Fold) -> bool:
    return _glob_regex(fold(glob)).fullmatch(fold(text)) is not None


def normalise_mask(mask: str) -> str:
    """`nick`, `nick!user`, `*@host` and `$a:account` forms; hostmask parts default to `*`."""
    mask = mask.strip()
    if mask.startswith(ACCOUNT_PREFIX) or ("!" not in mask and "@" not in mask):
        return mask
    nick, _, rest = mask.partition("!") if "!" in mask else ("*", "", mask)
    user, _, host = rest.partition("@") if "@" in rest else (rest, "", "*")
    return f"{nick or '*'}!{user or '*'}@{host or '*'}"


def mask_matches(mask: str, origin: Origin, fold: Fold) -> bool:
    """Does `origin` match an ignore-style mask (nick glob, hostmask glob, or $a:account)?"""
    mask = normalise_mask(mask)
    if mask.startswith(ACCOUNT_PREFIX):
        return origin.account is not None and glob_match(mask[3:], origin.account, fold)
    if "!" in mask:
        # Without a known user@host (e.g. a nick-only origin) a hostmask cannot match.
        if not (origin.user and origin.host):
            return False
        return glob_match(mask, origin.hostmask, fold)
    return glob_match(mask, origin.nick, fold)


def any_mask_matches(masks: Iterable[str], origin: Origin, fold: Fold) -> bool:
    return any(mask_matches(mask, origin, fold) for mask in masks)


class Rights(enum.IntEnum):
    NONE = 0
    CHANNEL_OPERATOR = 1  # channel-scoped commands, in that channel only
    OPERATOR = 2  # everything


@dataclass(frozen=True, slots=True)
class Permissions:
    config: OperatorConfig

    def is_operator(self, origin: Origin, fold: Fold) -> bool:
        if origin.account and any(
            glob_match(account.removeprefix(ACCOUNT_PREFIX), origin.account, fold)
            for account in self.config.accounts
        ):
            return True
        return bool(origin.user and origin.host) and any(
            glob_match(mask, origin.hostmask, fold) for mask in self.config.hostmasks
        )

    def rights(self, origin: Origin, channel_status: str, fold: Fold) -> Rights:
        """Rights of `origin`; `channel_status` is their prefixes in the channel concerned."""
        if self.is_operator(origin, fold):
            return Rights.OPERATOR
        if self.config.channel_ops and CHANNEL_OP_PREFIXES.intersection(channel_status):
            return Rights.CHANNEL_OPERATOR
        return Rights.NONE

    def impersonates(self, origin: Origin, fold: Fold) -> bool:
        """True when a non-operator wears a nick that an operator entry names."""
        names = {
            fold(account.removeprefix(ACCOUNT_PREFIX))
            for account in self.config.accounts
            if "*" not in account
        }
        for mask in self.config.hostmasks:
            nick = mask.partition("!")[0]
            if nick and not any(c in nick for c in "*?"):
                names.add(fold(nick))
        return fold(origin.nick) in names and not self.is_operator(origin, fold)
