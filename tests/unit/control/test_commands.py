"""Unit tests for relaybot.control.commands: the command table, parsing, durations and settings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaybot.config.channel_settings import CHANNEL_SETTINGS
from relaybot.control.commands import (
    COMMANDS,
    PERSONA_MAX_CHARS,
    Command,
    CommandError,
    format_duration,
    help_lines,
    parse_command,
    parse_duration,
    parse_persona,
    parse_setting,
)

P = "!relay"


def parsed(text: str) -> Command:
    result = parse_command(text, P)
    assert isinstance(result, Command), result
    return result


def error(text: str) -> str:
    result = parse_command(text, P)
    assert isinstance(result, CommandError), result
    return result.message


# --- the table --------------------------------------------------------------------------------


def test_table_names_match_keys_and_usage():
    for name, spec in COMMANDS.items():
        assert spec.name == name
        assert spec.usage.split()[0] == name
        assert spec.scope in ("global", "channel")
        assert spec.help


def test_channel_commands_take_an_optional_channel():
    for spec in COMMANDS.values():
        if spec.scope == "channel":
            assert "[#channel]" in spec.usage, spec.name


def test_the_documented_commands_exist():
    expected = {
        "help",
        "status",
        "join",
        "part",
        "mute",
        "unmute",
        "cast",
        "reset",
        "retry",
        "set",
        "ignore",
        "unignore",
        "export",
        "reload",
        "ask",
        "more",
        "model",
    }
    assert set(COMMANDS) == expected


def test_global_commands_are_the_dangerous_ones():
    """Channel operators may run channel commands; these must stay operator-only."""
    for name in ("join", "ignore", "unignore", "reload", "status"):
        assert COMMANDS[name].scope == "global"


# --- parse_command ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "relaybot: help",
        "!relayhelp",
        "!relays help",
        "x !relay help",
        "!rela help",
    ],
)
def test_not_a_command(text: str):
    assert parse_command(text, P) is None


def test_bare_prefix_is_help():
    assert parsed("!relay") == Command("help", None, (), "")
    assert parsed("  !relay   ") == Command("help", None, (), "")


def test_prefix_and_name_are_case_insensitive():
    assert parsed("!RELAY STATUS").name == "status"
    assert parsed("!Relay Mute").name == "mute"


def test_formatting_codes_are_ignored():
    assert parsed("\x02!relay\x02 \x0304status").name == "status"


def test_unknown_command():
    message = error("!relay frobnicate now")
    assert "frobnicate" in message
    assert "!relay help" in message


def test_help_with_argument():
    assert parsed("!relay help mute") == Command("help", None, ("mute",), "mute")


def test_channel_command_with_explicit_channel():
    assert parsed("!relay mute #chan 10m") == Command("mute", "#chan", ("10m",), "10m")


def test_channel_command_without_channel():
    assert parsed("!relay mute 10m") == Command("mute", None, ("10m",), "10m")
    assert parsed("!relay unmute") == Command("unmute", None, (), "")


def test_extra_spaces_collapse():
    assert parsed("!relay   mute    #chan    2h ") == Command("mute", "#chan", ("2h",), "2h")


@pytest.mark.parametrize("channel", ["#chan", "&local", "+modeless", "!ABCDEsafe", "#a[b]"])
def test_channel_prefixes(channel: str):
    assert parsed(f"!relay reset {channel}").channel == channel


def test_global_command_does_not_take_a_channel():
    command = parsed("!relay ignore #notachannelarg")
    assert command.channel is None
    assert command.args == ("#notachannelarg",)


def test_cast_keeps_the_whole_bio():
    command = parsed("!relay cast #chan a  pirate who loves  cats")
    assert command.channel == "#chan"
    assert command.rest == "a  pirate who loves  cats"
    assert command.args == ("a", "pirate", "who", "loves", "cats")


def test_cast_without_channel_keeps_the_whole_bio():
    command = parsed("!relay cast a pirate")
    assert command.channel is None
    assert command.rest == "a pirate"


def test_set_arguments():
    assert parsed("!relay set #chan temperature 0.7") == Command(
        "set", "#chan", ("temperature", "0.7"), "temperature 0.7"
    )


def test_join_needs_a_channel():
    assert "usage" in error("!relay join")
    assert "usage" in error("!relay join notachannel")
    assert parsed("!relay join #new") == Command("join", "#new", (), "")
    assert parsed("!relay join #new secretkey") == Command(
        "join", "#new", ("secretkey",), "secretkey"
    )


def test_other_prefix():
    assert parse_command(".bot status", ".bot") == Command("status", None, (), "")
    assert parse_command("!relay status", ".bot") is None


@given(st.text(max_size=60))
def test_parse_command_never_raises(text: str):
    result = parse_command(text, P)
    assert result is None or isinstance(result, Command | CommandError)
    if isinstance(result, Command):
        assert result.name in COMMANDS


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("5", 300),  # a bare number means minutes
        ("1.5h", 5400),
        (" 10M ", 600),
        ("2H", 7200),
    ],
)
def test_parse_duration(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0",
        "0s",
        "0m0s",
        "-5m",
        "m",
        "10x",
        "ten minutes",
        "10 m",
        "1h 30m",
        "1e3",
        "10ms",
        "inf",
        "nan",
        ".5h",
        "9" * 400,  # overflows to infinity
    ],
)
def test_malformed_durations(text: str):
    assert parse_duration(text) is None


@given(st.text(max_size=20))
def test_parse_duration_is_positive_finite_or_none(text: str):
    value = parse_duration(text)
    assert value is None or (value > 0 and math.isfinite(value))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (-5, "0s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400 + 3661, "1d1h1m1s"),
        (math.inf, "indefinitely"),
    ],
)
def test_format_duration(seconds: float, text: str):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["90s", "10m", "2h", "1d", "1h30m", "1d2h3m4s"])
def test_duration_round_trip(text: str):
    seconds = parse_duration(text)
    assert seconds is not None
    assert parse_duration(format_duration(seconds)) == seconds


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("temperature", "0.7", 0.7),
        ("temperature", "0", 0.0),
        ("temperature", "5", 5.0),
        ("TEMPERATURE", "1", 1.0),
        ("top_p", "1", 1.0),
        ("top_k", "40", 40),
        ("top_k", "0", 0),
        ("max_new_tokens", "1", 1),
        ("max_new_tokens", "1024", 1024),
        # the config's bounds (1 to 4096; no cap on top_k), which `set` once narrowed
        ("max_new_tokens", "4096", 4096),
        ("top_k", "1001", 1001),
        ("chance", "0.25", 0.25),
        ("max_lines", "20", 20),
        ("on_mention", "off", False),
        ("on_mention", "ON", True),
        ("on_mention", "yes", True),
        ("on_mention", "0", False),
    ],
)
def test_parse_setting(name: str, value: str, expected: object):
    result = parse_setting(name, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("value", ["default", "DEFAULT", "reset"])
def test_setting_back_to_default(value: str):
    assert parse_setting("temperature", value) is None
    assert parse_setting("on_mention", value) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("temperature", "-0.1"),
        ("temperature", "5.1"),
        ("temperature", "nan"),
        ("temperature", "inf"),
        ("temperature", "hot"),
        ("top_p", "1.01"),
        ("top_k", "1.5"),
        ("top_k", "-1"),
        ("max_new_tokens", "0"),
        ("max_new_tokens", "4097"),
        ("chance", "2"),
        ("max_lines", "0"),
        ("max_lines", "21"),
        ("on_mention", "maybe"),
        ("on_mention", "2"),
        ("seed", "1"),
        ("prompt", "x"),
    ],
)
def test_bad_settings(name: str, value: str):
    result = parse_setting(name, value)
    assert isinstance(result, CommandError)
    assert result.message


def test_unknown_setting_lists_the_known_ones():
    result = parse_setting("volume", "11")
    assert isinstance(result, CommandError)
    for name in CHANNEL_SETTINGS:
        assert name in result.message


@given(st.sampled_from(sorted(CHANNEL_SETTINGS)), st.text(max_size=12))
def test_parse_setting_stays_in_range(name: str, value: str):
    result = parse_setting(name, value)
    if result is None or isinstance(result, CommandError):
        return
    spec = CHANNEL_SETTINGS[name]
    assert type(result) is spec.kind
    assert spec.low is None or spec.low <= result
    assert spec.high is None or result <= spec.high
    assert math.isfinite(result)


# --- help -------------------------------------------------------------------------------------


def test_help_lists_every_command():
    lines = help_lines(P)
    assert len(lines) == 1
    for name in COMMANDS:
        assert name in lines[0]
    assert "!relay help <command>" in lines[0]


def test_help_for_one_command():
    assert help_lines(P, "MUTE") == [f"!relay {COMMANDS['mute'].usage}: {COMMANDS['mute'].help}"]


def test_help_for_unknown_command():
    assert help_lines(P, "nope") == ["unknown command 'nope'"]


def test_help_set_describes_every_setting_from_its_declaration():
    usage, settings = help_lines(P, "set")
    assert usage.startswith("!relay set [#channel] <param> <value|default>")
    for spec in CHANNEL_SETTINGS.values():
        assert f"{spec.name} (" in settings
        assert spec.overrides in settings
    assert "top_k (at least 0; overrides model.top_k)" in settings
    assert "max_new_tokens (between 1 and 4096;" in settings
    assert "on_mention (on or off;" in settings


def test_help_set_lists_the_persona():
    usage, settings = help_lines(P, "set")
    assert "persona" in usage
    assert f"persona (text, at most {PERSONA_MAX_CHARS} characters)" in settings
    assert "set persona" in help_lines(P, "cast")[0]


def test_a_persona_loses_control_characters_and_formatting():
    assert (
        parse_persona("  a \x02pirate\x02\r\n who\x00 loves \x0304rum ") == "a pirate who loves rum"
    )


def test_an_empty_persona_is_refused():
    result = parse_persona("\x02\x03 \r\n")
    assert isinstance(result, CommandError) and "needs some text" in result.message


def test_a_persona_over_the_cap_is_refused_not_cut():
    assert parse_persona("x" * PERSONA_MAX_CHARS) == "x" * PERSONA_MAX_CHARS
    result = parse_persona("x" * (PERSONA_MAX_CHARS + 1))
    assert isinstance(result, CommandError)
    assert result.message == (
        f"a persona may be at most {PERSONA_MAX_CHARS} characters; this one has"
        f" {PERSONA_MAX_CHARS + 1}"
    )


def test_set_persona_keeps_the_whole_text():
    assert parsed("!relay set #chan persona a  pirate") == Command(
        "set", "#chan", ("persona", "a", "pirate"), "persona a  pirate"
    )
