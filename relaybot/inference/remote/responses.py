"""Reading an answer of a remote server: a whole body, bounded in size, or its Server-Sent
Events (parsed by httpx-sse, bounded in size and in line length), handed one `data` payload at
a time to the StreamReader of the engine that asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import httpx_sse

from relaybot.inference.remote.failures import AttemptFailed, error_detail, too_large

MAX_BODY_BYTES = 16 * 1024 * 1024  # a completion is kilobytes; anything this big is broken
MAX_LINE_BYTES = 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024


class StreamError(Exception):
    """A streamed answer carried an error instead of text."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A server's completion: its text, and whether it said it stopped at the token limit
    (finish reason `length`) rather than at the model's end or a stop string."""

    text: str
    cut: bool = False


class StreamReader(Protocol):
    """Collects one streamed completion; a fresh reader is made for every attempt."""

    def feed(self, data: str) -> bool:
        """One SSE `data:` payload; True once the answer is complete or a stop string appeared."""
        ...

    @property
    def text(self) -> str: ...

    @property
    def cut(self) -> bool:
        """The server's last event said the token limit ended the answer."""
        ...


class _EventBytes(httpx.SyncByteStream):
    """An event stream's body, bounded (MAX_BODY_BYTES in all, MAX_LINE_BYTES a line) and
    ended with a blank line, so that the last event of a server that leaves that out is
    still read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        line = 0
        for chunk in self._chunks:
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise too_large(MAX_BODY_BYTES)
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            line = line + len(chunk) if end < 0 else len(chunk) - end - 1
            if line > MAX_LINE_BYTES:
                raise AttemptFailed("a streamed line is too long", kind="answer", retryable=False)
            yield chunk
        yield b"\n\n"


class Response:
    """An open response; reading it is bounded by the attempt's deadline (see remote_network)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    def body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in self._response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def events(self) -> Iterator[str]:
        """The `data` of each Server-Sent Event (multi-line data joined with newlines); lines
        may end in \\r\\n, \\n or \\r. Events without data carry nothing the engines use."""
        content_type = self._response.headers.get("Content-Type", "")
        body = _EventBytes(self._response.iter_bytes())  # already decoded: no Content-Encoding
        source = httpx_sse.EventSource(
            httpx.Response(self.status, headers={"Content-Type": content_type}, stream=body)
        )
        try:
            for event in source.iter_sse():
                if event.data:
                    yield event.data
        except httpx_sse.SSEError as exc:
            raise AttemptFailed(
                f"the answer is not an event stream: {exc}", kind="answer", retryable=False
            ) from None


def status_only(response: Response) -> int:
    """The status of an answer whose body does not matter (read, bounded, and dropped)."""
    response.body(MAX_ERROR_BODY_BYTES)
    return response.status


def read_json(response: Response, redact: Callable[[str], str]) -> Any:
    """The answer's body as JSON."""
    raw = response.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise AttemptFailed(
            f"the answer is not JSON: {error_detail(raw, redact)!r}",
            kind="answer",
            retryable=False,
        ) from None


def read_stream(response: Response, reader: StreamReader, redact: Callable[[str], str]) -> Fetched:
    """The answer's events fed to `reader` until it has enough (a stop string appeared); the
    caller then closes the connection, which lets the server stop generating."""
    try:
        for data in response.events():
            if reader.feed(data):
                return Fetched(reader.text, reader.cut)
    except StreamError as exc:
        raise AttemptFailed(
            f"the stream reported an error: {redact(str(exc))}",
            kind="answer",
            retryable=False,
        ) from None
    raise AttemptFailed(
        "the stream ended before the answer was complete", kind="lost", retryable=True
    )
