"""The rule-based built-in moderators (`words`, `mass_highlight`, `links`) and the option
checks they share with the classifier. Options arrive straight from TOML, so every one is
validated here and a bad one raises ModeratorOptionError naming its key."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

from relaybot.irc.text import casefold, strip_formatting
from relaybot.moderation.core import (
    Direction,
    ModerationContext,
    ModeratorOptionError,
    Verdict,
)

APPLY_TO: dict[str, frozenset[Direction]] = {
    "both": frozenset({"input", "output"}),
    "input": frozenset({"input"}),
    "output": frozenset({"output"}),
}


# --- option checks ---------------------------------------------------------------------------


def _kind(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), type(value).__name__
    )


def str_list(key: str, value: object, *, allow_empty_items: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ModeratorOptionError(key, f"expected an array of strings, got {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ModeratorOptionError(f"{key}[{index}]", f"expected a string, got {_kind(item)}")
        if not allow_empty_items and not item.strip():
            raise ModeratorOptionError(f"{key}[{index}]", "must not be empty")
    return tuple(value)


def choice(key: str, value: object, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ModeratorOptionError(key, f"must be one of {', '.join(options)}, got {value!r}")
    return value


def boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ModeratorOptionError(key, f"expected a boolean, got {_kind(value)}")
    return value


def integer(key: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModeratorOptionError(key, f"expected an integer, got {_kind(value)}")
    if value < low:
        raise ModeratorOptionError(key, f"must be at least {low}, got {value}")
    return value


def number(key: str, value: object, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ModeratorOptionError(key, f"expected a number, got {_kind(value)}")
    if not low <= value <= high:
        raise ModeratorOptionError(key, f"must be between {low:g} and {high:g}, got {value}")
    return float(value)


def hook_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModeratorOptionError("name", "expected a non-empty string")
    return value.strip()


# --- shared text handling --------------------------------------------------------------------


def normalize(text: str) -> str:
    """What rules match against: IRC formatting codes and invisible format characters
    (zero-width spaces, bidi controls) removed and compatibility forms folded (fullwidth
    letters, ligatures), so `b\\x02adword` or its fullwidth twin cannot slip past a list."""
    visible = "".join(ch for ch in strip_formatting(text) if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible)


class DirectionalModerator:
    """Base for built-ins: `check` runs only for the directions the hook applies to."""

    name: str

    def __init__(self, *, name: str, directions: frozenset[Direction]) -> None:
        self.name = name
        self.directions = directions

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        return self.check(text, context) if "input" in self.directions else Verdict.allow()

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        return self.check(text, context) if "output" in self.directions else Verdict.allow()

    def check(self, text: str, context: ModerationContext) -> Verdict:
        raise NotImplementedError


# --- words -----------------------------------------------------------------------------------


class WordsModerator(DirectionalModerator):
    """Whole words (case-insensitive) and regular expressions: block the line, or mask every
    match with `replacement`."""

    def __init__(
        self,
        *,
        words: Sequence[str] = (),
        patterns: Sequence[str] = (),
        action: str = "block",
        replacement: str = "***",
        apply_to: str = "both",
        name: str = "words",
    ) -> None:
        super().__init__(
            name=hook_name(name), directions=APPLY_TO[choice("apply_to", apply_to, list(APPLY_TO))]
        )
        word_list = str_list("words", words)
        pattern_list = str_list("patterns", patterns)
        self.action = choice("action", action, ("block", "replace"))
        if not isinstance(replacement, str):
            raise ModeratorOptionError(
                "replacement", f"expected a string, got {_kind(replacement)}"
            )
        self.replacement = replacement
        if not word_list and not pattern_list:
            raise ModeratorOptionError("words", "give at least one word or pattern")
        self.rules: list[tuple[str, re.Pattern[str]]] = []
        if word_list:
            # Longest first, so `bad word` wins over `bad` when both are listed.
            alternatives = sorted({normalize(w.strip()) for w in word_list}, key=len, reverse=True)
            body = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in alternatives)
            self.rules.append(("a listed word", re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.I)))
        for index, pattern in enumerate(pattern_list):
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ModeratorOptionError(f"patterns[{index}]", f"bad regex: {error}") from None
            self.rules.append((f"patterns[{index}]", compiled))

    def check(self, text: str, context: ModerationContext) -> Verdict:
        clean = normalize(text)
        if self.action == "block":
            for label, rule in self.rules:
                # An empty match (a pattern like `x*`) says nothing about the text.
                if any(match.group() for match in rule.finditer(clean)):
                    return Verdict.block(f"matched {label}")
            return Verdict.allow()
        hits: list[str] = []
        for label, rule in self.rules:
            masked = rule.sub(self._mask, clean)
            if masked != clean:
                hits.append(label)
                clean = masked
        if not hits:
            return Verdict.allow()
        return Verdict.replace(clean, f"masked {', '.join(hits)}")

    def _mask(self, match: re.Match[str]) -> str:
        return self.replacement if match.group() else ""


# --- mass_highlight --------------------------------------------------------------------------

# Characters a nick may contain (RFC 2812 plus common extensions); a nick is a maximal run.
_NICK_RUN = re.compile(r"[A-Za-z0-9\[\]\\`_\^\{\|\}\-]+")
_EDGE_PUNCTUATION = ".,:;!?'\"()<>@+%&~*"


def _candidate_nicks(folded: str) -> set[str]:
    # Runs of nick characters catch `alice,bob:carol`; whitespace words with punctuation
    # trimmed catch nicks with characters outside that set (networks allowing UTF-8 nicks).
    candidates = set(_NICK_RUN.findall(folded))
    candidates.update(word.strip(_EDGE_PUNCTUATION) for word in folded.split())
    candidates.discard("")
    return candidates


class MassHighlightModerator(DirectionalModerator):
    """Blocks a line that names `max_nicks` or more distinct channel members: the bot must
    not ping a whole channel, and a user's mass highlight should not get it talking."""

    def __init__(
        self,
        *,
        max_nicks: int = 4,
        check_input: bool = True,
        check_output: bool = True,
        name: str = "mass_highlight",
    ) -> None:
        directions: set[Direction] = set()
        if boolean("check_input", check_input):
            directions.add("input")
        if boolean("check_output", check_output):
            directions.add("output")
        super().__init__(name=hook_name(name), directions=frozenset(directions))
        self.max_nicks = integer("max_nicks", max_nicks, 2)

    def highlighted(self, text: str, context: ModerationContext) -> set[str]:
        mapping = context.casemapping
        members = {casefold(member, mapping) for member in context.members}
        members.discard(casefold(context.nick, mapping))
        if len(members) < self.max_nicks:
            return set()
        return _candidate_nicks(casefold(normalize(text), mapping)) & members

    def check(self, text: str, context: ModerationContext) -> Verdict:
        found = self.highlighted(text, context)
        if len(found) >= self.max_nicks:
            return Verdict.block(
                f"mentions {len(found)} channel members (max_nicks = {self.max_nicks})"
            )
        return Verdict.allow()


