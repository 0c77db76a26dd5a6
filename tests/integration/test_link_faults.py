"""Link faults at the socket level, with the whole bot in the middle of a reply.

The bot talks to a real ngIRCd through a loopback proxy (tests/support/proxy.py) or, for TLS,
through a TLS front in this file; a plain client ("alice") sits in the channel directly on ngIRCd
and sees what the channel really got. The bot answers "tell me the story" with STORY_LINES lines,
which its outbox sends as a burst of 5 and then one line per ~1.1 s; every fault hits after
alice has seen FAULT_AFTER of them, so the rest are still queued.

For each fault the bot must: keep running (its thread and its inference thread alive, no
reactor exception logged), be back in the channel within REJOIN_BOUND seconds (or, where the
fault does not break the link, never leave it), answer an addressed line afterwards, and have
recorded in the channel context only bot lines that alice received.

Faults: an RST from both sides (reset); a link that forwards nothing and never closes
(freeze); server -> bot at one byte per 50 ms for 10 s, then an RST (drip); 10 MB without a
newline from the "server" (inject); and a TLS front that stops in the middle of a record.

A frozen link keeps what was written into it. On ngIRCd (no echo-message) those lines are
retracted from the context at the disconnect, because the server never answered the PING after
them (relaybot.irc.delivery). The frozen link is also played against InspIRCd, which grants
echo-message: there a line enters the context only when the server echoes it, so the lines
written into the frozen link are never recorded at all (relaybot.irc.echoes).
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from relaybot.config.loader import loads_config
from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.certs import CertPair, make_ca, make_cert
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, parse_line, start_server
from tests.support.proxy import FaultProxy, tls_handshake

pytestmark = pytest.mark.integration

CHANNEL = "#faults"
NICK = "relaybot"
ALT_NICK = "relaybot_"  # taken when the frozen link's ghost still holds NICK
BOT_NICKS = (NICK, ALT_NICK)
STORY_LINES = 12
STORY = "\n".join(
    f"story line {index:02d} of {STORY_LINES}: the keeper counted the waves"
    for index in range(1, STORY_LINES + 1)
)
AGAIN = "glad to be back on the line"
FAULT_AFTER = 6  # story lines the channel has seen when the fault hits: the burst, plus one
REJOIN_BOUND = 30.0  # seconds from the fault until the bot is back in the channel
REPLY_TIMEOUT = 20.0
# Events that mean an exception escaped a stage of the loop.
LOOP_ERRORS = {
    "reactor_error",
    "completion_handler_failed",
    "timer_failed",
    "line_handling_failed",
    "retract_failed",
}


def bot_config(config_factory: Callable[[str], Config], port: int, extra: str = "") -> Config:
    return config_factory(_toml(port, extra))


def _toml(port: int, extra: str = "") -> str:
    return f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "{NICK}"
alt_nicks = ["{ALT_NICK}"]
channels = ["{CHANNEL}"]
reconnect_min = 0.5
reconnect_max = 2.0
ping_interval = 5
ping_timeout = 5
{extra}
[policy]
cooldown = 0.0
user_burst = 100
user_per_minute = 600.0
channel_burst = 100
channel_per_minute = 600.0
[reply]
max_lines = {STORY_LINES}
"""


# --- what the channel saw and what the bot remembers ---------------------------------------


def _bot_privmsg(prefix: str = "") -> Callable[[str], bool]:
    def match(line: str) -> bool:
        source, command, params = parse_line(line)
        return (
            source in BOT_NICKS
            and command == "PRIVMSG"
            and params[:1] == [CHANNEL]
            and len(params) == 2
            and params[1].startswith(prefix)
        )

    return match


def seen_bot_lines(observer: RawClient) -> list[str]:
    """Every line the bot said in CHANNEL that the directly connected observer received."""
    match = _bot_privmsg()
    return [parse_line(line)[2][1] for line in observer.lines if match(line)]


