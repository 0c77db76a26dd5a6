"""The `serve` fixture: scripted HTTP servers for the remote engine tests, closed after each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.remote_server import FakeServer, Handler, Seen


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(respond: Callable[[Handler, Seen], None], **options: Any) -> FakeServer:
        server = FakeServer(respond, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
