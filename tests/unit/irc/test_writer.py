"""The writer's two ways of knowing the server has a line: with echo-message a PRIVMSG/NOTICE
counts as said when it is echoed (never PINGed for, never retracted, dropped unrecorded when
no echo comes), and without it as before: said when written, confirmed by PING, retracted
when the link dies first. A real Outbox and Writer; a fake socket and clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from relaybot.irc.connection import BotConnection
from relaybot.irc.multiline import Part
from relaybot.irc.outbox import Outbox
from relaybot.irc.text import casefold
from relaybot.irc.writer import Writer
from relaybot.log import get_logger


class FakeConnection:
    """Records the lines written; a dead link writes nothing and says so."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.connected = True

    def send_raw(self, line: str) -> bool:
        if not self.connected:
            return False
        self.lines.append(line)
        return True

    def is_connected(self) -> bool:
        return self.connected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scene:
    def __init__(self, echoing: bool) -> None:
        self.connection = FakeConnection()
        self.clock = Clock()
        self.echo = echoing
        self.said: list[str] = []
        self.retracted: list[str] = []
        self.writer = Writer(
            cast(BotConnection, self.connection),
            Outbox(burst=100, interval=0.0),
            ready=self.connection.is_connected,
            budget=lambda target: 400,
            fold=lambda name: casefold(name, "rfc1459"),
            clock=self.clock,
            log=get_logger(component="test"),
            echoing=lambda: self.echo,
        )

    def say(self, text: str, target: str = "#c") -> None:
        self.writer.queue_text(
            "PRIVMSG",
            target,
            text,
            lambda: self.said.append(text),
            lambda: self.retracted.append(text),
        )

    def flush(self) -> None:
        self.writer.flush(self.clock.now)

    def pings(self) -> list[str]:
        return [line for line in self.connection.lines if line.startswith("PING ")]

    def lose_link(self) -> None:
        self.connection.connected = False
        self.writer.disconnected()


def _counts(logs: list[dict[str, Any]], event: str) -> list[int]:
    return [entry["count"] for entry in logs if entry["event"] == event]


def test_with_echo_message_a_line_is_said_when_echoed_not_when_written() -> None:
    scene = Scene(echoing=True)
    scene.say("hello")
    scene.flush()
    assert scene.connection.lines == ["PRIVMSG #c :hello"]
    assert scene.said == []  # written is not yet said
    assert len(scene.writer.delivery) == 0  # nothing for a PING to confirm
    scene.writer.echoed("PRIVMSG", "#C", "hello")
    assert scene.said == ["hello"]
    scene.clock.now += 60.0
    scene.flush()
    assert scene.pings() == []  # no delivery check spent on an echoed line
    scene.lose_link()
    assert scene.retracted == []  # an echoed line is never retracted


def test_without_echo_message_nothing_changes() -> None:
    scene = Scene(echoing=False)
    scene.say("hello")
    scene.flush()
    assert scene.said == ["hello"]  # said when written
    assert len(scene.writer.delivery) == 1 and len(scene.writer.echoes) == 0
    scene.writer.echoed("PRIVMSG", "#c", "hello")  # an echo of it changes nothing
    assert scene.said == ["hello"]
    scene.clock.now += 5.0
    scene.flush()  # the PING is due and queued ...
    scene.flush()  # ... and written
    assert len(scene.pings()) == 1
    scene.lose_link()  # before its PONG
    assert scene.retracted == ["hello"]


def test_lines_never_echoed_before_the_link_dies_are_dropped_unrecorded(
    logs: list[dict[str, Any]],
) -> None:
    scene = Scene(echoing=True)
    for text in ("one", "two", "three"):
        scene.say(text)
    scene.flush()
    scene.writer.echoed("PRIVMSG", "#c", "one")
    scene.lose_link()
    assert scene.said == ["one"] and scene.retracted == []
    assert _counts(logs, "unechoed_lines_dropped") == [2]
    assert "unconfirmed_lines_retracted" not in {entry["event"] for entry in logs}
    scene.writer.echoed("PRIVMSG", "#c", "two")  # too late: the link it belonged to is gone
    assert scene.said == ["one"]


def test_a_disconnect_with_nothing_awaiting_logs_no_drop(logs: list[dict[str, Any]]) -> None:
    scene = Scene(echoing=True)
    scene.say("one")
    scene.flush()
    scene.writer.echoed("PRIVMSG", "#c", "one")
    scene.lose_link()
    assert _counts(logs, "unechoed_lines_dropped") == []


def test_an_echo_past_unechoed_lines_drops_them_and_logs_the_count(
    logs: list[dict[str, Any]],
) -> None:
    scene = Scene(echoing=True)
    for text in ("to #gone", "also", "kept"):
        scene.say(text)
    scene.flush()
    scene.writer.queue_text("NOTICE", "alice", "psst", None, None)  # tracked, no on_sent
    scene.flush()
    scene.writer.echoed("PRIVMSG", "#c", "kept")  # the server refused the first two
    assert scene.said == ["kept"]
    assert _counts(logs, "line_not_echoed") == [2]
    scene.writer.echoed("PRIVMSG", "#c", "stray")  # matches nothing: ignored
    assert _counts(logs, "line_not_echoed") == [2]
    scene.writer.echoed("NOTICE", "Alice", "psst")
    assert len(scene.writer.echoes) == 0