# --- links -----------------------------------------------------------------------------------

# Bare domains are only links with a TLD from this list (or with a path or port after them),
# so file names like `main.py` or `notes.md` and typos like `end.it` do not count.
_TLD_WORDS = (
    "com net org info biz io co xyz top site online club app dev ai gg ly tk ml ga cf gq ru su "
    "cn uk de fr nl jp br eu ca au pl ch se ws cc tv live shop store link click win bid vip "
    "icu buzz fun space website tech pro mobi name cloud page blog news email gov edu mil int "
    "onion"
)
_BARE_TLDS = frozenset(_TLD_WORDS.split())
_LINK = re.compile(
    r"(?P<url>(?<![\w+.-])[a-z][a-z0-9+.-]{1,20}://[^\s<>\"'`]+)"
    r"|(?P<bare>(?<![\w@.-])(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?P<tld>[a-z]{2,24}))(?![\w-])(?P<rest>(?::\d{1,5})?(?:[/?#][^\s<>\"'`]*)?))",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\""


def _trim(link: str) -> str:
    """Drop sentence punctuation after a link, and a `)` with no `(` inside the link."""
    while link:
        if link[-1] in _TRAILING or (link[-1] == ")" and link.count("(") < link.count(")")):
            link = link[:-1]
        else:
            break
    return link


def find_links(text: str) -> Iterator[tuple[int, int, str | None]]:
    """(start, end, host) for each link; host is None where no host can be read from it."""
    for match in _LINK.finditer(text):
        start = match.start()
        if match.group("url"):
            link = _trim(match.group("url"))
            try:
                host = urlsplit(link).hostname
            except ValueError:
                host = None
            yield start, start + len(link), host
            continue
        domain = match.group("domain").lower()
        rest = _trim(match.group("rest"))
        tld = match.group("tld").lower()
        if tld in _BARE_TLDS or domain.startswith("www.") or rest:
            yield start, start + len(domain) + len(rest), domain


class LinksModerator(DirectionalModerator):
    """Links outside `allowed_domains` (subdomains included): allowed, blocked, or stripped."""

    def __init__(
        self,
        *,
        policy: str = "block",
        allowed_domains: Sequence[str] = (),
        apply_to: str = "output",
        name: str = "links",
    ) -> None:
        super().__init__(
            name=hook_name(name), directions=APPLY_TO[choice("apply_to", apply_to, list(APPLY_TO))]
        )
        self.policy = choice("policy", policy, ("allow", "block", "strip"))
        domains = []
        for index, domain in enumerate(str_list("allowed_domains", allowed_domains)):
            cleaned = domain.strip().lower().removeprefix("*.").strip(".")
            if not cleaned or "/" in cleaned or " " in cleaned:
                raise ModeratorOptionError(
                    f"allowed_domains[{index}]", f"{domain!r} is not a domain name"
                )
            domains.append(cleaned)
        self.allowed_domains = tuple(domains)

    def is_allowed(self, host: str | None) -> bool:
        if not host:
            return False
        host = host.lower().rstrip(".")
        return any(host == d or host.endswith("." + d) for d in self.allowed_domains)

    def check(self, text: str, context: ModerationContext) -> Verdict:
        if self.policy == "allow":
            return Verdict.allow()
        clean = normalize(text)
        spans = [(s, e, host) for s, e, host in find_links(clean) if not self.is_allowed(host)]
        if not spans:
            return Verdict.allow()
        if self.policy == "block":
            return Verdict.block(f"contains a link to {spans[0][2] or 'an unreadable host'}")
        pieces, last = [], 0
        for start, end, _ in spans:
            pieces.append(clean[last:start])
            last = end
        pieces.append(clean[last:])
        # Tidy the gaps a removed link leaves: doubled spaces, a space before punctuation.
        stripped = re.sub(r"[ \t]{2,}", " ", "".join(pieces))
        stripped = re.sub(r" +([,.;:!?])", r"\1", stripped).strip()
        if not any(ch.isalnum() for ch in stripped):
            return Verdict.block("nothing left once links are removed")
        return Verdict.replace(stripped, f"removed {len(spans)} link(s)")
