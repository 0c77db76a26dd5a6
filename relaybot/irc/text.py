"""IRC text handling: casefolding, formatting-code stripping, and safe outgoing lines.

Everything here is pure: it takes strings and returns strings, so hostile input can be
checked exhaustively without sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# IRC protocol limit: a whole line, CRLF included.
IRC_LINE_BYTES = 512
# Used when the bot has not yet seen its own user@host as the server shows it to others.
WORST_CASE_USER = 10
WORST_CASE_HOST = 63

_RFC1459_UPPER = "[]\\~"
_RFC1459_LOWER = "{}|^"
_RFC1459_TABLE = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + _RFC1459_UPPER,
    "abcdefghijklmnopqrstuvwxyz" + _RFC1459_LOWER,
)
_STRICT_TABLE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\", "abcdefghijklmnopqrstuvwxyz{}|")
_ASCII_TABLE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CASEMAPS = {"rfc1459": _RFC1459_TABLE, "strict-rfc1459": _STRICT_TABLE, "ascii": _ASCII_TABLE}

# mIRC colour (\x03 with up to two digit pairs), hex colour (\x04), and the toggles.
_FORMATTING = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?"
    r"|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
# Every C0 control and DEL: none of them belongs in a line the bot sends.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_CHANNEL_PREFIXES = "#&+!"


def casefold(name: str, casemapping: str = "rfc1459") -> str:
    """Fold a nick or channel name the way the server compares them."""
    return name.translate(_CASEMAPS.get(casemapping, _RFC1459_TABLE))


def strip_formatting(text: str) -> str:
    """Remove bold/colour/italic/... codes that clients embed in messages."""
    return _FORMATTING.sub("", text)


def is_channel_name(name: str, prefixes: str = _CHANNEL_PREFIXES) -> bool:
    """True when `name` is a syntactically valid channel name (RFC 2812 section 1.3)."""
    if len(name) < 2 or len(name) > 200 or name[0] not in prefixes:
        return False
    return not any(ch in name for ch in " ,\x07\x00\r\n")


def safe_line(text: str) -> str:
    """One line with every control byte (CR, LF, NUL, CTCP \\x01, formatting) removed: what
    may be sent to a server, and what people's text looks like inside a model context."""
    return _CONTROLS.sub("", strip_formatting(text)).strip()


def clean_nick(nick: str) -> str:
    """A nick as it may appear in a context: no controls, no spaces (a hostile server's)."""
    return "".join(ch for ch in nick if ch > " " and ch != "\x7f")


def privmsg_payload_budget(
    nick: str, target: str, user: str | None = None, host: str | None = None
) -> int:
    """Bytes left for text once the server prefixes `:nick!user@host PRIVMSG target :`."""
    user_len = len(user.encode()) if user else WORST_CASE_USER
    host_len = len(host.encode()) if host else WORST_CASE_HOST
    overhead = (
        len(b":")
        + len(nick.encode())
        + len(b"!")
        + user_len
        + len(b"@")
        + host_len
        + len(b" PRIVMSG ")
        + len(target.encode())
        + len(b" :")
        + len(b"\r\n")
    )
    return IRC_LINE_BYTES - overhead


def split_utf8(text: str, max_bytes: int) -> Iterator[str]:
    """Split `text` into pieces of at most `max_bytes` UTF-8 bytes.

    Breaks at the last space that fits when there is one, never inside a character.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes must leave room for one character, got {max_bytes}")
    remaining = text
    while remaining:
        encoded = remaining.encode()
        if len(encoded) <= max_bytes:
            yield remaining
            return
        cut = max_bytes
        # Step back to a character boundary: continuation bytes are 0b10xxxxxx.
        while cut > 0 and (encoded[cut] & 0xC0) == 0x80:
            cut -= 1
        head = encoded[:cut].decode()
        space = head.rfind(" ")
        if space > len(head) // 2:
            head = head[:space]
        yield head.rstrip()
        remaining = remaining[len(head) :].lstrip()


def reply_lines(text: str, max_bytes: int, max_lines: int) -> list[str]:
    """Turn model output into at most `max_lines` sendable lines of at most `max_bytes`."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = safe_line(raw)
        if not line:
            continue
        for piece in split_utf8(line, max_bytes):
            if piece:
                lines.append(piece)
            if len(lines) >= max_lines:
                return lines
    return lines