def recorded_bot_lines(runner: BotRunner) -> list[str]:
    """The bot's own lines in the exported context of CHANNEL (`!relay export`'s JSON lines),
    the header's /join left out."""

    def export() -> tuple[Path | None, int]:
        transcript = runner.net.relay.transcript(CHANNEL)
        assert transcript is not None, f"no context for {CHANNEL}"
        return runner.net.export(CHANNEL), len(transcript.header)

    path, header = runner.on_reactor(export)
    assert path is not None, f"nothing exported for {CHANNEL}"
    exported = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # An answer of several lines is one turn; its lines are what the channel saw (these
    # tests' lines are short: none is wrapped).
    return [
        line
        for turn in exported[header:]
        if turn["role"] in BOT_NICKS
        for line in turn["content"].split("\n")
    ]


def undelivered(recorded: list[str], seen: list[str]) -> list[str]:
    """Recorded lines the channel never got (counted, so a line said twice must arrive twice)."""
    return list((Counter(recorded) - Counter(seen)).elements())


def context_text(runner: BotRunner) -> str:
    turns = runner.turns(CHANNEL) or []
    return "\n".join(turn.content for turn in turns)


# --- steps ---------------------------------------------------------------------------------


def session_value(runner: BotRunner, read: Callable[[Any], Any]) -> Any:
    return runner.on_reactor(lambda: read(runner.net.session))


def start_story(runner: BotRunner, observer: RawClient) -> None:
    """Get the bot into the middle of a long reply: FAULT_AFTER lines out, the rest queued."""
    runner.wait_until(lambda: runner.turns(CHANNEL) is not None, 20, f"the bot in {CHANNEL}")
    observer.join(CHANNEL)
    runner.wait_for_turn(CHANNEL, "observer has joined")
    observer.privmsg(CHANNEL, f"{NICK}: tell me the story")
    for _ in range(FAULT_AFTER):
        observer.wait_for(_bot_privmsg("story line"), REPLY_TIMEOUT)
    queued = session_value(runner, lambda session: len(session.outbox))
    assert queued >= 3, f"the fault would not hit mid-reply: only {queued} lines queued"


def wait_rejoined(runner: BotRunner, connects: int, since: float) -> float:
    """Wait until the bot made `connects` connections and is back in CHANNEL; the seconds
    that took since `since`, asserted within REJOIN_BOUND."""

    def back() -> bool:
        return bool(
            session_value(
                runner,
                lambda s: (
                    s.connects >= connects and s.registered and CHANNEL in s.joined_channels()
                ),
            )
        )

    runner.wait_until(back, REJOIN_BOUND + 5, f"the bot back in {CHANNEL}")
    elapsed = time.monotonic() - since
    assert elapsed <= REJOIN_BOUND, f"rejoined after {elapsed:.1f} s"
    return elapsed


def hello_again(runner: BotRunner, observer: RawClient, engine: FixedEngine) -> str:
    """Address the bot by the nick it has now and get an answer in the channel."""
    engine.text = AGAIN
    nick = session_value(runner, lambda session: session.nick)
    observer.privmsg(CHANNEL, f"{nick}: hello again")
    line = observer.wait_for(_bot_privmsg(AGAIN), REPLY_TIMEOUT)
    assert parse_line(line)[0] == nick
    runner.wait_for_turn(CHANNEL, AGAIN)
    return str(nick)


def assert_still_running(runner: BotRunner, logs: Sequence[Mapping[str, Any]]) -> None:
    assert runner.thread.is_alive(), "the bot's reactor thread ended"
    assert runner.bot.worker._thread.is_alive(), "the inference thread ended"
    assert not runner.net.session._stop.is_set()
    errors = [entry for entry in logs if entry["event"] in LOOP_ERRORS]
    assert not errors, errors


def events(logs: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(entry["event"]) for entry in logs}


def story_seen(observer: RawClient) -> list[str]:
    return [line for line in seen_bot_lines(observer) if line.startswith("story line")]


def connect_observer(server: RunningServer) -> RawClient:
    return RawClient.connect(server.host, server.port, "observer")


@contextlib.contextmanager
def story_behind_proxy(
    server: RunningServer, config_factory: Callable[[str], Config]
) -> Iterator[tuple[FaultProxy, list[dict[str, Any]], BotRunner, RawClient, FixedEngine]]:
    """The bot behind a proxy to `server`, an observer in the channel, and the story under
    way (start_story): the scene every mid-reply fault starts from."""
    engine = FixedEngine(STORY)
    with (
        FaultProxy(server.host, server.port) as proxy,
        structlog.testing.capture_logs() as logs,
        BotRunner(bot_config(config_factory, proxy.port), engine) as runner,
        connect_observer(server) as observer,
    ):
        start_story(runner, observer)
        yield proxy, logs, runner, observer, engine


