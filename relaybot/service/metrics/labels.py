"""The bound on `channel` label values: each network names at most `limit` channels in its
metrics, the first ones it reports on, and counts every later channel as "other"; private
queries are one value, "(query)", and never the peer's nick. A label once given is kept, so a
series never changes name, and Prometheus holds a bounded number of series per metric."""

from __future__ import annotations

import threading

from relaybot.irc.text import is_channel_name

OTHER = "other"  # no channel name is a bare word, so this cannot be a channel's label
QUERY = "(query)"


class ChannelLabels:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        # Each network's objects report from its reactor thread; the lock keeps the bound
        # exact however the threads are laid out.
        self._lock = threading.Lock()

    def __call__(self, conversation: str) -> str:
        """The label of a conversation, named as in its ContextKey (casefolded)."""
        if not is_channel_name(conversation):
            return QUERY
        with self._lock:
            if conversation in self._known:
                return conversation
            if len(self._known) < self.limit:
                self._known.add(conversation)
                return conversation
        return OTHER
