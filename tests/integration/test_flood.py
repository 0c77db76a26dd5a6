"""200 queued reply lines from the real bot trip neither InspIRCd's nor ngIRCd's flood limits.

Both servers run with their default flood settings (`relaxed_flood=False`): InspIRCd 3
with fakelag (10 lines, then 1 line/s) and a 4096-byte recvq whose overflow kills the
client with "RecvQ exceeded"; ngIRCd with its 3-commands-per-turn throttle. The bot runs
with its default pacing (no `[irc.flood]` section) and its real registration traffic (CAP,
WHO, bot mode, PONGs); 200 reply lines of 300-400 bytes are queued at once for one channel,
plus one line for a second channel. An observer must see every line, in order, with no
server-side backlog; the quiet channel's line must not wait behind the busy one; and the bot
must never be disconnected. The two servers run side by side in threads, so the wall time is
that of one drain (about four minutes).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import INSPIRCD_BIN, NGIRCD_BIN, RawClient, parse_line, start_server

pytestmark = pytest.mark.integration

BINARIES = {"inspircd": INSPIRCD_BIN, "ngircd": NGIRCD_BIN}
CHANNEL = "#flood"
QUIET = "#quiet"
LINES = 200
TICK = 0.05  # the reactor loop's turn
MAX_LAG = 5.0  # seconds from write to delivery; a server-side backlog grows far beyond
PROSE = (
    "the relay keeps every line in order while the queue drains slowly enough that "
    "neither server ever has to hold a message back or close the link for flooding"
)


def reply_body(index: int) -> str:
    """Reply text of 300-400 bytes, numbered so that order and loss are visible."""
    size = 300 + (index * 37) % 101
    vocabulary = PROSE.split(" ")
    words: list[str] = []
    position = index
    while len(" ".join(words)) < size:
        words.append(vocabulary[position % len(vocabulary)])
        position += 7
    return f"reply {index:03d}: " + " ".join(words)[:size].rstrip()  # ngIRCd strips trailing space


@dataclass
class Drain:
    kind: str
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    error: str = ""  # an ERROR line, or how the bot's connection ended
    quiet_after: int = -1  # busy-channel lines delivered before the quiet channel's line
    elapsed: float = 0.0  # from the first write to the last delivery


def drain(kind: str, workdir: Path) -> Drain:
    """Start `kind` with default flood limits and send 200 queued replies through the bot."""
    result = Drain(kind)
    with start_server(kind, workdir, relaxed_flood=False) as server:
        config = loads_config(f"""
[irc]
network = "{kind}"
host = "{server.host}"
port = {server.port}
nick = "floodbot"
channels = ["{CHANNEL}", "{QUIET}"]
[state]
dir = "{workdir / "state"}"
""")
        observer = RawClient.connect(server.host, server.port, "watcher")
        observer.join(CHANNEL)
        observer.join(QUIET)
        with BotRunner(config, FixedEngine()) as runner:  # type: ignore[arg-type]
            runner.wait_until(
                lambda: runner.turns(CHANNEL) is not None and runner.turns(QUIET) is not None,
                30,
                "the bot in both channels",
            )
            session = runner.net.session
            written_at: list[float] = []
            result.sent = [reply_body(index) for index in range(LINES)]

            write = session.connection.send_raw

            def timed_write(line: str) -> bool:
                # When each line reaches the socket: on_sent comes later where the server
                # echoes (echo-message), and the lag to measure is the server's.
                written = write(line)
                if written and line.startswith(f"PRIVMSG {CHANNEL} :"):
                    written_at.append(time.monotonic())
                return written

            def queue_all() -> None:
                session.connection.send_raw = timed_write  # type: ignore[method-assign]
                for body in result.sent:
                    session.send_message(CHANNEL, body)
                session.send_message(QUIET, "a quiet channel is not starved")

            runner.on_reactor(queue_all)
            start = time.monotonic()
            deadline = start + LINES * 1.5 + 60.0

            def from_bot(line: str) -> bool:
                source, command, _ = parse_line(line)
                return source == "floodbot" and command == "PRIVMSG"

            quiet_after = -1
            while len(result.received) < LINES and time.monotonic() < deadline:
                for line in received_within(observer, from_bot, TICK):
                    target, text = parse_line(line)[2][:2]
                    if target == QUIET:
                        quiet_after = len(result.received)
                        continue
                    index = len(result.received)
                    result.received.append(text)
                    if index < len(written_at):
                        result.lags.append(time.monotonic() - written_at[index])
                if observer.closed:
                    break
            result.elapsed = time.monotonic() - start
            result.quiet_after = quiet_after
            if session.connects != 1:
                result.error = f"the bot connected {session.connects} times"
            if not session.connection.is_connected():
                result.error += " (not connected at the end)"
        observer.close()
    return result


def received_within(
    client: RawClient, predicate: Callable[[str], bool], timeout: float
) -> list[str]:
    """The matching lines that arrive within `timeout`, plus any already received."""
    end = time.monotonic() + timeout
    found: list[str] = []
    while True:
        try:
            found.append(client.wait_for(predicate, max(0.0, end - time.monotonic())))
        except TimeoutError:
            return found


@pytest.fixture(scope="module")
def drains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Drain]:
    kinds = [kind for kind, binary in BINARIES.items() if shutil.which(binary)]
    if not kinds:
        return {}
    root = tmp_path_factory.mktemp("flood")
    with ThreadPoolExecutor(len(kinds)) as pool:
        futures = {kind: pool.submit(drain, kind, root / kind) for kind in kinds}
        results = {kind: future.result() for kind, future in futures.items()}
    for kind, result in results.items():  # shown with -s; the numbers behind the defaults
        print(
            f"\n{kind}: {len(result.received)}/{LINES} lines in {result.elapsed:.0f} s,"
            f" worst lag {max(result.lags, default=0.0):.2f} s, error {result.error!r}"
        )
    return results


@pytest.mark.parametrize("kind", sorted(BINARIES))
def test_200_line_burst_survives_default_flood_limits(kind: str, drains: dict[str, Drain]):
    if kind not in drains:
        pytest.skip(f"{kind} is not installed ({BINARIES[kind]}); .ci/run installs it")
    result = drains[kind]
    assert result.error == "", f"{kind} disconnected the bot: {result.error}"
    assert len(result.received) == LINES, (
        f"{kind}: {len(result.received)} of {LINES} lines arrived in {result.elapsed:.0f} s"
    )
    assert result.received == result.sent  # nothing lost, altered or reordered
    # The server never had to hold lines back: a rate above its limit shows up as a
    # delivery lag that grows with every line long before the disconnect.
    assert max(result.lags) < MAX_LAG, f"{kind}: worst delivery lag {max(result.lags):.1f} s"
    # Per-target fairness: the other channel's line went out within one rotation.
    assert 0 <= result.quiet_after <= 6, f"{kind}: quiet line after {result.quiet_after}"
