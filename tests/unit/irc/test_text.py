"""Unit tests for relaybot.irc.text: casefolding, formatting removal, byte-exact line splitting."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaybot.irc.text import (
    IRC_LINE_BYTES,
    casefold,
    is_channel_name,
    privmsg_payload_budget,
    reply_lines,
    safe_line,
    split_utf8,
    strip_formatting,
)

NICK = "relaybot"
USER = "~relay"
HOST = "gateway/web/irccloud.com/x-abcdefghijklmnop"
CHANNEL = "#chan"
FORBIDDEN = ("\r", "\n", "\x00", "\x01")


def full_line(line: str, nick: str = NICK, channel: str = CHANNEL) -> bytes:
    """The line as the server relays it to everybody else in the channel."""
    return f":{nick}!{USER}@{HOST} PRIVMSG {channel} :{line}\r\n".encode()


def assert_sendable(lines: list[str], max_lines: int, nick: str = NICK, channel: str = CHANNEL):
    assert len(lines) <= max_lines
    for line in lines:
        assert line, "empty lines must not be sent"
        for bad in FORBIDDEN:
            assert bad not in line, f"{bad!r} inside {line!r}"
        wire = full_line(line, nick, channel)
        assert len(wire) <= IRC_LINE_BYTES, (len(wire), line)
        # Exactly one CRLF, at the end: nothing else can start a second command.
        assert wire.count(b"\r") == 1 and wire.count(b"\n") == 1
        assert wire.endswith(b"\r\n")


def reassembles(text: str, pieces: list[str]) -> bool:
    """True when `pieces` are consecutive slices of `text`, skipping only whitespace between."""
    pos = 0
    for piece in pieces:
        while not text.startswith(piece, pos):
            if pos >= len(text) or not text[pos].isspace():
                return False
            pos += 1
        pos += len(piece)
    return text[pos:].strip() == ""


# --- casefold ---------------------------------------------------------------------------------


def test_casefold_rfc1459_folds_brackets_backslash_and_tilde():
    assert casefold("Nick[Away]\\Foo~", "rfc1459") == "nick{away}|foo^"


def test_casefold_default_is_rfc1459():
    assert casefold("A[]\\~") == "a{}|^"


def test_casefold_strict_rfc1459_leaves_tilde():
    assert casefold("A[]\\~", "strict-rfc1459") == "a{}|~"


def test_casefold_ascii_only_letters():
    assert casefold("Nick[Away]\\Foo~", "ascii") == "nick[away]\\foo~"


def test_casefold_leaves_non_ascii_alone():
    # IRC casemappings never fold beyond ASCII; Python's str.lower would.
    assert casefold("ÄÖÜ", "rfc1459") == "ÄÖÜ"
    assert casefold("ÄÖÜ", "ascii") == "ÄÖÜ"


def test_casefold_unknown_mapping_falls_back_to_rfc1459():
    assert casefold("X[y]", "weird-mapping") == "x{y}"


def test_casefold_rfc1459_equates_bracket_nicks():
    assert casefold("relay[bot]") == casefold("RELAY{BOT}")
    assert casefold("relay[bot]", "ascii") != casefold("RELAY{BOT}", "ascii")


# --- strip_formatting / safe_line ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x02bold\x02 text", "bold text"),
        ("\x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11", "italic under strike mono"),
        ("\x16rev\x0f reset", "rev reset"),
        ("\x0304red", "red"),
        ("\x0304,12red on blue", "red on blue"),
        ("\x034,2x", "x"),
        ("\x03plain", "plain"),
        # at most two digits each side: the third digit is text
        ("\x03123", "3"),
        ("\x0312,345", "5"),
        ("\x04ff0000hex", "hex"),
        ("\x04ff0000,00ff00hex", "hex"),
        ("\x04plain", "plain"),
        ("no codes at all", "no codes at all"),
    ],
)
def test_strip_formatting(raw: str, expected: str):
    assert strip_formatting(raw) == expected


def test_strip_formatting_keeps_other_controls():
    # strip_formatting is only about formatting; control bytes are removed by safe_line.
    assert strip_formatting("a\x01b\rc") == "a\x01b\rc"


def test_safe_line_removes_controls_and_formatting():
    assert safe_line("  \x02hi\x02\x00 there\x01\x7f ") == "hi there"


def test_safe_line_removes_cr_lf_nul_ctcp():
    assert safe_line("hi\r\nQUIT :x\x00\x01") == "hiQUIT :x"


# --- is_channel_name --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["#chan", "&local", "+modeless", "!ABCDEchan", "##", "#ä", "#a-b"])
def test_is_channel_name_valid(name: str):
    assert is_channel_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "#", "chan", "nick", "@#chan", "#a b", "#a,b", "#a\x07", "#a\x00", "#a\r", "#a\n"],
)
def test_is_channel_name_invalid(name: str):
    assert not is_channel_name(name)


def test_is_channel_name_length_limit():
    assert is_channel_name("#" + "a" * 199)
    assert not is_channel_name("#" + "a" * 200)


def test_is_channel_name_custom_prefixes():
    assert is_channel_name("#chan", prefixes="#")
    assert not is_channel_name("&chan", prefixes="#")


# --- privmsg_payload_budget -------------------------------------------------------------------


def test_payload_budget_is_exact_for_known_user_and_host():
    budget = privmsg_payload_budget(NICK, CHANNEL, USER, HOST)
    assert len(full_line("x" * budget)) == IRC_LINE_BYTES
    assert len(full_line("x" * (budget + 1))) == IRC_LINE_BYTES + 1


def test_payload_budget_worst_case_when_unknown():
    worst = privmsg_payload_budget(NICK, CHANNEL)
    line = f":{NICK}!{'u' * 10}@{'h' * 63} PRIVMSG {CHANNEL} :{'x' * worst}\r\n"
    assert len(line.encode()) == IRC_LINE_BYTES


def test_payload_budget_counts_bytes_not_characters():
    ascii_budget = privmsg_payload_budget("nick", "#ab", "u", "h")
    # same number of characters, two more bytes
    assert privmsg_payload_budget("nick", "#ßß", "u", "h") == ascii_budget - 2


# --- split_utf8 -------------------------------------------------------------------------------


def test_split_utf8_short_text_is_one_piece():
    assert list(split_utf8("hello world", 100)) == ["hello world"]


def test_split_utf8_empty_text_gives_nothing():
    assert list(split_utf8("", 10)) == []


def test_split_utf8_breaks_at_last_space_that_fits():
    assert list(split_utf8("aaaa bbbb cccc", 10)) == ["aaaa bbbb", "cccc"]


def test_split_utf8_hard_break_without_spaces():
    assert list(split_utf8("abcdefghij", 4)) == ["abcd", "efgh", "ij"]


def test_split_utf8_never_splits_multibyte_characters():
    text = "😀" * 10  # 4 bytes each
    pieces = list(split_utf8(text, 10))
    assert pieces == ["😀😀"] * 5
    cjk = "漢字" * 20  # 3 bytes each
    pieces = list(split_utf8(cjk, 10))
    assert all(len(p.encode()) <= 10 for p in pieces)
    assert "".join(pieces) == cjk


def test_split_utf8_rejects_tiny_budget():
    with pytest.raises(ValueError):
        list(split_utf8("abc", 3))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(), max_bytes=st.integers(min_value=4, max_value=80))
def test_split_utf8_property(text: str, max_bytes: int):
    pieces = list(split_utf8(text, max_bytes))
    for piece in pieces:
        assert len(piece.encode()) <= max_bytes
        piece.encode()  # only whole characters (no surrogate halves)
    assert reassembles(text, pieces)
    # Nothing but whitespace is lost.
    assert "".join("".join(pieces).split()) == "".join(text.split())


@given(text=st.text().map(str.strip), max_bytes=st.integers(min_value=4, max_value=40))
def test_split_utf8_stripped_text_has_no_empty_pieces(text: str, max_bytes: int):
    assert all(piece for piece in split_utf8(text, max_bytes))


# --- reply_lines with hostile model output -----------------------------------------------------

BUDGET = privmsg_payload_budget(NICK, CHANNEL, USER, HOST)


def test_reply_lines_injected_quit_stays_text():
    lines = reply_lines("hello\r\nQUIT :x", BUDGET, 5)
    assert lines == ["hello", "QUIT :x"]
    assert_sendable(lines, 5)


def test_reply_lines_bare_cr_is_a_line_break_not_a_command_separator():
    lines = reply_lines("hi\rPRIVMSG #other :spam", BUDGET, 5)
    assert lines == ["hi", "PRIVMSG #other :spam"]
    assert_sendable(lines, 5)


def test_reply_lines_removes_nul_and_ctcp():
    lines = reply_lines("\x01ACTION dances\x01 and\x00 more", BUDGET, 3)
    assert lines == ["ACTION dances and more"]
    assert_sendable(lines, 3)


def test_reply_lines_drops_blank_lines():
    assert reply_lines("\n\n  \r\n\x00\x01\n", BUDGET, 3) == []


def test_reply_lines_two_kilobytes():
    text = " ".join(f"word{i}" for i in range(400))
    assert len(text.encode()) > 2048
    lines = reply_lines(text, BUDGET, 20)
    assert_sendable(lines, 20)
    assert reassembles(text, lines)
    assert len(lines) > 4
    # every piece but the last fills most of the budget
    assert all(len(line.encode()) > BUDGET - 10 for line in lines[:-1])


def test_reply_lines_two_kilobytes_without_spaces():
    text = "x" * 2048
    lines = reply_lines(text, BUDGET, 20)
    assert_sendable(lines, 20)
    assert "".join(lines) == text
    assert all(len(line.encode()) == BUDGET for line in lines[:-1])


@pytest.mark.parametrize("unit", ["😀", "漢字", "é", "👩‍👩‍👧‍👦"])
def test_reply_lines_multibyte(unit: str):
    text = unit * (2048 // len(unit.encode()) + 1)  # just over 2 KB
    lines = reply_lines(text, BUDGET, 20)
    assert_sendable(lines, 20)
    assert "".join(lines) == text  # no character lost or broken


@pytest.mark.parametrize("max_lines", [1, 2, 3])
def test_reply_lines_respects_max_lines(max_lines: int):
    many = "\n".join(f"line {i}" for i in range(10))
    assert reply_lines(many, BUDGET, max_lines) == [f"line {i}" for i in range(max_lines)]
    long = "y" * (BUDGET * 5)
    assert len(reply_lines(long, BUDGET, max_lines)) == max_lines


def test_reply_lines_everything_hostile_at_once():
    text = "ok\r\nQUIT :x\x00\x01ACTION y\x01\n" + "😀漢字 " * 300 + "\r\nJOIN #evil\n" + "z" * 2048
    lines = reply_lines(text, BUDGET, 20)
    assert_sendable(lines, 20)
    assert lines[:2] == ["ok", "QUIT :xACTION y"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x01", " ", "😀", "漢", "\x03", "é"]),
            st.just("x" * 500),
        ),
        max_size=60,
    ).map("".join),
    nick=st.from_regex(r"[A-Za-z][A-Za-z0-9\[\]\\`_^{|}-]{0,29}", fullmatch=True),
    channel=st.from_regex(r"#[a-z0-9_ä漢-]{1,49}", fullmatch=True),
    max_lines=st.integers(min_value=1, max_value=20),
)
def test_reply_lines_property(text: str, nick: str, channel: str, max_lines: int):
    budget = privmsg_payload_budget(nick, channel, USER, HOST)
    lines = reply_lines(text, budget, max_lines)
    assert_sendable(lines, max_lines, nick, channel)
