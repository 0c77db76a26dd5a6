"""Link faults at the session, over real loopback sockets: a reset while the outbox flushes,
lines longer than IRC allows, and a TLS peer that stops in the middle of a record. The loop
survives each one, and a line that was not written is never reported as sent."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog.testing

from relaybot.config.schema import IrcConfig
from relaybot.irc.message import parse
from relaybot.irc.session import IrcSession
from tests.support.certs import CertPair, make_ca, make_cert
from tests.support.proxy import rst_close, tls_handshake
from tests.support.scripted import ScriptedServer


def _session(port: int, **changes: object) -> IrcSession:
    config = IrcConfig(
        host="127.0.0.1",
        port=port,
        nick="relaybot",
        reconnect_min=0.2,
        reconnect_max=0.5,
        **changes,  # type: ignore[arg-type]
    )
    return IrcSession(config, on_event=lambda event: None, on_forget=lambda name: None)


def _step_until(session: IrcSession, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.step(0.05)
        if done():
            return
    raise AssertionError(f"timed out waiting for {what}")


def _registered(server: ScriptedServer, session: IrcSession) -> None:
    session._try_connect()
    server.accept()
    server.wait_for(b"USER ", 10)
    server.send(b":irc.test 001 relaybot :Welcome\r\n")
    _step_until(session, lambda: session.registered, 10, "registration")


def _serving(server: ScriptedServer, seconds: float) -> threading.Thread:
    """The server reads (and so confirms the bot's delivery checks) in the background."""

    def read() -> None:
        with contextlib.suppress(AssertionError, OSError):
            server.wait_for(b"\0never\0", seconds)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _echoing(
    server: ScriptedServer, seconds: float, echo: Callable[[bytes], bool]
) -> threading.Thread:
    """The server reads for `seconds` and, as one with echo-message does, sends back each of
    the bot's PRIVMSG lines whose text `echo` picks (the others it refuses, as with a 404)."""

    def read() -> None:
        assert server.conn is not None
        buffer = b""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                try:
                    data = server.conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                *lines, buffer = (buffer + data).split(b"\r\n")
                server.received.extend(lines)
                for line in lines:
                    if line.startswith(b"PRIVMSG ") and echo(line.split(b" :", 1)[1]):
                        server.send(b":relaybot!bot@127.0.0.1 " + line + b"\r\n")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_reset_while_the_outbox_flushes_is_a_reconnect_and_nothing_unwritten_counts() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    _registered(server, session)
    sent: list[int] = []
    for index in range(12):
        session.send_message("#c", f"line {index}", on_sent=lambda index=index: sent.append(index))
    _step_until(session, lambda: len(sent) >= 5, 10, "the first burst")  # burst = 5 lines
    assert server.conn is not None
    server.wait_for(b"PRIVMSG #c :line 4", 5)
    written = sum(b"PRIVMSG #c :" in line for line in server.received)
    rst_close(server.conn)
    time.sleep(0.3)  # the RST has arrived; the next write meets it
    with structlog.testing.capture_logs() as logs:
        # Straight to the flush, as when the reset lands between the read and the write.
        session._flush(session.clock() + 60.0)
        _step_until(session, lambda: session._reconnect_pending, 5, "a reconnect")
    assert not session.connection.is_connected()
    assert sent == list(range(written)), "a line that was never written counted as written"
    assert any(entry["event"] == "write_failed" for entry in logs)
    # And it comes back.
    _step_until(session, lambda: session.connects == 2, 10, "the second connect")
    server.accept(timeout=10)
    server.wait_for(b"CAP LS 302", 10)
    server.close()


def test_lines_the_server_never_confirmed_are_retracted_when_the_link_dies() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    session.delivery.delay = 0.2  # the confirming PING 0.2 s after a line, not 5 s
    _registered(server, session)
    said: list[str] = []

    def say(text: str) -> None:
        session.send_message(
            "#c", text, on_sent=lambda: said.append(text), on_lost=lambda: said.remove(text)
        )

    for text in ("one", "two", "three"):
        say(text)
    reader = _serving(server, 3.0)  # the server reads, and answers the PING after them
    _step_until(session, lambda: len(said) == 3 and not len(session.delivery), 10, "confirmed")
    reader.join()
    # Two more are written, but the server reads nothing more before the link dies.
    say("four")
    say("five")
    _step_until(session, lambda: len(said) == 5, 5, "written")
    with structlog.testing.capture_logs() as logs:
        assert server.conn is not None
        rst_close(server.conn)
        _step_until(session, lambda: not session.connection.is_connected(), 10, "the drop")
    assert said == ["one", "two", "three"]
    assert [e["count"] for e in logs if e["event"] == "unconfirmed_lines_retracted"] == [2]
    server.close()


def test_text_longer_than_a_line_goes_out_as_several_lines_of_at_most_512_bytes() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    _registered(server, session)
    words = [f"#channel-{index:03d} (muted 10m)" for index in range(40)]
    status = "model embedded on cpu; channels: " + ", ".join(words)
    done = threading.Event()
    session.send_notice("oper", status)
    session.send_message("#c", "x" * 1400, on_sent=done.set)
    session.send_notice("oper", f"unknown command {'y' * 600!r}")
    _step_until(session, lambda: len(session.outbox) == 0, 30, "every line written")
    server.wait_for(b"NOTICE oper :unknown command", 10)
    reader = _serving(server, 3.0)
    _step_until(session, done.is_set, 10, "the long message confirmed")
    reader.join()
    assert session.connection.is_connected()
    lines = [line for line in server.received if line.startswith((b"NOTICE", b"PRIVMSG"))]
    assert all(len(line) + 2 <= 512 for line in lines)
    notices = [line.split(b" :", 1)[1].decode() for line in lines if line.startswith(b"NOTICE")]
    assert " ".join(notices[: len(notices) - 2]).startswith("model embedded")
    joined = " ".join(notices)
    assert all(word in joined for word in words)
    privmsgs = [line.split(b" :", 1)[1] for line in lines if line.startswith(b"PRIVMSG")]
    assert b"".join(privmsgs) == b"x" * 1400
    server.close()


# --- TLS: a peer that stops in the middle of a record -------------------------------------


class StallingTlsServer:
    """Completes the TLS handshake, sends one whole line and then half of the next record,
    and then sends nothing at all."""

    def __init__(self, pair: CertPair) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pair.cert, pair.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.stalled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        held: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            held.append(raw)
            raw.settimeout(5)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
            try:
                tls_handshake(raw, tls, incoming, outgoing)
                tls.write(b":irc.test NOTICE * :hello\r\n")
                raw.sendall(outgoing.read())
                tls.write(b":irc.test 001 relaybot :Welcome\r\n")
                record = outgoing.read()
                raw.sendall(record[: len(record) // 2])  # and never the rest
            except (OSError, ssl.SSLError):
                continue
            self.stalled.set()
        for sock in held:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def stalling_tls(tmp_path: Path) -> Iterator[tuple[StallingTlsServer, CertPair]]:
    ca = make_ca(tmp_path, "ca")
    server = StallingTlsServer(make_cert(tmp_path, "server", ca=ca))
    yield server, ca
    server.close()


def test_a_tls_peer_that_stops_mid_record_does_not_hang_the_loop(
    stalling_tls: tuple[StallingTlsServer, CertPair],
) -> None:
    server, ca = stalling_tls
    session = _session(
        server.port, tls=True, ca_file=str(ca.cert), ping_interval=1.0, ping_timeout=1.0
    )
    session._try_connect()
    assert server.stalled.wait(10)
    longest: list[float] = []

    def loop() -> None:
        # Every turn returns although half a record sits in the socket; the PING check then
        # sees the silence and connects again.
        deadline = time.monotonic() + 15
        while server.connections < 2 and time.monotonic() < deadline:
            started = time.monotonic()
            session.step(0.05)
            longest.append(time.monotonic() - started)

    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        thread.join(20)
    assert not thread.is_alive(), "the loop blocked on a TLS read"
    assert max(longest) < 2.0
    assert server.connections >= 2
    assert any(entry["event"] == "registration_timeout" for entry in logs)


def test_stopping_soon_after_speaking_keeps_the_lines_the_server_confirms() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    _registered(server, session)
    retracted: list[str] = []
    session.send_message("#c", "goodbye", on_lost=lambda: retracted.append("goodbye"))
    _step_until(session, lambda: len(session.delivery) == 1, 5, "the line written")
    reader = _serving(server, 4.0)  # the server reads, and answers PINGs, while we stop
    session.stop()
    session._shutdown()
    reader.join()
    assert retracted == []
    commands = [line.split(b" ")[0] for line in server.received]
    assert commands.index(b"PING") < commands.index(b"QUIT")
    server.close()


def test_both_pong_forms_confirm() -> None:
    session = _session(6667)
    for line in (":irc.test PONG irc.test :relaybot-ack-1", ":irc.test PONG :relaybot-ack-2"):
        message = parse(line)
        assert message is not None
        session.delivery.written(lambda: None, now=0.0)
        assert session.delivery.want_ack(10.0) is not None
        session.delivery.ack_written()
        session.inbound.on_pong(message)
        assert len(session.delivery) == 0


def test_with_echo_message_only_echoed_lines_count_and_no_ping_confirms_them() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    session.delivery.delay = 0.2  # a confirming PING would be due almost at once
    _registered(server, session)
    session.caps.enabled.add("echo-message")  # as if the server had ACKed it
    said: list[str] = []

    def say(text: str) -> None:
        session.send_message(
            "#c", text, on_sent=lambda: said.append(text), on_lost=lambda: said.remove(text)
        )

    with structlog.testing.capture_logs() as logs:
        for text in ("one", "refused", "three"):
            say(text)
        reader = _echoing(server, 2.0, lambda text: text != b"refused")
        _step_until(session, lambda: said == ["one", "three"], 10, "the echoes")
        deadline = time.monotonic() + 1.0  # long past the delay a PING would wait
        while time.monotonic() < deadline:
            session.step(0.05)
        reader.join()
        assert not any(line.startswith(b"PING") for line in server.received)
        assert len(session.delivery) == 0
        # Two more are written, but the server reads nothing more before the link dies.
        say("four")
        say("five")
        _step_until(session, lambda: len(session.writer.echoes) == 2, 5, "written")
        assert said == ["one", "three"]  # written is not said
        assert server.conn is not None
        rst_close(server.conn)
        _step_until(session, lambda: not session.connection.is_connected(), 10, "the drop")
    assert said == ["one", "three"]
    assert [e["count"] for e in logs if e["event"] == "line_not_echoed"] == [1]
    assert [e["count"] for e in logs if e["event"] == "unechoed_lines_dropped"] == [2]
    assert not any(e["event"] == "unconfirmed_lines_retracted" for e in logs)
    server.close()


def test_stopping_soon_after_speaking_waits_for_the_echo_instead_of_a_ping() -> None:
    server = ScriptedServer()
    session = _session(server.port)
    _registered(server, session)
    session.caps.enabled.add("echo-message")
    said: list[str] = []
    session.send_message("#c", "goodbye", on_sent=lambda: said.append("goodbye"))
    reader = _echoing(server, 4.0, lambda text: True)  # echoes while we stop
    session.stop()
    session._shutdown()
    reader.join()
    assert said == ["goodbye"]
    commands = [line.split(b" ")[0] for line in server.received]
    assert commands.index(b"PRIVMSG") < commands.index(b"QUIT")
    assert b"PING" not in commands
    server.close()
