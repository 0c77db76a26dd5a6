"""A stand-in for systemd's notify socket, and the fixtures that open one."""

from __future__ import annotations

import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Message = dict[str, str]


class NotifyListener:
    """Stands in for systemd's notify socket: a bound AF_UNIX datagram socket, drained by a
    thread (so a sender never blocks on a full queue), messages parsed into dicts."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.raw: list[bytes] = []
        self.received: list[Message] = []
        self._queue: queue.Queue[Message] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.raw.append(data)
            message = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.received.append(message)
            self._queue.put(message)

    def next(self, timeout: float) -> Message | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float) -> Message:
        """The next message (in order) that matches; those before it are passed over."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"no matching notification in {timeout} s; got {self.received[-15:]}")

    def collect(self, seconds: float) -> list[Message]:
        deadline = time.monotonic() + seconds
        messages = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                messages.append(message)
        return messages

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless it is too long for an AF_UNIX path (108 bytes): then a short one."""
    if len(str(tmp_path / "notify.sock")) < 100:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield short
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def listener(socket_dir: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(str(socket_dir / "notify.sock"))
    yield notify
    notify.close()
