"""CTCP queries the bot answers, and how often: the reply policy, as pure values and a limiter
on an injected clock (no sockets, no sending).

The bot answers VERSION, PING, TIME, SOURCE and CLIENTINFO sent to it in private, like
Limnoria and Sopel do, with the body of a CTCP reply that the session sends in a NOTICE to
the sender (relaybot.irc.writer frames it). It never answers:

* a CTCP sent anywhere but to the bot's own nick (a channel, a STATUSMSG target): a channel
  CTCP flood must never make the bot talk;
* ACTION (a /me, an event of its own: relaybot.irc.translate), unknown commands (DCC, FINGER,
  USERINFO, ...): no reply and no ERRMSG, as Limnoria and Sopel stay quiet;
* a message that is not exactly one CTCP (text around it, several CTCPs in one line);
* CTCP replies (NOTICEs): those are read nowhere;
* beyond its rate limits: one token bucket per person (user@host) and one for everyone
  together. Excess queries are dropped with a debug log line, never answered.

TIME is RFC 1123 in UTC (`Tue, 15 Nov 1994 08:12:31 GMT`); PING echoes its argument with
every control byte removed and at most `MAX_PING_BYTES` of it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from relaybot import __version__
from relaybot.irc.text import safe_line
from relaybot.log import get_logger
from relaybot.policy.ratelimit import TokenBucket

# What CLIENTINFO lists: the queries answered, and ACTION (understood, never answered).
SUPPORTED = ("ACTION", "CLIENTINFO", "PING", "SOURCE", "TIME", "VERSION")
ANSWERED = frozenset(SUPPORTED) - {"ACTION"}

VERSION_TEXT = f"relaybot {__version__} - an IRC bot that speaks through a language model"
# No project URL is published (README, pyproject): a neutral text rather than an invented one.
SOURCE_TEXT = "relaybot"

MAX_PING_BYTES = 100  # of the PING argument echoed back; the rest is cut
MAX_QUERY_CHARS = 512  # a longer "CTCP" is no query the bot reads

# Rate limits: a person may ask a few at once (a client's VERSION and PING on connect), then
# one each PER_PERSON_INTERVAL seconds; everyone together a burst, then one each
# OVERALL_INTERVAL seconds, far below the outbox's own pace.
PER_PERSON_BURST = 3
PER_PERSON_INTERVAL = 10.0
OVERALL_BURST = 5
OVERALL_INTERVAL = 4.0
MAX_PEOPLE = 512  # per-person buckets kept; the least recently used are forgotten

_log = get_logger(component="ctcp")


@dataclass(frozen=True, slots=True)
class CtcpQuery:
    """One CTCP query: its command, upper-cased, and the raw argument after it."""

    command: str
    argument: str


def parse_query(text: str) -> CtcpQuery | None:
    """The CTCP query that is the whole of `text` (`\\x01COMMAND args\\x01`, the closing
    \\x01 optional as the modern CTCP spec allows), or None for anything else: plain text,
    text around a CTCP, several CTCPs, an empty or non-alphanumeric command."""
    if not text.startswith("\x01") or len(text) > MAX_QUERY_CHARS:
        return None
    body = text[1:-1] if text.endswith("\x01") and len(text) > 1 else text[1:]
    if "\x01" in body:
        return None
    command, _, argument = body.partition(" ")
    if not command or not command.isascii() or not command.isalnum():
        return None
    return CtcpQuery(command.upper(), argument)


def ping_argument(argument: str) -> str:
    """A PING argument safe to echo: no CR, LF, NUL, \\x01 or formatting, at most
    MAX_PING_BYTES bytes of UTF-8 (never a cut character)."""
    clean = safe_line(argument)
    return clean.encode()[:MAX_PING_BYTES].decode("utf-8", errors="ignore").rstrip()


def clientinfo_text() -> str:
    return " ".join(SUPPORTED)


def time_text(now: float) -> str:
    """`now` (seconds since the epoch) as RFC 1123 in UTC: `Tue, 15 Nov 1994 08:12:31 GMT`."""
    return formatdate(now, usegmt=True)


def reply_body(query: CtcpQuery, now: float) -> str | None:
    """The reply's text between its \\x01 delimiters, or None: a query the bot never answers.
    `now`: seconds since the epoch, for TIME."""
    match query.command:
        case "VERSION":
            return f"VERSION {VERSION_TEXT}"
        case "PING":
            argument = ping_argument(query.argument)
            return f"PING {argument}" if argument else "PING"
        case "TIME":
            return f"TIME {time_text(now)}"
        case "SOURCE":
            return f"SOURCE {SOURCE_TEXT}"
        case "CLIENTINFO":
            return f"CLIENTINFO {clientinfo_text()}"
        case _:
            return None


class CtcpResponder:
    """Decides, for each PRIVMSG, whether it is a CTCP query to answer now and with what.

    `clock` (monotonic seconds) drives the rate limits; `wall_clock` (seconds since the epoch)
    the TIME reply. Not thread-safe: the reactor thread's, like the session it belongs to.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        per_person_burst: int = PER_PERSON_BURST,
        per_person_interval: float = PER_PERSON_INTERVAL,
        overall_burst: int = OVERALL_BURST,
        overall_interval: float = OVERALL_INTERVAL,
        max_people: int = MAX_PEOPLE,
        log: Any = None,
    ) -> None:
        if per_person_interval <= 0 or overall_interval <= 0 or max_people < 1:
            raise ValueError("intervals must be > 0 and max_people at least 1")
        self.clock = clock
        self.wall_clock = wall_clock
        self.per_person_burst = per_person_burst
        self.per_person_rate = 1.0 / per_person_interval
        self.overall = TokenBucket(1.0 / overall_interval, overall_burst, clock)
        self.max_people = max_people
        self.people: OrderedDict[str, TokenBucket] = OrderedDict()
        self.log = log if log is not None else _log

    def reply(self, text: str, *, private: bool, sender: str) -> str | None:
        """The body of the CTCP reply to send `sender` for a PRIVMSG of `text`, or None.

        `private`: the PRIVMSG was sent to the bot's own nick; anything else is never
        answered. `sender`: who asks, for the per-person limit (user@host, folded)."""
        if not private:
            return None
        query = parse_query(text)
        if query is None or query.command not in ANSWERED:
            if query is not None and query.command != "ACTION":
                self.log.debug("ctcp_unanswered", command=query.command[:32], sender=sender)
            return None
        if not self._allowed(sender):
            self.log.debug("ctcp_rate_limited", command=query.command, sender=sender)
            return None
        return reply_body(query, self.wall_clock())

    def _allowed(self, sender: str) -> bool:
        """Take a token from both buckets, or from neither."""
        bucket = self.people.get(sender)
        if bucket is None:
            bucket = TokenBucket(self.per_person_rate, self.per_person_burst, self.clock)
            self.people[sender] = bucket
            while len(self.people) > self.max_people:
                self.people.popitem(last=False)
        else:
            self.people.move_to_end(sender)
        if not (bucket.can_take() and self.overall.can_take()):
            return False
        bucket.take()
        self.overall.take()
        return True
