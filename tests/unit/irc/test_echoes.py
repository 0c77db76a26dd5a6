"""The lines awaiting their echo (echo-message): matched in write order, skipped lines dropped
and counted, the bound, the one warning for a server that never echoes, a lost link."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.irc.echoes import Echoes
from relaybot.irc.text import casefold


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _echoes(
    clock: Clock | None = None, *, limit: int = 1000, missing_after: float = 60.0
) -> Echoes:
    fold = lambda name: casefold(name, "rfc1459")  # noqa: E731
    return Echoes(fold, clock or Clock(), limit=limit, missing_after=missing_after)


def _note(said: list[str], text: str) -> Callable[[], None]:
    return lambda: said.append(text)


def test_echoes_match_in_write_order_and_run_on_sent() -> None:
    echoes = _echoes()
    said: list[str] = []
    for text in ("one", "two", "one"):
        echoes.written("PRIVMSG", "#c", text, _note(said, text))
    assert len(echoes) == 3
    first = echoes.echoed("PRIVMSG", "#c", "one")
    assert first is not None and first.skipped == 0 and first.on_sent is not None
    first.on_sent()
    assert said == ["one"] and len(echoes) == 2
    # The same text twice: the second echo is the second line, not the first one again.
    for text in ("two", "one"):
        echo = echoes.echoed("PRIVMSG", "#c", text)
        assert echo is not None and echo.skipped == 0 and echo.on_sent is not None
        echo.on_sent()
    assert said == ["one", "two", "one"] and len(echoes) == 0


def test_an_echo_past_older_lines_drops_them_unrecorded_and_counts_them() -> None:
    echoes = _echoes()
    said: list[str] = []
    for text in ("refused", "also refused", "relayed", "later"):
        echoes.written("PRIVMSG", "#c", text, _note(said, text))
    echo = echoes.echoed("PRIVMSG", "#c", "relayed")
    assert echo is not None and echo.skipped == 2
    assert echo.on_sent is not None
    echo.on_sent()
    assert said == ["relayed"]  # the two before it never run their on_sent
    assert len(echoes) == 1
    assert echoes.echoed("PRIVMSG", "#c", "refused") is None  # given up on already


def test_an_echo_that_matches_nothing_changes_nothing() -> None:
    echoes = _echoes()
    echoes.written("PRIVMSG", "#c", "hello", None)
    assert echoes.echoed("PRIVMSG", "#c", "something else") is None
    assert echoes.echoed("PRIVMSG", "#other", "hello") is None
    assert echoes.echoed("NOTICE", "#c", "hello") is None  # the command counts too
    assert len(echoes) == 1
    echo = echoes.echoed("PRIVMSG", "#c", "hello")
    assert echo is not None and echo.skipped == 0 and echo.on_sent is None


def test_the_target_matches_casefolded() -> None:
    echoes = _echoes()
    echoes.written("PRIVMSG", "#Relay[1]", "hi", None)
    echoes.written("NOTICE", "Alice", "psst", None)
    # rfc1459: [ folds like {; the server may echo the name as it spells it.
    assert echoes.echoed("PRIVMSG", "#relay{1}", "hi") is not None
    assert echoes.echoed("NOTICE", "ALICE", "psst") is not None
    assert len(echoes) == 0


def test_action_lines_match_with_their_ctcp_framing() -> None:
    echoes = _echoes()
    echoes.written("PRIVMSG", "#c", "\x01ACTION waves\x01", None)
    assert echoes.echoed("PRIVMSG", "#c", "waves") is None  # the framing is part of the text
    echo = echoes.echoed("PRIVMSG", "#c", "\x01ACTION waves\x01")
    assert echo is not None and echo.skipped == 0


def test_the_bound_pushes_out_the_oldest_as_not_echoed() -> None:
    echoes = _echoes(limit=3)
    pushed_out = [echoes.written("PRIVMSG", "#c", f"line {i}", None) for i in range(4)]
    assert pushed_out == [0, 0, 0, 1]
    assert len(echoes) == 3
    assert echoes.echoed("PRIVMSG", "#c", "line 0") is None  # pushed out
    echo = echoes.echoed("PRIVMSG", "#c", "line 1")
    assert echo is not None and echo.skipped == 0


def test_a_server_that_never_echoes_is_reported_once_per_connection() -> None:
    clock = Clock()
    echoes = _echoes(clock, missing_after=60.0)
    assert echoes.missing() is None  # nothing awaited: nothing missing
    echoes.written("PRIVMSG", "#c", "one", None)
    clock.now += 30.0
    echoes.written("PRIVMSG", "#c", "two", None)
    clock.now += 30.0
    assert echoes.missing() is None  # exactly 60 s: not yet
    clock.now += 0.5
    assert echoes.missing() == pytest.approx(60.5)  # the oldest line's wait
    clock.now += 120.0
    assert echoes.missing() is None  # once, not every loop turn
    assert echoes.lost() == 2
    echoes.written("PRIVMSG", "#c", "three", None)
    clock.now += 61.0
    assert echoes.missing() == pytest.approx(61.0)  # a new connection may warn again


def test_echoes_that_keep_coming_are_never_missing() -> None:
    clock = Clock()
    echoes = _echoes(clock, missing_after=60.0)
    for index in range(10):
        echoes.written("PRIVMSG", "#c", f"line {index}", None)
        clock.now += 30.0
        assert echoes.echoed("PRIVMSG", "#c", f"line {index}") is not None
        assert echoes.missing() is None


def test_a_lost_link_drops_every_waiting_line_and_counts_them() -> None:
    echoes = _echoes()
    said: list[str] = []
    for text in ("one", "two", "three"):
        echoes.written("PRIVMSG", "#c", text, _note(said, text))
    assert echoes.lost() == 3
    assert len(echoes) == 0 and said == []
    assert echoes.echoed("PRIVMSG", "#c", "one") is None  # a late echo records nothing
    assert echoes.lost() == 0


def test_the_bound_must_hold_a_line() -> None:
    with pytest.raises(ValueError):
        _echoes(limit=0)
