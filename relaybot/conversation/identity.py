"""Which conversation something belongs to. One form everywhere: transcripts, the reply gate,
jobs, the engine's prefix cache and the state files all key by `ContextKey`."""

from __future__ import annotations

from typing import NamedTuple


class ContextKey(NamedTuple):
    """A conversation on one network: a channel, or a private query with one peer. A plain
    tuple, so `(network, name)` compares and hashes the same."""

    network: str
    name: str  # the channel or the peer's nick, casefolded the server's way
