"""What the CAP/SASL unit tests share: feeding a server line to `Capabilities`, and the
base64 of AUTHENTICATE payloads both ways."""

from __future__ import annotations

import base64

from relaybot.irc.capabilities import Capabilities
from relaybot.irc.message import parse


def feed(caps: Capabilities, line: str) -> list[str]:
    """The lines the bot sends in answer to one server line."""
    message = parse(line)
    assert message is not None
    return caps.feed(message.command, message.params)


def decode(lines: list[str]) -> bytes:
    """The payload of AUTHENTICATE lines, its 400-character chunks joined (`+`: empty)."""
    chunks = []
    for line in lines:
        command, chunk = line.split(" ")
        assert command == "AUTHENTICATE"
        chunks.append("" if chunk == "+" else chunk)
    return base64.b64decode("".join(chunks))


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()
