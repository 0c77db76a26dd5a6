"""A tiny sd_notify client (standard library only): tell systemd how the bot is doing.

Under systemd with `Type=notify`, the service manager passes `NOTIFY_SOCKET` (a filesystem
path, or an abstract socket name starting with `@`) and, with `WatchdogSec=`, `WATCHDOG_USEC`
(and `WATCHDOG_PID`, the process the watchdog is meant for). `Notifier` sends the state
changes systemd understands as newline-separated `KEY=VALUE` datagrams over AF_UNIX/SOCK_DGRAM:

    READY=1        start-up finished (`systemctl start` returns, `After=` units may start)
    STATUS=...     one line shown by `systemctl status`
    RELOADING=1    a reload began (with MONOTONIC_USEC=, as `Type=notify-reload` expects)
    STOPPING=1     shutdown began
    WATCHDOG=1     still alive; send at least every `watchdog_interval` seconds

Outside systemd (no `NOTIFY_SOCKET`) every method is a no-op. Sending never raises: a failure
(the socket went away, the manager is stuck) is logged once and the bot carries on.
"""

from __future__ import annotations

import os
import socket
import time
import unicodedata
from collections.abc import Mapping

from relaybot.log import get_logger

log = get_logger(component="systemd")

# systemd keeps whole STATUS= strings, but `systemctl status` shows one line: keep it short.
MAX_STATUS_CHARS = 400
# A manager that does not read its socket must not stall the caller (the reactor thread).
SEND_TIMEOUT = 1.0


def sanitize_status(text: str) -> str:
    """One line of printable text: control characters and line breaks become spaces."""
    cleaned = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in text
    )
    line = " ".join(cleaned.split())
    if len(line) > MAX_STATUS_CHARS:
        line = line[: MAX_STATUS_CHARS - 3] + "..."
    return line


def socket_address(value: str) -> bytes | None:
    """The AF_UNIX address for a NOTIFY_SOCKET value, or None if it is not one we can use.

    `/path` is a filesystem socket, `@name` an abstract one (a leading NUL byte on Linux);
    anything else (relative paths, `vsock:` addresses of newer systemd versions) is refused.
    """
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_usec_from(environ: Mapping[str, str], pid: int) -> int | None:
    """WATCHDOG_USEC as systemd's sd_watchdog_enabled() reads it: a positive integer, and
    only for the process WATCHDOG_PID names when that is set (a child inherits neither)."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("watchdog_usec_invalid", value=raw)
        return None
    if usec <= 0:
        log.warning("watchdog_usec_invalid", value=raw)
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            owner_pid = int(owner)
        except ValueError:
            log.warning("watchdog_pid_invalid", value=owner)
            return None
        if owner_pid != pid:
            return None  # the watchdog belongs to another process (we are its child)
    return usec


class Notifier:
    """Sends sd_notify messages to one socket; all methods are safe to call without systemd.

    Call from one thread at a time (the reactor thread); a signal handler interrupting that
    thread may also call it, since sending keeps no state that a second send could corrupt.
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self._target: bytes | None = None
        self._socket: socket.socket | None = None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._ready = False
        self._stopping = False
        self._failure_logged = False
        if self.address is None:
            return
        target = socket_address(self.address)
        if target is None:
            log.warning("notify_socket_unsupported", address=self.address)
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # close-on-exec by default
            sock.settimeout(SEND_TIMEOUT)
        except OSError as exc:
            log.warning("notify_socket_failed", address=self.address, error=str(exc))
            return
        self._socket, self._target = sock, target

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID (default: os.environ)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=watchdog_usec_from(env, os.getpid()),
        )

    # --- state ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when there is a socket to send to."""
        return self._socket is not None

    @property
    def is_ready(self) -> bool:
        """True once `ready()` has been called."""
        return self._ready

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd wants WATCHDOG=1, or None when there is no watchdog.

        Ping well within it (a third or a half is customary)."""
        if not self.enabled or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    # --- messages -------------------------------------------------------------------------

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram; True if it was handed to the socket."""
        if self._socket is None or self._target is None or not assignments:
            return False
        for assignment in assignments:
            if "=" not in assignment or "\n" in assignment:
                raise ValueError(f"not a single-line KEY=VALUE assignment: {assignment!r}")
        payload = "\n".join(assignments).encode()
        try:
            self._socket.sendto(payload, self._target)
        except OSError as exc:  # the socket is gone, refused, or the manager is not reading
            if not self._failure_logged:
                self._failure_logged = True
                log.warning(
                    "systemd_notify_failed",
                    address=self.address,
                    message=assignments[0],
                    error=str(exc) or type(exc).__name__,
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (and STATUS=): start-up is complete."""
        self._ready = True
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """STATUS=: a one-line description of what the service is doing."""
        return self.send(*_status(text))

    def reloading(self, status: str | None = "reloading configuration") -> bool:
        """RELOADING=1 with MONOTONIC_USEC=; follow with `ready_again()` when done.

        Before `ready()` there is nothing to reload from, and nothing is sent."""
        if not self._ready:
            return False
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}", *_status(status))

    def ready_again(self, status: str | None = None) -> bool:
        """READY=1 after a reload; before the first `ready()` only the STATUS= is sent, so a
        reload during start-up cannot declare the service started too early."""
        if not self._ready:
            return self.send(*_status(status))
        return self.send("READY=1", *_status(status))

    def stopping(self, status: str | None = "shutting down") -> bool:
        """STOPPING=1: shutdown began. Sent once; later calls do nothing."""
        if self._stopping:
            return False
        self._stopping = True
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: still alive. Nothing is sent when there is no watchdog for us."""
        if self.watchdog_interval is None:
            return False
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: ask for more time to start, reload or stop."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(int(seconds * 1_000_000), 0)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    line = sanitize_status(text)
    return (f"STATUS={line}",) if line else ()
