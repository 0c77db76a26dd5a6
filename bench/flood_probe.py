"""Measure which PRIVMSG bursts and rates InspIRCd and ngIRCd accept with default flood limits.

Each trial starts from a fresh client connection (the "sender") and an observer in the
same channel, waits `settle` seconds so registration and JOIN penalties decay, then
writes PRIVMSG lines of a fixed length on a schedule (all at once for a burst, evenly
spaced for a rate). It reports whether the server disconnected the sender (and its ERROR
line), how many lines the observer saw within 0.5 s of being written, the server's
delivery rate once backlogged, and how the delivery lag grew over the trial.

    .venv/bin/python bench/flood_probe.py matrix                 # the whole table
    .venv/bin/python bench/flood_probe.py burst --kind inspircd --size 400 --count 30
    .venv/bin/python bench/flood_probe.py rate --kind ngircd --size 60 --rate 2 --duration 30
    .venv/bin/python bench/flood_probe.py outbox --burst 5 --interval 1 --bps 512 --count 60

Trials against one server run concurrently in threads (different nicks and channels; the
servers keep flood state per client), and the servers run side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relaybot.irc.outbox import (
    DEFAULT_BURST,
    DEFAULT_BYTES_PER_SECOND,
    DEFAULT_INTERVAL,
    Outbox,
    Outgoing,
)
from tests.support.ircservers import RawClient, RunningServer, parse_line, start_server

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def next_id() -> int:
    with _ids_lock:
        return next(_ids)


def make_line(channel: str, seq: int, size: int) -> str:
    """A PRIVMSG of exactly `size` bytes (without CRLF) whose text starts with its number."""
    head = f"PRIVMSG {channel} :seq {seq:05d} "
    return head + ("abcdefghij" * 60)[: max(0, size - len(head))]


@dataclass
class Result:
    kind: str
    label: str
    size: int
    sent: int = 0
    delivered: int = 0
    in_order: bool = True
    killed_after: float | None = None  # seconds after the first write
    error: str = ""
    instant: int = 0  # lines the observer saw within 0.5 s of being written
    backlog_rate: float = 0.0  # lines/s delivered while lines were still waiting
    max_lag: float = 0.0  # worst delay between write and delivery
    lag_slope: float = 0.0  # growth of the lag per line over the second half
    arrivals: list[float] = field(default_factory=list)

    def row(self) -> str:
        killed = (
            f"KILLED at {self.killed_after:6.1f}s: {self.error}"
            if self.killed_after is not None
            else "ok"
        )
        return (
            f"{self.kind:8} {self.label:22} size={self.size:3} sent={self.sent:3}"
            f" seen={self.delivered:3}{'' if self.in_order else ' OUT-OF-ORDER'}"
            f" instant={self.instant:3} backlog={self.backlog_rate:4.2f}/s"
            f" maxlag={self.max_lag:6.1f}s slope={self.lag_slope:+.3f}s/line  {killed}"
        )


class Observer(threading.Thread):
    """Reads the channel on its own connection and timestamps the sender's lines."""

    def __init__(self, client: RawClient, sender: str, channel: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.sender = sender.lower()
        self.channel = channel.lower()
        self.seen: list[tuple[int, float]] = []  # (seq, monotonic arrival)
        self.stop = threading.Event()

    def _match(self, line: str) -> bool:
        source, command, params = parse_line(line)
        return (command == "PRIVMSG" and source.lower() == self.sender
                and len(params) == 2 and params[0].lower() == self.channel)  # fmt: skip

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                line = self.client.wait_for(self._match, 0.2)
            except TimeoutError:
                continue
            except ConnectionError:
                return
            text = parse_line(line)[2][1]
            self.seen.append((int(text.split()[1]), time.monotonic()))


def connect_pair(server: RunningServer) -> tuple[RawClient, RawClient, str]:
    n = next_id()
    channel = f"#probe{n}"
    with ThreadPoolExecutor(2) as pool:  # InspIRCd registers on its 1 s tick: do both at once
        sender_f = pool.submit(RawClient.connect, server.host, server.port, f"snd{n}")
        observer_f = pool.submit(RawClient.connect, server.host, server.port, f"obs{n}")
        sender, observer = sender_f.result(), observer_f.result()
    sender.join(channel)
    observer.join(channel)
    return sender, observer, channel


def sender_alive(sender: RawClient) -> bool:
    """Read whatever the server sent the sender (answering PINGs); False once it is gone."""
    try:
        sender.wait_for(lambda line: parse_line(line)[1] == "ERROR", 0.01)
    except TimeoutError:
        return not sender.closed
    except ConnectionError:
        return False
    return False  # an ERROR line: the server is closing the link


def run_trial(
    server: RunningServer,
    label: str,
    size: int,
    writer: Callable[[RawClient, str], Iterator[int]],
    *,
    settle: float,
    linger: float,
) -> Result:
    """Connect, settle, let `writer` write (yielding the running count), observe, report."""
    sender, observer, channel = connect_pair(server)
    watcher = Observer(observer, sender.nick, channel)
    watcher.start()
    result = Result(server.kind, label, size)
    write_times: dict[int, float] = {}
    try:
        end_settle = time.monotonic() + settle
        while time.monotonic() < end_settle:
            sender_alive(sender)
            time.sleep(0.1)
        start = time.monotonic()
        sender.sock.settimeout(30)
        for count in writer(sender, channel):
            now = time.monotonic()
            for seq in range(result.sent, count):
                write_times[seq] = now
            result.sent = count
            if not sender_alive(sender):
                break
            sender.sock.settimeout(30)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline and len(watcher.seen) < result.sent:
            if not sender_alive(sender):
                break
            time.sleep(0.05)
        if not sender_alive(sender) and result.killed_after is None:
            result.killed_after = time.monotonic() - start
            errors = [line for line in sender.lines if parse_line(line)[1] == "ERROR"]
            result.error = errors[-1] if errors else "connection closed without ERROR"
    finally:
        time.sleep(0.3)
        watcher.stop.set()
        watcher.join(2)
        sender.close()
        observer.close()
    seen = list(watcher.seen)
    result.delivered = len(seen)
    result.in_order = [seq for seq, _ in seen] == list(range(len(seen)))
    result.arrivals = [at - start for _, at in seen]
    lags = [at - write_times[seq] for seq, at in seen if seq in write_times]
    result.instant = sum(1 for lag in lags if lag <= 0.5)
    result.max_lag = max(lags, default=0.0)
    backlogged = [at for (seq, at), lag in zip(seen, lags, strict=True) if lag > 0.5]
    if len(backlogged) >= 3 and backlogged[-1] - backlogged[0] >= 1.0:
        result.backlog_rate = (len(backlogged) - 1) / (backlogged[-1] - backlogged[0])
    half = lags[len(lags) // 2 :]
    if len(half) >= 2:
        result.lag_slope = (half[-1] - half[0]) / (len(half) - 1)
    return result


def burst_writer(count: int, size: int) -> Callable[[RawClient, str], Iterator[int]]:
    def write(sender: RawClient, channel: str) -> Iterator[int]:
        data = b"".join(make_line(channel, i, size).encode() + b"\r\n" for i in range(count))
        with contextlib.suppress(OSError):  # a kill mid-write shows up in the result
            sender.send_bytes(data)
        yield count

    return write


def rate_writer(
    rate: float, duration: float, size: int
) -> Callable[[RawClient, str], Iterator[int]]:
    def write(sender: RawClient, channel: str) -> Iterator[int]:
        start = time.monotonic()
        total = int(rate * duration)
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                sender.send(make_line(channel, i, size))
            except OSError:
                yield i
                return
            yield i + 1

    return write


def outbox_writer(
    count: int, size: int, burst: int, interval: float, bps: int, tick: float = 0.05
) -> Callable[[RawClient, str], Iterator[int]]:
    def write(sender: RawClient, channel: str) -> Iterator[int]:
        outbox = Outbox(burst=burst, interval=interval, bytes_per_second=bps)
        for i in range(count):
            outbox.push(Outgoing(make_line(channel, i, size), target=channel))
        sent = 0
        while len(outbox):
            for item in outbox.due(time.monotonic()):
                try:
                    sender.send(item.line)
                except OSError:
                    yield sent
                    return
                sent += 1
            yield sent
            time.sleep(tick)

    return write


@dataclass(frozen=True)
class Spec:
    kind: str
    label: str
    size: int
    writer: Callable[[RawClient, str], Iterator[int]]
    linger: float


def run_specs(specs: list[Spec], *, settle: float) -> list[Result]:
    """Start one server per kind, run all specs concurrently, return results in order."""
    kinds = sorted({spec.kind for spec in specs})
    with tempfile.TemporaryDirectory(prefix="flood-probe-") as tmp:
        servers = {k: start_server(k, Path(tmp) / k, relaxed_flood=False) for k in kinds}
        try:
            with ThreadPoolExecutor(len(specs)) as pool:
                futures = [
                    pool.submit(run_trial, servers[s.kind], s.label, s.size, s.writer,
                                settle=settle, linger=s.linger)
                    for s in specs
                ]  # fmt: skip
                return [f.result() for f in futures]
        finally:
            for server in servers.values():
                server.stop()


def matrix_specs() -> list[Spec]:
    specs: list[Spec] = []
    bursts = {
        ("inspircd", 400): (10, 15, 20, 21, 25),
        ("inspircd", 60): (50, 100, 130, 132, 133, 140),
        ("ngircd", 400): (10, 30, 100, 300),
        ("ngircd", 60): (10, 30, 100, 300),
    }
    for (kind, size), counts in bursts.items():
        for count in counts:
            specs.append(Spec(kind, f"burst {count}", size, burst_writer(count, size), 15.0))
    for kind in ("inspircd", "ngircd"):
        for size in (60, 400):
            for rate in (0.9, 1.0, 1.1, 1.5, 2.0, 3.0):
                specs.append(
                    Spec(kind, f"rate {rate}/s x40s", size, rate_writer(rate, 40, size), 20.0)
                )  # fmt: skip
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("matrix", help="bursts and rates for both servers")
    burst = sub.add_parser("burst")
    rate = sub.add_parser("rate")
    outbox = sub.add_parser("outbox", help="drain an Outbox with these settings")
    for p in (burst, rate, outbox):
        p.add_argument("--kind", choices=("inspircd", "ngircd", "both"), default="both")
        p.add_argument("--size", type=int, default=400)
    for p in (burst, outbox):
        p.add_argument("--count", type=int, default=30)
    rate.add_argument("--rate", type=float, default=1.0)
    rate.add_argument("--duration", type=float, default=30.0)
    outbox.add_argument("--burst", type=int, default=DEFAULT_BURST)
    outbox.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    outbox.add_argument("--bps", type=int, default=DEFAULT_BYTES_PER_SECOND)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--linger", type=float, default=15.0)
    parser.add_argument("--arrivals", action="store_true", help="print arrival times")
    args = parser.parse_args(argv)

    if args.mode == "matrix":
        specs = matrix_specs()
    else:
        kinds = ("inspircd", "ngircd") if args.kind == "both" else (args.kind,)
        specs = []
        for kind in kinds:
            if args.mode == "burst":
                label, writer = f"burst {args.count}", burst_writer(args.count, args.size)
            elif args.mode == "rate":
                label = f"rate {args.rate}/s x{args.duration:g}s"
                writer = rate_writer(args.rate, args.duration, args.size)
            else:
                label = f"outbox {args.burst}/{args.interval:g}s/{args.bps}Bps"
                writer = outbox_writer(args.count, args.size, args.burst, args.interval, args.bps)
            specs.append(Spec(kind, label, args.size, writer, args.linger))
    started = time.monotonic()
    for result in run_specs(specs, settle=args.settle):
        print(result.row(), flush=True)
        if args.arrivals:
            print("   arrivals:", " ".join(f"{at:.2f}" for at in result.arrivals))
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