# --- (1) reset -----------------------------------------------------------------------------


def test_reset_mid_reply_reconnects_and_records_only_delivered_lines(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("ngircd")
    with story_behind_proxy(server, config_factory) as (proxy, logs, runner, observer, engine):
        fault_at = time.monotonic()
        assert proxy.reset() == 1
        wait_rejoined(runner, connects=2, since=fault_at)
        assert session_value(runner, lambda s: s.nick) == NICK  # the RST freed the nick at once
        hello_again(runner, observer, engine)
        assert_still_running(runner, logs)
        recorded, seen = recorded_bot_lines(runner), seen_bot_lines(observer)
        assert undelivered(recorded, seen) == []
        assert FAULT_AFTER <= len(story_seen(observer)) < STORY_LINES  # it did hit mid-reply
        assert "unsent_lines_dropped" in events(logs)
        assert recorded[-1] == AGAIN


# --- (2) frozen link -----------------------------------------------------------------------


@dataclass
class FrozenOutcome:
    """What one run of the frozen-link scenario showed; shared by two tests."""

    error: BaseException | None = None
    rejoin_seconds: float = 0.0
    nick_after: str = ""
    recorded: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    story_seen: list[str] = field(default_factory=list)
    events: set[str] = field(default_factory=set)
    running_error: str | None = None
    kind: str = ""
    echo_message: list[bool] = field(default_factory=list)  # enabled, for each connection
    unechoed_dropped: list[int] = field(default_factory=list)  # counts logged
    retracted: list[int] = field(default_factory=list)  # counts logged


def _echo_message(runner: BotRunner) -> bool:
    return bool(session_value(runner, lambda s: "echo-message" in s.caps.enabled))


def _counts(logs: Sequence[Mapping[str, Any]], event: str) -> list[int]:
    return [int(entry["count"]) for entry in logs if entry["event"] == event]


FROZEN_SERVERS = {"ngircd": "/usr/sbin/ngircd", "inspircd": "/usr/sbin/inspircd"}


@pytest.fixture(scope="module", params=sorted(FROZEN_SERVERS))
def frozen_outcome(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrozenOutcome]:
    """The bot mid-reply when the link freezes: nothing moves either way and nothing closes.
    The ping check (5 s + 5 s) is what notices; the ghost connection keeps NICK, so the bot
    comes back as ALT_NICK. Played on ngIRCd (delivery by PING, retraction) and on InspIRCd
    (echo-message: a line counts once echoed)."""
    kind = str(request.param)
    binary = FROZEN_SERVERS[kind]
    if not shutil.which(binary):
        pytest.skip(f"{kind} is not installed ({binary}); .ci/run installs it")
    base = tmp_path_factory.mktemp(f"frozen-{kind}")
    server = start_server(kind, base / kind)
    outcome = FrozenOutcome(kind=kind)
    engine = FixedEngine(STORY)
    try:
        with (
            FaultProxy(server.host, server.port) as proxy,
            structlog.testing.capture_logs() as logs,
            BotRunner(loads_config(_toml(proxy.port), base_dir=base), engine) as runner,
            connect_observer(server) as observer,
        ):
            try:
                start_story(runner, observer)
                outcome.echo_message.append(_echo_message(runner))
                fault_at = time.monotonic()
                assert proxy.freeze() == 1
                outcome.rejoin_seconds = wait_rejoined(runner, connects=2, since=fault_at)
                outcome.nick_after = hello_again(runner, observer, engine)
                outcome.echo_message.append(_echo_message(runner))
                try:
                    assert_still_running(runner, logs)
                except AssertionError as error:
                    outcome.running_error = str(error)
                outcome.recorded = recorded_bot_lines(runner)
                outcome.seen = seen_bot_lines(observer)
                outcome.story_seen = story_seen(observer)
                outcome.events = events(logs)
                outcome.unechoed_dropped = _counts(logs, "unechoed_lines_dropped")
                outcome.retracted = _counts(logs, "unconfirmed_lines_retracted")
            except Exception as error:  # reported by the test that needs it, not hidden
                outcome.error = error
    finally:
        server.stop()
    yield outcome


def test_frozen_link_mid_reply_is_noticed_and_the_bot_comes_back(
    frozen_outcome: FrozenOutcome,
) -> None:
    outcome = frozen_outcome
    if outcome.error is not None:
        raise outcome.error
    assert outcome.running_error is None, outcome.running_error
    assert "ping_timeout" in outcome.events
    # Noticed by the ping check: at most ping_interval + ping_timeout + a reconnect.
    assert outcome.rejoin_seconds <= 15.0, outcome.rejoin_seconds
    assert outcome.nick_after == ALT_NICK  # the frozen connection still holds NICK
    assert FAULT_AFTER <= len(outcome.story_seen) < STORY_LINES  # it did hit mid-reply
    assert outcome.recorded[-1] == AGAIN and AGAIN in outcome.seen
    # The only lines recorded but never delivered are story lines the bot wrote into the
    # frozen link (into the kernel) before it noticed; everything else was delivered.
    lost = undelivered(outcome.recorded, outcome.seen)
    late_story = [line for line in STORY.splitlines() if line not in outcome.story_seen]
    assert all(line in late_story for line in lost), lost


def test_frozen_link_records_no_line_the_channel_never_saw(
    frozen_outcome: FrozenOutcome,
) -> None:
    if frozen_outcome.error is not None:
        pytest.fail(f"the frozen-link scenario itself failed: {frozen_outcome.error!r}")
    assert undelivered(frozen_outcome.recorded, frozen_outcome.seen) == []


def test_frozen_link_lines_the_server_never_had_are_dropped_or_retracted(
    frozen_outcome: FrozenOutcome,
) -> None:
    """Which way the bot knew: with echo-message, the lines written into the frozen link were
    never echoed and so never recorded (dropped at the disconnect, no PING spent); without
    it, they were recorded when written and retracted at the disconnect."""
    outcome = frozen_outcome
    if outcome.error is not None:
        pytest.fail(f"the frozen-link scenario itself failed: {outcome.error!r}")
    late_story = [line for line in STORY.splitlines() if line not in outcome.story_seen]
    assert late_story, "the fault did not hit mid-reply"
    recorded_story = [line for line in outcome.recorded if line.startswith("story line")]
    if outcome.kind == "inspircd":
        assert outcome.echo_message == [True, True]  # on both connections
        # Lines were written and never echoed: the scenario really tested the drop.
        assert outcome.unechoed_dropped and all(count > 0 for count in outcome.unechoed_dropped)
        assert outcome.retracted == []  # nothing was recorded unconfirmed
        # Replies are still recorded: the story the channel saw (the echo of the last line
        # before the freeze may have been caught in it) and the answer after the reconnect.
        assert len(recorded_story) >= FAULT_AFTER - 1, recorded_story
        assert outcome.recorded[-1] == AGAIN
    else:
        assert outcome.echo_message == [False, False]
        assert outcome.retracted and all(count > 0 for count in outcome.retracted)
        assert outcome.unechoed_dropped == []
    assert not set(late_story) & set(recorded_story)


# --- (3) slow drip, then a reset ----------------------------------------------------------

DRIP_SECONDS_PER_BYTE = 0.05
DRIP_FOR = 10.0
SLOW_LINE = "slowly: " + "a long and slowly dripping line " * 12  # ~400 bytes, ~20 s to drip


def test_slow_drip_keeps_the_link_then_a_reset_mid_line_reconnects_cleanly(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    """Server -> bot at one byte per 50 ms for 10 s: each byte is a sign of life, so no
    ping timeout, and the bot's own lines keep going out. Then an RST while the bot holds
    half of a server line: after the reconnect that half is gone, not glued to new input."""
    server = irc_server_factory("ngircd")
    with story_behind_proxy(server, config_factory) as (proxy, logs, runner, observer, engine):
        drip_at = time.monotonic()
        before = proxy.bytes_to_client()
        assert proxy.drip(DRIP_SECONDS_PER_BYTE) == 1
        observer.privmsg(CHANNEL, SLOW_LINE)  # longer than 10 s of drip
        # Bot -> server is untouched: the rest of the reply reaches the channel meanwhile.
        for _ in range(STORY_LINES - FAULT_AFTER):
            observer.wait_for(_bot_privmsg("story line"), REPLY_TIMEOUT)
        time.sleep(max(0.0, drip_at + DRIP_FOR - time.monotonic()))
        dripped = proxy.bytes_to_client() - before
        assert 0.5 * DRIP_FOR / DRIP_SECONDS_PER_BYTE <= dripped <= DRIP_FOR / 0.04, dripped
        assert session_value(runner, lambda s: (s.connects, s.registered)) == (1, True)
        assert "ping_timeout" not in events(logs)
        assert SLOW_LINE not in context_text(runner)  # not all of it has arrived yet
        fault_at = time.monotonic()
        assert proxy.reset() == 1
        wait_rejoined(runner, connects=2, since=fault_at)
        hello_again(runner, observer, engine)
        assert_still_running(runner, logs)
        # The half line died with its connection; nothing of it reached the context.
        assert "slowly" not in context_text(runner)
        assert "line_unparsable" not in events(logs)
        recorded, seen = recorded_bot_lines(runner), seen_bot_lines(observer)
        assert undelivered(recorded, seen) == []
        assert len(story_seen(observer)) == STORY_LINES


# --- (4) a 10 MB line ----------------------------------------------------------------------

HUGE = 10 * 1024 * 1024


def test_a_10_mb_line_without_newline_is_dropped_and_the_link_stays_up(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    """10 MB of `x` and no newline from the server side: the bot drops it as it reads (it
    never buffers more than MAX_BUFFERED_BYTES), keeps the connection and its reply going,
    and reads normally again after the next newline. No reconnect is needed, none happens."""
    server = irc_server_factory("ngircd")
    with story_behind_proxy(server, config_factory) as (proxy, logs, runner, observer, engine):
        started = time.monotonic()
        assert proxy.inject_to_client(b"x" * HUGE, timeout=40)
        inject_seconds = time.monotonic() - started
        # The next server line ends the huge one (the bot discards up to its newline).
        observer.privmsg(CHANNEL, "this line ends the huge one")
        runner.wait_until(
            lambda: "line_too_long_dropped" in events(logs), 10, "the huge line to be dropped"
        )
        for _ in range(STORY_LINES - FAULT_AFTER):
            observer.wait_for(_bot_privmsg("story line"), REPLY_TIMEOUT)
        hello_again(runner, observer, engine)
        assert session_value(runner, lambda s: (s.connects, s.registered)) == (1, True)
        assert CHANNEL in session_value(runner, lambda s: s.joined_channels())
        assert_still_running(runner, logs)
        assert "xxxxxxxx" not in context_text(runner)
        assert inject_seconds < 30, inject_seconds
        recorded, seen = recorded_bot_lines(runner), seen_bot_lines(observer)
        assert undelivered(recorded, seen) == []
        assert len(story_seen(observer)) == STORY_LINES
        assert not {"disconnected", "ping_timeout"} & events(logs)


def test_reset_while_discarding_a_huge_line_does_not_cost_the_next_connection_a_line(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
) -> None:
    server = irc_server_factory("ngircd")
    with (
        FaultProxy(server.host, server.port) as proxy,
        structlog.testing.capture_logs() as logs,
        BotRunner(bot_config(config_factory, proxy.port), FixedEngine("hi")) as runner,
    ):
        try:  # the set-up failing is a failure, not the expected one
            wait_rejoined(runner, connects=1, since=time.monotonic())
            assert proxy.inject_to_client(b"x" * (1024 * 1024), timeout=20)
            runner.wait_until(
                lambda: "line_too_long_dropped" in events(logs), 10, "the huge line to be dropped"
            )
            assert session_value(runner, lambda s: s.connection._discarding)
        except AssertionError as error:
            pytest.fail(f"set-up: {error}")
        fault_at = time.monotonic()
        assert proxy.reset() == 1
        # A plain reset is back in about a second (see the reset test); allow 8.
        runner.wait_until(
            lambda: bool(session_value(runner, lambda s: s.connects >= 2 and s.registered)),
            8,
            "the bot to register on its next connection",
        )
        assert time.monotonic() - fault_at <= 8


# --- (5) TLS: a server that stops in the middle of a record ---------------------------------


class _FrontConnection:
    def __init__(self) -> None:
        self.stall = threading.Event()  # asked to stall
        self.stalled = False  # half a record went out; nothing more will to the bot
        self.done = False


class StallingTlsFront:
    """Terminates TLS for the bot and forwards plain IRC to a real server, both ways.

    After `stall()`, each open connection sends the bot half of the next TLS record that
    carries server data, and then nothing more in that direction, never closing (bot ->
    server keeps working, so every line the bot writes still arrives). Connections made
    later are forwarded normally."""

    def __init__(self, pair: CertPair, target: tuple[str, int]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pair.cert, pair.key)
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.stalled = threading.Event()
        self._open: list[_FrontConnection] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True, name="tls-front")
        self._accepting.start()

    def stall(self) -> int:
        open_now = [conn for conn in self._open if not conn.done]
        for conn in open_now:
            conn.stall.set()
        return len(open_now)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn = _FrontConnection()
            self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(raw, conn), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, conn: _FrontConnection) -> None:
        upstream: socket.socket | None = None
        try:
            raw.settimeout(5)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
            tls_handshake(raw, tls, incoming, outgoing)
            upstream = socket.create_connection(self.target, timeout=5)
            while not self._stop.is_set():
                readable, _, _ = select.select([raw, upstream], [], [], 0.1)
                if raw in readable:
                    data = raw.recv(65536)
                    if not data:
                        return
                    incoming.write(data)
                    plain = _read_all(tls)
                    if plain is None:
                        return  # close_notify
                    if plain:
                        upstream.sendall(plain)
                    pending = outgoing.read()
                    if pending and not conn.stalled:
                        raw.sendall(pending)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    if conn.stalled:
                        continue  # swallowed: the bot's stream ends mid-record
                    tls.write(data)
                    record = outgoing.read()
                    if conn.stall.is_set():
                        raw.sendall(record[: len(record) // 2])  # and never the rest
                        conn.stalled = True
                        self.stalled.set()
                    else:
                        raw.sendall(record)
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.done = True
            raw.close()
            if upstream is not None:
                upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        self.listener.close()

    def __enter__(self) -> StallingTlsFront:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_all(tls: ssl.SSLObject) -> bytes | None:
    """All plaintext the TLS object holds now; None once the peer sent close_notify."""
    plain = b""
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            return plain
        except ssl.SSLZeroReturnError:
            return None
        if not chunk:
            return plain
        plain += chunk


def test_tls_server_stopping_mid_record_mid_reply_reconnects(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    tmp_path: Path,
) -> None:
    """The bot reads half a TLS record and then nothing: the read must not block the loop.
    Its reply keeps going out (bot -> server works), the ping check notices the silence,
    and it reconnects through the same front, which then works."""
    server = irc_server_factory("ngircd")
    ca = make_ca(tmp_path / "pki", "ca")
    pair = make_cert(tmp_path / "pki", "front", ca=ca)
    engine = FixedEngine(STORY)
    extra = f'tls = true\nca_file = "{ca.cert}"'
    with (
        StallingTlsFront(pair, (server.host, server.port)) as front,
        structlog.testing.capture_logs() as logs,
        BotRunner(bot_config(config_factory, front.port, extra), engine) as runner,
        connect_observer(server) as observer,
    ):
        start_story(runner, observer)
        assert front.stall() == 1
        # Server data for the bot, so that a record is cut in half.
        observer.privmsg(CHANNEL, "a line the bot gets half a record of")
        assert front.stalled.wait(10), "no server data went to the bot"
        fault_at = time.monotonic()
        for _ in range(STORY_LINES - FAULT_AFTER):
            observer.wait_for(_bot_privmsg("story line"), REPLY_TIMEOUT)
        wait_rejoined(runner, connects=2, since=fault_at)
        assert front.connections == 2
        hello_again(runner, observer, engine)
        assert_still_running(runner, logs)
        assert "ping_timeout" in events(logs)
        assert "half a record" not in context_text(runner)
        recorded, seen = recorded_bot_lines(runner), seen_bot_lines(observer)
        assert undelivered(recorded, seen) == []
        assert len(story_seen(observer)) == STORY_LINES
