"""Conversations as JSON lines, `{"role": ..., "content": ...}` a turn: the one export format of
the bot's `export` command and the Python API."""

from __future__ import annotations

import json
from collections.abc import Sequence

from relaybot.conversation.formats import Turn

# Line breaks other than \n that JSON leaves raw; str.splitlines and some editors break lines
# there. They only occur inside strings, where the \u escape means the same character.
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl(turns: Sequence[Turn]) -> bytes:
    """One JSON object a line, UTF-8."""
    # ensure_ascii=False keeps the file readable; a lone surrogate (which UTF-8 cannot hold)
    # only ever sits inside a JSON string, where backslashreplace writes exactly the `\udXXX`
    # escape that ensure_ascii=True would have written.
    return "".join(
        json.dumps({"role": turn.role, "content": turn.content}, ensure_ascii=False).translate(
            _JSON_LINE_BREAKS
        )
        + "\n"
        for turn in turns
    ).encode("utf-8", "backslashreplace")
