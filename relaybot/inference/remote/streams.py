"""What the answers of both remote APIs share: the JSON object of one streamed event, the
error an answer reports instead of text, and watching streamed text for stop strings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from relaybot.inference.remote.responses import StreamError


class StopWatch:
    """Accumulates streamed text and says when a stop string has appeared in it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.longest = max((len(stop) for stop in self.stops), default=0)
        self.text = ""

    def add(self, piece: str) -> bool:
        # Only the new piece and the tail before it can hold a stop string not seen before.
        start = max(0, len(self.text) - self.longest + 1)
        self.text += piece
        return bool(piece) and any(self.text.find(stop, start) >= 0 for stop in self.stops)


def stream_event(data: str) -> dict[str, Any]:
    """One SSE event's JSON object; a StreamError if it is not one or reports an error."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise StreamError(f"an event is not JSON: {data[:100]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamError("an event is not a JSON object")
    error = reported_error(chunk)
    if error is not None:
        raise StreamError(error)
    return chunk


def reported_error(chunk: dict[str, Any]) -> str | None:
    """The `error` an answer (or one event of it) carries, as text; None when it has none."""
    error = chunk.get("error")
    if not error:
        return None
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)
