"""IRCv3 `draft/multiline`: an answer of several lines sent as one message, as a client batch
(`BATCH +ref draft/multiline <target>`, its PRIVMSG lines tagged `batch=ref`, `BATCH -ref`).
A line that continues the one before it (a long line wrapped to fit) carries
`draft/multiline-concat` and its leading space, so that clients which support the batch show
the text as the model wrote it; other clients get the lines one by one from the server.

Pure: the writer queues the lines. Client-only tags (`+draft/reply`) go on the opening BATCH,
as the spec asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MULTILINE = "draft/multiline"
CONCAT = "draft/multiline-concat"


@dataclass(frozen=True, slots=True)
class MultilineLimits:
    max_bytes: int  # the message's text, its line breaks included
    max_lines: int | None  # None: the server sets no line limit


@dataclass(frozen=True, slots=True)
class Part:
    text: str  # one line's text, sanitised, within the PRIVMSG payload budget
    concat: bool  # joins the line before it without a line break


def limits(cap_value: str) -> MultilineLimits | None:
    """The limits the server's `draft/multiline=max-bytes=4096,max-lines=24` value sets; None
    when it sets no usable max-bytes (the spec requires it)."""
    values: dict[str, str] = {}
    for item in cap_value.split(","):
        name, _, value = item.partition("=")
        values[name.strip()] = value.strip()
    try:
        max_bytes = int(values["max-bytes"])
        max_lines = int(values["max-lines"]) if "max-lines" in values else None
    except (KeyError, ValueError):
        return None
    if max_bytes <= 0 or (max_lines is not None and max_lines <= 0):
        return None
    return MultilineLimits(max_bytes, max_lines)


def fits(parts: Sequence[Part], allowed: MultilineLimits) -> bool:
    """Whether the message is within the server's limits: its bytes, a line break counted
    between lines that are not concatenated, and its number of lines."""
    if allowed.max_lines is not None and len(parts) > allowed.max_lines:
        return False
    size = sum(len(part.text.encode()) for part in parts)
    size += sum(1 for part in parts[1:] if not part.concat)
    return size <= allowed.max_bytes


def batch_lines(ref: str, target: str, parts: Sequence[Part], tags: str = "") -> list[str]:
    """The raw lines of the batch; `tags` (escaped client tags, or "") go on the opening
    BATCH."""
    opening = f"BATCH +{ref} {MULTILINE} {target}"
    lines = [f"@{tags} {opening}" if tags else opening]
    for index, part in enumerate(parts):
        tag = f"batch={ref}" + (f";{CONCAT}" if part.concat and index else "")
        lines.append(f"@{tag} PRIVMSG {target} :{part.text}")
    lines.append(f"BATCH -{ref}")
    return lines
