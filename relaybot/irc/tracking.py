"""Who people are, as the server tells it: services accounts (extended-join, account-notify,
WHOX, account-tag) and bot flags (bot tags, WHO flags, WHOIS 335), by casefolded nick, bounded.
Fed plain values; answers for an Origin."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

# Message tags that mark the sender as a bot: the IRCv3 tag, its draft name, InspIRCd 3's.
BOT_TAGS = frozenset({"bot", "draft/bot", "inspircd.org/bot"})
# Our WHOX queries carry this token, so that their 354 answers are told from anyone else's.
WHOX_TOKEN = "171"
# A server can name any number of users; past this many the oldest (or any) entry goes.
MAX_TRACKED_USERS = 50_000
# What extended-join, ACCOUNT and WHOX send for "not logged in".
_NO_ACCOUNT = (None, "", "*", "0")


class UserTracker:
    """Accounts and bot flags of the users the server has told us about, on one connection.

    `fold` is called each time, so a CASEMAPPING learnt from ISUPPORT applies at once."""

    def __init__(self, fold: Callable[[str], str]) -> None:
        self.fold = fold
        self.accounts: dict[str, str | None] = {}  # folded nick -> account, None: not logged in
        self.bots: set[str] = set()  # folded nicks
        self.whox = False  # the server answers `WHO #chan %fields,token` (ISUPPORT WHOX)

    def clear(self) -> None:
        """A new connection: what the last server said no longer holds."""
        self.accounts.clear()
        self.bots.clear()
        self.whox = False

    # fed values

    def isupport(self, tokens: Iterable[str]) -> None:
        if any(str(item).upper() == "WHOX" for item in tokens):
            self.whox = True

    def account(self, nick: str, account: str | None) -> None:
        """extended-join, ACCOUNT (account-notify) or WHOX said `nick` is logged in as
        `account` (None, "", "*" or "0": as nobody)."""
        if len(self.accounts) >= MAX_TRACKED_USERS:
            self.accounts.pop(next(iter(self.accounts)))
        self.accounts[self.fold(nick)] = account if account not in _NO_ACCOUNT else None

    def who_reply(self, nick: str, flags: str, account: str | None, bot_mode: str | None) -> None:
        """One WHO (352) or WHOX (354) line: the bot flag is `bot_mode` (ISUPPORT BOT) in
        `flags`; `account` is None when the reply carries none (plain WHO)."""
        folded = self.fold(nick)
        if bot_mode and bot_mode in flags:
            self._add_bot(folded)
        else:
            self.bots.discard(folded)
        if account is not None:
            self.account(nick, account)

    def whois_bot(self, nick: str) -> None:
        """335: `nick` is in the server's bot mode."""
        self._add_bot(self.fold(nick))

    def renamed(self, old: str, new: str) -> None:
        old, new = self.fold(old), self.fold(new)
        if old in self.accounts:
            self.accounts[new] = self.accounts.pop(old)
        if old in self.bots:
            self.bots.discard(old)
            self.bots.add(new)

    def quit(self, nick: str) -> None:
        self.accounts.pop(self.fold(nick), None)
        self.bots.discard(self.fold(nick))

    def _add_bot(self, folded: str) -> None:
        if len(self.bots) >= MAX_TRACKED_USERS:
            self.bots.pop()
        self.bots.add(folded)

    # answers

    def account_of(self, nick: str, tags: Mapping[str, str | None]) -> str | None:
        """The account-tag on this message, else what extended-join, ACCOUNT or WHOX said."""
        return tags.get("account") or self.accounts.get(self.fold(nick))

    def is_bot(self, nick: str, tags: Mapping[str, str | None]) -> bool:
        """A bot tag on this message, or a bot flag the server showed before."""
        return bool(BOT_TAGS.intersection(tags)) or self.fold(nick) in self.bots

    def who_query(self, channel: str) -> str:
        """The WHO that asks for everyone's account and bot flag in `channel`."""
        return f"WHO {channel} %tuhnfa,{WHOX_TOKEN}" if self.whox else f"WHO {channel}"


def whox_fields(args: Sequence[str]) -> tuple[str, str, str] | None:
    """(nick, flags, account) from the arguments of a 354 (after our nick) that answers our
    own query; None for anyone else's."""
    # `WHO #chan %tuhnfa,171` answers: token user host nick flags account
    if len(args) >= 6 and args[0] == WHOX_TOKEN:
        return args[3], args[4], args[5]
    return None
