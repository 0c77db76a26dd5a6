"""Channel contexts on disk: loaded for the relay at start, saved when they changed (every
`state.flush_interval`, after a reset and at shutdown), deleted when the bot leaves a channel."""

from __future__ import annotations

from collections.abc import Callable

from relaybot.bridge.ports import Timers
from relaybot.bridge.relay import Relay
from relaybot.conversation.identity import ContextKey
from relaybot.log import get_logger
from relaybot.service.persistence import StateStore

log = get_logger(component="bot")


class ContextSaver:
    def __init__(
        self,
        store: StateStore,
        relay: Relay,
        timers: Timers,
        interval: Callable[[], float],
    ) -> None:
        self.store = store
        self.relay = relay
        self.timers = timers
        self.interval = interval  # read at each save: a reload may change it
        self._saved_revisions: dict[ContextKey, int] = {}

    def restore(self) -> int:
        """Hand the saved contexts to the relay, which takes each up when the bot joins."""
        contexts = self.store.load_contexts()
        for name, saved in contexts.items():
            self.relay.saved[self.relay.key(name)] = saved
        return len(contexts)

    def start(self) -> None:
        def flush() -> None:
            self.flush()
            self.timers.schedule(self.interval(), flush)

        self.timers.schedule(self.interval(), flush)

    def flush(self) -> int:
        """Save every channel context changed since the last save; returns how many."""
        written = 0
        for key, saved in self.relay.saved_contexts():
            revision = self.relay.transcripts[key].revision
            if self._saved_revisions.get(key) == revision:
                continue
            try:
                self.store.save_context(saved)
            except (OSError, ValueError) as exc:
                log.error("context_save_failed", channel=saved.name, error=str(exc))
                continue
            self._saved_revisions[key] = revision
            written += 1
        return written

    def drop(self, name: str) -> None:
        """The bot left `name` for good: forget its conversation and delete its file."""
        self.relay.forget(name)
        self._saved_revisions.pop(self.relay.key(name), None)
        try:
            self.store.delete_context(name)
        except OSError as exc:
            log.error("context_delete_failed", channel=name, error=str(exc))
