"""200 queued replies through the default Outbox trip neither InspIRCd's nor ngIRCd's flood limits.

Both servers run with their default flood settings (`relaxed_flood=False`): InspIRCd 3
with fakelag (10 lines, then 1 line/s) and a 4096-byte recvq whose overflow kills the
client with "RecvQ exceeded"; ngIRCd with its 3-commands-per-turn throttle. A RawClient
plays the bot: it queues 200 reply lines of 300-400 bytes in an `Outbox()` with the
default settings and writes `outbox.due(now)` every 50 ms like the reactor loop. An
observer in the channel must see every line, in order, with no server-side backlog, and
the bot must never be disconnected. The two servers run side by side in threads, so the
wall time is that of one drain (about four minutes).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relaybot.outbox import Outbox, Outgoing

from .ircservers import INSPIRCD_BIN, NGIRCD_BIN, RawClient, parse_line, start_server

pytestmark = pytest.mark.integration

BINARIES = {"inspircd": INSPIRCD_BIN, "ngircd": NGIRCD_BIN}
CHANNEL = "#flood"
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
    elapsed: float = 0.0  # from the first write to the last delivery


def bot_alive(bot: RawClient) -> str:
    """Read what the server sent the bot (answering PINGs); "" or why the bot is gone."""
    try:
        line = bot.wait_for(lambda line: parse_line(line)[1] == "ERROR", 0.005)
    except TimeoutError:
        return "connection closed" if bot.closed else ""
    except ConnectionError:
        return "connection closed"
    return line


def drain(kind: str, workdir: Path) -> Drain:
    """Start `kind` with default flood limits and drain 200 queued replies through it."""
    result = Drain(kind)
    with start_server(kind, workdir, relaxed_flood=False) as server:
        with ThreadPoolExecutor(2) as pool:  # InspIRCd registers on its 1 s tick
            bot_future = pool.submit(RawClient.connect, server.host, server.port, "floodbot")
            observer_future = pool.submit(RawClient.connect, server.host, server.port, "watcher")
            bot, observer = bot_future.result(), observer_future.result()
        with bot, observer:
            bot.join(CHANNEL)
            observer.join(CHANNEL)

            def from_bot(line: str) -> bool:
                source, command, params = parse_line(line)
                return (source == bot.nick and command == "PRIVMSG"
                        and len(params) == 2 and params[0] == CHANNEL)  # fmt: skip

            outbox = Outbox()  # the defaults under test
            for index in range(LINES):
                body = reply_body(index)
                assert outbox.push(Outgoing(f"PRIVMSG {CHANNEL} :{body}", target=CHANNEL))
                result.sent.append(body)
            budget = sum(outbox.cost(f"PRIVMSG {CHANNEL} :{b}") for b in result.sent)
            written_at: list[float] = []
            start = time.monotonic()
            deadline = start + budget + 60.0
            while len(result.received) < LINES and time.monotonic() < deadline:
                bot.sock.settimeout(10.0)  # wait_for leaves a tiny read timeout behind
                for item in outbox.due(time.monotonic()):
                    bot.send(item.line)
                    written_at.append(time.monotonic())
                result.error = bot_alive(bot)
                if result.error:
                    break
                for line in received_within(observer, from_bot, TICK):
                    index = len(result.received)
                    result.received.append(parse_line(line)[2][1])
                    if index < len(written_at):
                        result.lags.append(time.monotonic() - written_at[index])
            result.elapsed = time.monotonic() - start
            if not result.error:
                result.error = bot_alive(bot)
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
