"""The reactor loop's turn: waiting for the server's sockets or a wake-up, the one door other
threads (and signal handlers) use to hand work to the loop, timers, and the stop request.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import irc.client


class Loop:
    """Turns of the loop that owns `reactor`; `stages` run at the end of each, with the time.

    Only `call_soon` and `stop` may be called from other threads."""

    def __init__(
        self,
        reactor: irc.client.Reactor,
        clock: Callable[[], float],
        log: Any,
        stages: Sequence[Callable[[float], None]],
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.log = log
        self.stages = tuple(stages)
        self.stopping = threading.Event()
        # A deque, not a queue.Queue: append and popleft take no Python-level lock, so
        # call_soon is safe from a signal handler that interrupted this very loop.
        self._completions: collections.deque[Callable[[], None]] = collections.deque()
        # Another thread's call_soon writes a byte here so that the loop wakes at once instead
        # of at the end of its select timeout (up to 50 ms added to every reply otherwise).
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._timers: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Thread-safe and signal-safe: run `fn` on the loop's thread at the next turn."""
        self._completions.append(fn)
        self._wake()

    def stop(self) -> None:
        """Thread-safe and signal-safe: mark the loop as stopping and end its wait."""
        self.stopping.set()
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending anyway; a closed one, that we are stopping.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop's thread after `delay` seconds (call from that thread)."""
        self._timers.append((self.clock() + delay, fn))

    def pending_timers(self) -> int:
        return len(self._timers)

    def close(self) -> None:
        self._wake_read.close()
        self._wake_write.close()

    def step(self, timeout: float) -> None:
        """One loop turn. Nothing a connection does may end the loop: every stage is
        guarded, so a fault is a logged error and, at worst, a reconnect."""
        try:
            self._wait_and_read(timeout)
        except Exception:
            self.log.exception("reactor_error")
        while True:
            try:
                fn = self._completions.popleft()
            except IndexError:
                break
            try:
                fn()
            except Exception:
                self.log.exception("completion_handler_failed")
        now = self.clock()
        due = [fn for at, fn in self._timers if at <= now]
        self._timers = [(at, fn) for at, fn in self._timers if at > now]
        for fn in due:
            try:
                fn()
            except Exception:
                self.log.exception("timer_failed")
        for stage in self.stages:
            try:
                stage(now)
            except Exception:
                self.log.exception("reactor_error", stage=stage.__name__)

    def _wait_and_read(self, timeout: float) -> None:
        """The reactor's process_once, also woken by call_soon from other threads."""
        sockets = self.reactor.sockets
        try:
            readable, _, _ = select.select([*sockets, self._wake_read], [], [], timeout)
        except (OSError, ValueError):
            readable = []  # a connection closed between listing and select: next turn
        if self._wake_read in readable:
            with contextlib.suppress(OSError):
                while self._wake_read.recv(4096):
                    pass
        self.reactor.process_data([sock for sock in readable if sock is not self._wake_read])
        self.reactor.process_timeout()