def test_an_action_is_said_when_echoed_with_its_framing() -> None:
    scene = Scene(echoing=True)
    scene.writer.queue_text(
        "PRIVMSG", "#c", "waves", lambda: scene.said.append("waves"), None, action=True
    )
    scene.flush()
    assert scene.connection.lines == ["PRIVMSG #c :\x01ACTION waves\x01"]
    scene.writer.echoed("PRIVMSG", "#c", "\x01ACTION waves\x01")
    assert scene.said == ["waves"]


def test_a_long_text_is_said_when_its_last_line_is_echoed() -> None:
    scene = Scene(echoing=True)
    scene.say("word " * 150)  # longer than the 400-byte budget: several lines
    scene.flush()
    lines = [line.split(" :", 1)[1] for line in scene.connection.lines]
    assert len(lines) > 1
    for text in lines[:-1]:
        scene.writer.echoed("PRIVMSG", "#c", text)
        assert scene.said == []
    scene.writer.echoed("PRIVMSG", "#c", lines[-1])
    assert len(scene.said) == 1


def test_a_server_that_never_echoes_is_reported_once(logs: list[dict[str, Any]]) -> None:
    scene = Scene(echoing=True)
    scene.say("one")
    scene.flush()
    for _ in range(5):
        scene.clock.now += 30.0
        scene.flush()
    warnings = [entry for entry in logs if entry["event"] == "echo_missing"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning" and warnings[0]["awaiting"] == 1
    assert scene.said == []


def test_echo_mode_is_decided_per_line_as_it_is_written() -> None:
    scene = Scene(echoing=False)
    scene.say("before")
    scene.flush()
    scene.echo = True  # CAP NEW echo-message
    scene.say("after")
    scene.flush()
    assert scene.said == ["before"]
    assert len(scene.writer.delivery) == 1 and len(scene.writer.echoes) == 1
    scene.writer.echoed("PRIVMSG", "#c", "after")
    assert scene.said == ["before", "after"]


def _echo_server(scene: Scene, echo: Callable[[str], bool]) -> Callable[[float], None]:
    """A `process` for confirm_before_quit: the server echoes the lines `echo` picks."""
    answered = 0

    def process(seconds: float) -> None:
        nonlocal answered
        scene.clock.now += seconds
        for line in scene.connection.lines[answered:]:
            command, target, text = line.split(" ", 2)
            if command in ("PRIVMSG", "NOTICE") and echo(text[1:]):
                scene.writer.echoed(command, target, text[1:])
        answered = len(scene.connection.lines)

    return process


def test_at_shutdown_the_echoes_are_awaited_instead_of_pinged_for(
    logs: list[dict[str, Any]],
) -> None:
    scene = Scene(echoing=True)
    scene.say("goodbye")
    scene.flush()
    process = _echo_server(scene, lambda text: True)
    scene.writer.confirm_before_quit(scene.clock.now + 2.0, process)
    assert scene.said == ["goodbye"]
    assert scene.pings() == []
    assert _counts(logs, "unechoed_lines_dropped") == []


def test_at_shutdown_lines_not_echoed_by_the_deadline_are_dropped(
    logs: list[dict[str, Any]],
) -> None:
    scene = Scene(echoing=True)
    for text in ("kept", "lost"):
        scene.say(text)
    scene.flush()
    process = _echo_server(scene, lambda text: text == "kept")
    started = scene.clock.now
    scene.writer.confirm_before_quit(started + 2.0, process)
    assert scene.clock.now >= started + 2.0  # it waited for the echo until the deadline
    assert scene.said == ["kept"] and scene.pings() == []
    assert _counts(logs, "unechoed_lines_dropped") == [1]
    assert len(scene.writer.echoes) == 0


def test_at_shutdown_without_echo_message_lines_are_still_pinged_for() -> None:
    scene = Scene(echoing=False)
    scene.say("goodbye")
    scene.flush()
    pongs: list[str] = []

    def process(seconds: float) -> None:
        scene.clock.now += seconds
        for ping in scene.pings()[len(pongs) :]:
            pongs.append(ping)
            scene.writer.delivery.confirm(ping.split(":", 1)[1])

    scene.writer.confirm_before_quit(scene.clock.now + 2.0, process)
    assert len(pongs) == 1 and len(scene.writer.delivery) == 0
    scene.lose_link()
    assert scene.retracted == []


@pytest.mark.parametrize("echoing", [False, True])
def test_a_multiline_batch_is_written_whole_with_nothing_inside_it(echoing: bool) -> None:
    # Nothing else may be sent while a client batch is open: lines for other targets (and
    # the delivery check) go before or after it, never between its lines.
    scene = Scene(echoing=echoing)
    scene.writer.outbox = Outbox(burst=100, interval=1.0)  # one line a second after the burst
    scene.say("first for #b", target="#b")
    queued = scene.writer.queue_multiline(
        "#c",
        [Part("one", False), Part(" two", True)],
        lambda: scene.said.append("batch"),
        lambda: scene.retracted.append("batch"),
    )
    scene.say("second for #b", target="#b")
    assert queued
    scene.flush()
    lines = scene.connection.lines
    start = next(i for i, line in enumerate(lines) if line.startswith("BATCH +"))
    assert lines[start : start + 4] == [
        "BATCH +ml1 draft/multiline #c",
        "@batch=ml1 PRIVMSG #c :one",
        "@batch=ml1;draft/multiline-concat PRIVMSG #c : two",
        "BATCH -ml1",
    ]
    assert scene.said.count("batch") == 1
    # Its lines are paced like separate lines.
    assert scene.writer.outbox.cost("a\r\nb") > 2 * scene.writer.outbox.interval
    if not echoing:
        scene.lose_link()  # before the server confirmed it: taken back whole
        assert scene.retracted.count("batch") == 1
