"""IRC message lines as values: parse, split a source, and join atoms into a line.

Pure and standard library only. Follows the community parser test vectors
(https://github.com/ircdocs/parser-tests, packaged as `irc-parser-tests`): IRCv3 message tags
with escaped values, an optional `:source`, a command, and parameters of which the last may be
a `:trailing` one. Atoms are separated by one or more spaces (RFC 1459), never by tabs.

`parse` never raises: anything that is not one message line (no command, a malformed command,
CR/LF/NUL inside, a leading space, longer than `max_length`) is None. Its work is linear in
the line length, and the length is capped first, so a hostile line costs bounded time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Longer than any line a server may send (8191 bytes of tags + 512 of message) with room to
# spare; the bot's own reader drops partial lines beyond 64 KiB, so nothing longer is real.
MAX_LINE_LENGTH = 64 * 1024

_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")
_FORBIDDEN = re.compile(r"[\r\n\0]")
_TAG_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"})
_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class IrcMessage:
    """One parsed line. `tags` is read-only; tags without a value map to ""."""

    tags: Mapping[str, str]
    source: str | None
    command: str  # uppercased
    params: tuple[str, ...]


def unescape_tag_value(value: str) -> str:
    r"""A tag value as sent, unescaped character by character (`\:` `\s` `\\` `\r` `\n`;
    a backslash before any other character is dropped, and so is a trailing one)."""
    if "\\" not in value:
        return value
    return _TAG_ESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def escape_tag_value(value: str) -> str:
    """The inverse of `unescape_tag_value` for every value without NUL."""
    return value.translate(_ESCAPES)


def _parse_tags(section: str) -> Mapping[str, str]:
    tags: dict[str, str] = {}
    for item in section.split(";"):
        key, _, value = item.partition("=")
        if key:
            tags[key] = unescape_tag_value(value)  # duplicates: the last one wins
    return MappingProxyType(tags)


def parse(line: str, *, max_length: int = MAX_LINE_LENGTH) -> IrcMessage | None:
    """One server (or client) line, with or without its CRLF; None when it is no message."""
    if not isinstance(line, str) or len(line) > max_length:
        return None
    if line.endswith("\r\n"):
        line = line[:-2]
    elif line.endswith(("\n", "\r")):
        line = line[:-1]
    if _FORBIDDEN.search(line):
        return None  # not one line: nothing that contains these can be a single message
    rest = line  # a leading space is no message (RFC 1459: the line starts with an atom)
    tags = _EMPTY_TAGS
    if rest.startswith("@"):
        section, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(section)
        rest = rest.lstrip(" ")
    source: str | None = None
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        source = source or None
        rest = rest.lstrip(" ")
    command, _, rest = rest.partition(" ")
    if not _COMMAND.fullmatch(command):
        return None
    # Everything after the command, with the space that separated it, so that " :" always
    # marks the trailing parameter, however many spaces come before it.
    middle, colon, trailing = (" " + rest).partition(" :")
    params = [param for param in middle.split(" ") if param]
    if colon:
        params.append(trailing)
    return IrcMessage(tags, source, command.upper(), tuple(params))


def split_source(source: str) -> tuple[str, str | None, str | None]:
    """`nick!user@host` as (nick, user, host); a part that is absent is None, and a part
    that is present but empty (`nick!@host`) is "". A server name is all nick."""
    head, at, host = source.partition("@")
    nick, bang, user = head.partition("!")
    return nick, (user if bang else None), (host if at else None)


def _check_line_safe(what: str, value: str) -> None:
    if _FORBIDDEN.search(value):
        raise ValueError(f"{what} contains CR, LF or NUL: {value[:40]!r}")


def _tags_section(tags: Mapping[str, str]) -> str:
    items = []
    for key, value in tags.items():
        _check_line_safe(f"tag key {key!r}", key)
        if not key or any(c in key for c in " ;="):
            raise ValueError(f"tag key cannot be sent: {key!r}")
        if "\0" in value:
            raise ValueError(f"tag {key!r}: a NUL cannot be escaped")
        items.append(f"{key}={escape_tag_value(value)}" if value else key)
    return "@" + ";".join(items)


def format_message(
    command: str,
    params: Iterable[str] = (),
    tags: Mapping[str, str] | None = None,
    source: str | None = None,
) -> str:
    """Join atoms into one line (without CRLF) that `parse` turns back into the same atoms.

    The last parameter gets a `:` only when it needs one (empty, has a space, starts with
    `:`). Raises ValueError for what no line can express: a CR, LF or NUL anywhere, a middle
    parameter that is empty, has a space or starts with `:`, a bad command, source or tag key.
    """
    if not _COMMAND.fullmatch(command):
        raise ValueError(f"not a command (letters, or three digits): {command[:40]!r}")
    parts: list[str] = []
    if tags:
        parts.append(_tags_section(tags))
    if source is not None:
        _check_line_safe("source", source)
        if not source or " " in source:
            raise ValueError(f"source cannot be sent: {source[:40]!r}")
        parts.append(f":{source}")
    parts.append(command)
    values = list(params)
    for index, param in enumerate(values):
        _check_line_safe(f"parameter {index}", param)
        if index < len(values) - 1:
            if not param or " " in param or param.startswith(":"):
                raise ValueError(f"parameter {index} can only be the last: {param[:40]!r}")
            parts.append(param)
        elif not param or " " in param or param.startswith(":"):
            parts.append(f":{param}")
        else:
            parts.append(param)
    return " ".join(parts)
