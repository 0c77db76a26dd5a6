"""Unit tests for session helpers: SASL PLAIN lines, invite permission, fallback nicks."""

from __future__ import annotations

import base64

import pytest

from relaybot.config.schema import IrcConfig
from relaybot.irc import session
from relaybot.irc.session import SASL_CHUNK, fallback_nick, invite_allowed, sasl_plain_lines
from relaybot.irc.text import casefold


def decode(lines: list[str]) -> bytes:
    chunks = []
    for line in lines:
        command, chunk = line.split(" ")
        assert command == "AUTHENTICATE"
        chunks.append("" if chunk == "+" else chunk)
    return base64.b64decode("".join(chunks))


def test_sasl_plain_short():
    lines = sasl_plain_lines("user", "pass")
    assert lines == ["AUTHENTICATE " + base64.b64encode(b"user\0user\0pass").decode()]
    assert decode(lines) == b"user\0user\0pass"


def test_sasl_plain_utf8():
    assert decode(sasl_plain_lines("jürgen", "pässwörd😀")) == "jürgen\0jürgen\0pässwörd😀".encode()


def test_sasl_plain_long_password_chunks_at_400():
    password = "p" * 1000
    lines = sasl_plain_lines("user", password)
    assert SASL_CHUNK == 400
    payload_len = len(base64.b64encode(f"user\0user\0{password}".encode()))
    assert payload_len > 800 and payload_len % 400
    assert len(lines) == -(-payload_len // 400)
    assert all(len(line) == len("AUTHENTICATE ") + 400 for line in lines[:-1])
    assert 0 < len(lines[-1]) - len("AUTHENTICATE ") < 400
    assert lines[-1] != "AUTHENTICATE +"
    assert decode(lines) == f"user\0user\0{password}".encode()


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_sasl_plain_exact_multiple_ends_with_plus(chunks: int):
    # "u\0u\0" is 4 bytes; 300 bytes encode to exactly 400 base64 characters
    password = "x" * (300 * chunks - 4)
    lines = sasl_plain_lines("u", password)
    assert len(lines) == chunks + 1
    assert lines[-1] == "AUTHENTICATE +"
    assert all(len(line) == len("AUTHENTICATE ") + 400 for line in lines[:-1])
    assert decode(lines) == f"u\0u\0{password}".encode()


def test_sasl_plain_just_under_a_chunk_has_no_plus():
    lines = sasl_plain_lines("u", "x" * 290)  # 294 bytes -> 392 base64 characters
    assert len(lines) == 1
    assert len(lines[0]) == len("AUTHENTICATE ") + 392
    assert decode(lines) == b"u\0u\0" + b"x" * 290


def test_sasl_plain_padded_to_exact_multiple_ends_with_plus():
    # 299 bytes also encode to 400 characters (with "=" padding): still needs the "+"
    lines = sasl_plain_lines("u", "x" * 295)
    assert lines[0].endswith("=")
    assert lines[1:] == ["AUTHENTICATE +"]


def test_sasl_lines_have_no_line_breaks():
    for line in sasl_plain_lines("user", "a\r\nQUIT :x"):
        assert "\r" not in line and "\n" not in line


# --- invite_allowed -----------------------------------------------------------------------------


def fold(name: str) -> str:
    return casefold(name, "rfc1459")


def irc(**kwargs: tuple[str, ...]) -> IrcConfig:
    return IrcConfig(host="irc.example.net", nick="relaybot", **kwargs)


def test_invite_nobody_allowed_by_default():
    assert not invite_allowed("alice!a@host", "alice", irc(), fold)


def test_invite_by_account():
    config = irc(invite_accounts=("Alice",))
    assert invite_allowed("whoever!x@anywhere", "alice", config, fold)
    assert invite_allowed("whoever!x@anywhere", "ALICE", config, fold)
    assert not invite_allowed("whoever!x@anywhere", "mallory", config, fold)
    assert not invite_allowed("alice!a@anywhere", None, config, fold)
    assert not invite_allowed("alice!a@anywhere", "", config, fold)


def test_invite_by_hostmask_glob():
    config = irc(invite_from=("*!*@trusted.example", "op!*@*"))
    assert invite_allowed("bob!b@trusted.example", None, config, fold)
    assert invite_allowed("bob!b@TRUSTED.example", None, config, fold)
    assert invite_allowed("OP!x@elsewhere", None, config, fold)
    assert not invite_allowed("bob!b@evil.example", None, config, fold)
    assert not invite_allowed("bob!b@trusted.example.evil", None, config, fold)
    assert not invite_allowed("opx!x@elsewhere", None, config, fold)


def test_invite_glob_with_rfc1459_brackets():
    config = irc(invite_from=("Robot[1]!*@*",))
    assert invite_allowed("robot{1}!u@h", None, config, fold)
    assert invite_allowed("robot[1]!u@h", None, config, fold)
    assert not invite_allowed("robot1!u@h", None, config, fold)


# --- fallback_nick ------------------------------------------------------------------------------


class FakeRandom:
    def __init__(self, value: int) -> None:
        self.value = value
        self.calls: list[tuple[int, int]] = []

    def randint(self, low: int, high: int) -> int:
        self.calls.append((low, high))
        return self.value


def test_fallback_after_alt_nick(monkeypatch: pytest.MonkeyPatch):
    fake = FakeRandom(42)
    monkeypatch.setattr(session, "random", fake)
    assert fallback_nick("rbot", "relaybot") == "relaybo_"
    assert fake.calls == []


def test_fallback_after_own_nick_uses_random_suffix(monkeypatch: pytest.MonkeyPatch):
    fake = FakeRandom(42)
    monkeypatch.setattr(session, "random", fake)
    assert fallback_nick("relaybot", "relaybot") == "relaybo42"
    assert fallback_nick("relaybo_", "relaybot") == "relaybo42"
    assert fake.calls == [(10, 99), (10, 99)]


def test_fallback_nick_fits_nicklen_9(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(session, "random", FakeRandom(99))
    for tried in ("averyveryverylongnick", "other", "averyve_"):
        assert len(fallback_nick(tried, "averyveryverylongnick")) <= 9


def test_fallback_short_base(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(session, "random", FakeRandom(10))
    assert fallback_nick("bot", "bot") == "bot10"
    assert fallback_nick("other", "bot") == "bot_"


def test_fallback_real_random_is_in_range():
    for _ in range(50):
        nick = fallback_nick("relaybot", "relaybot")
        assert nick.startswith("relaybo") and 10 <= int(nick[7:]) <= 99
