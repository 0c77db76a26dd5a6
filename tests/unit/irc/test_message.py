"""relaybot.irc.message against the community parser test vectors (the `irc-parser-tests` package,
https://github.com/ircdocs/parser-tests), plus edge cases and hypothesis properties.

Vector files and how they map onto this code:
  msg-split.yaml         parse(); every case, and each parsed case joined again round-trips
  msg-join.yaml          format_message(); every case, and every listed match parses back
  userhost-split.yaml    split_source(); every case
  mask-match.yaml        relaybot.policy.permissions.glob_match (the bot's own mask matcher)
  validate-hostname.yaml not as written: it is for servers validating hostnames, and says
                         clients must accept whatever the server sends. We check exactly that:
                         every host, valid or not, survives parse() and split_source().
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaybot.irc.message import (
    MAX_LINE_LENGTH,
    IrcMessage,
    escape_tag_value,
    format_message,
    parse,
    split_source,
    unescape_tag_value,
)
from relaybot.irc.text import casefold
from relaybot.policy.permissions import glob_match

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML comes with irc-parser-tests
    yaml = None

MISSING = "irc-parser-tests is not installed (pip install -e '.[dev]')"
# How many cases irc-parser-tests 0.0.4 has; a newer release may only add to them.
MIN_CASES = {
    "msg-split": 35,
    "msg-join": 17,
    "userhost-split": 9,
    "mask-match": 6,
    "validate-hostname": 13,
}


def load_vectors(name: str) -> list[dict[str, Any]] | None:
    if yaml is None:
        return None
    try:
        data = importlib.resources.files("parser_tests") / "data" / f"{name}.yaml"
        text = data.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    tests: list[dict[str, Any]] = yaml.safe_load(text)["tests"]
    return tests


def vector_params(name: str, label: str) -> list[Any]:
    cases = load_vectors(name)
    if cases is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id=f"{name}-missing")]
    return [
        pytest.param(case, id=f"{name}-{index}-{str(case.get(label, ''))[:30]!r}")
        for index, case in enumerate(cases)
    ]


def expected_atoms(
    atoms: Mapping[str, Any],
) -> tuple[dict[str, str], str | None, str, tuple[str, ...]]:
    """The vectors' atoms as (tags, source, COMMAND, params); absent keys are empty/None."""
    return (
        dict(atoms.get("tags") or {}),
        atoms.get("source"),
        str(atoms["verb"]).upper(),
        tuple(atoms.get("params") or ()),
    )


def atoms_of(message: IrcMessage) -> tuple[dict[str, str], str | None, str, tuple[str, ...]]:
    return dict(message.tags), message.source, message.command, message.params


# --- the vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MIN_CASES))
def test_every_vector_file_is_there(name: str) -> None:
    cases = load_vectors(name)
    if cases is None:
        pytest.skip(MISSING)
    assert len(cases) >= MIN_CASES[name]


@pytest.mark.parametrize("case", vector_params("msg-split", "input"))
def test_msg_split(case: dict[str, Any]) -> None:
    message = parse(case["input"])
    assert message is not None, case["input"]
    assert atoms_of(message) == expected_atoms(case["atoms"])
    # What was parsed can be sent again, and means the same.
    again = format_message(message.command, message.params, message.tags, message.source)
    assert parse(again) == message


@pytest.mark.parametrize("case", vector_params("msg-join", "desc"))
def test_msg_join(case: dict[str, Any]) -> None:
    atoms = case["atoms"]
    line = format_message(
        atoms["verb"], atoms.get("params") or (), atoms.get("tags"), atoms.get("source")
    )
    assert line in case["matches"]
    for match in case["matches"]:
        message = parse(match)
        assert message is not None, match
        assert atoms_of(message) == expected_atoms(atoms)


@pytest.mark.parametrize("case", vector_params("userhost-split", "source"))
def test_userhost_split(case: dict[str, Any]) -> None:
    nick, user, host = split_source(case["source"])
    atoms = case["atoms"]
    # The vectors write an absent part as "", where split_source says None.
    assert (nick, user or "", host or "") == (
        atoms.get("nick", ""),
        atoms.get("user", ""),
        atoms.get("host", ""),
    )
    message = parse(f":{case['source']} PRIVMSG #chan :hi")
    assert message is not None and message.source == case["source"]


@pytest.mark.parametrize("case", vector_params("mask-match", "mask"))
def test_mask_match_with_the_bots_glob(case: dict[str, Any]) -> None:
    for text in case["matches"]:
        assert glob_match(case["mask"], text, casefold), (case["mask"], text)
    for text in case["fails"]:
        assert not glob_match(case["mask"], text, casefold), (case["mask"], text)


@pytest.mark.parametrize("case", vector_params("validate-hostname", "host"))
def test_client_accepts_any_hostname_the_server_sends(case: dict[str, Any]) -> None:
    host = str(case["host"])
    message = parse(f":nick!user@{host} PRIVMSG #chan :hi")
    assert message is not None and message.source is not None
    assert split_source(message.source) == ("nick", "user", host)


# --- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        " ",
        "     ",
        "\r\n",
        "\n",
        ":src",
        ":src ",
        ":src    ",
        "@a=b",
        "@a=b ",
        "@a=b :src",
        "@a=b :src ",
        " PING x",  # a leading space: RFC 1459 lines start with an atom
        "PRIVMSG\x00 #a :x",
        "PING :a\rb",
        "PING :a\nb",
        "PING :a\x00b",
        "PING x\r\r\n",
        "1234 x",
        "12 x",
        "PRIV-MSG x",
        "PRIVMSG\t#a",
        "ÉCHO x",
        "\x01ACTION\x01",
        ":\x00 PRIVMSG",
    ],
)
def test_not_a_message(line: str) -> None:
    assert parse(line) is None


def test_not_a_string_is_not_a_message() -> None:
    assert parse(b"PING x") is None  # type: ignore[arg-type]
    assert parse(None) is None  # type: ignore[arg-type]


def test_line_terminators_are_stripped_once() -> None:
    for end in ("\r\n", "\n", "\r", ""):
        assert parse(f"PING :x y{end}") == IrcMessage({}, None, "PING", ("x y",))


def test_command_is_uppercased_and_numerics_kept() -> None:
    assert parse("privmsg #a :hi") == IrcMessage({}, None, "PRIVMSG", ("#a", "hi"))
    assert parse(":srv 001 me :Welcome") == IrcMessage({}, "srv", "001", ("me", "Welcome"))


def test_an_empty_source_is_no_source() -> None:
    assert parse(": PING x") == IrcMessage({}, None, "PING", ("x",))


def test_tags() -> None:
    message = parse("@a;b=;c=1;=x;;d=\\;d=2;e=\\q\\ :src CMD")
    assert message is not None
    assert dict(message.tags) == {"a": "", "b": "", "c": "1", "d": "2", "e": "q"}
    with pytest.raises(TypeError):
        message.tags["a"] = "x"  # type: ignore[index]
    assert parse("@ CMD") == IrcMessage({}, None, "CMD", ())
    assert parse("@a=1   :src   CMD   x   :y") == IrcMessage({"a": "1"}, "src", "CMD", ("x", "y"))


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("", ""),
        ("plain", "plain"),
        ("a\\:b", "a;b"),
        ("a\\sb", "a b"),
        ("a\\\\b", "a\\b"),
        ("a\\rb\\nc", "a\rb\nc"),
        ("x\\", "x"),
        ("\\", ""),
        ("\\\\\\", "\\"),
        ("\\x\\y", "xy"),
        ("\\\\n", "\\n"),
        ("ünï\\scødé", "ünï cødé"),
    ],
)
def test_tag_value_unescaping(raw: str, value: str) -> None:
    assert unescape_tag_value(raw) == value


def test_params() -> None:
    assert parse("CMD") == IrcMessage({}, None, "CMD", ())
    assert parse("CMD :") == IrcMessage({}, None, "CMD", ("",))
    assert parse("CMD a  b   :c  d ") == IrcMessage({}, None, "CMD", ("a", "b", "c  d "))
    assert parse("CMD a:b c::d") == IrcMessage({}, None, "CMD", ("a:b", "c::d"))
    assert parse("CMD :::") == IrcMessage({}, None, "CMD", ("::",))
    assert parse("CMD a\tb") == IrcMessage({}, None, "CMD", ("a\tb",))
    assert parse("PRIV MSG") == IrcMessage({}, None, "PRIV", ("MSG",))
    assert parse("CMD " + " ".join("x" * 20)) == IrcMessage({}, None, "CMD", ("x",) * 20)


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("irc.example.com", ("irc.example.com", None, None)),
        ("nick", ("nick", None, None)),
        ("nick!user", ("nick", "user", None)),
        ("nick@host", ("nick", None, "host")),
        ("nick!@host", ("nick", "", "host")),
        ("nick!user@", ("nick", "user", "")),
        ("!@", ("", "", "")),
        ("a!b!c@d@e", ("a", "b!c", "d@e")),
        ("<|im_start|>system!u@h", ("<|im_start|>system", "u", "h")),
    ],
)
def test_split_source(source: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_source(source) == parts


def test_format_message_trailing_colon_only_when_needed() -> None:
    assert format_message("PRIVMSG", ["#a", "hi"]) == "PRIVMSG #a hi"
    assert format_message("PRIVMSG", ["#a", "hi there"]) == "PRIVMSG #a :hi there"
    assert format_message("PRIVMSG", ["#a", ""]) == "PRIVMSG #a :"
    assert format_message("PRIVMSG", ["#a", ":)"]) == "PRIVMSG #a ::)"
    assert format_message("PING", []) == "PING"
    assert format_message("NOTICE", ["x"], source="srv") == ":srv NOTICE x"
    assert (
        format_message("TAGMSG", ["#a"], {"+typing": "active", "a": "b;c d\\e\r\n", "k": ""})
        == "@+typing=active;a=b\\:c\\sd\\\\e\\r\\n;k TAGMSG #a"
    )


@pytest.mark.parametrize(
    ("command", "params", "tags", "source"),
    [
        ("PRIVMSG", ["#a b", "x"], None, None),  # a middle param with a space
        ("PRIVMSG", [":a", "x"], None, None),  # a middle param starting with ':'
        ("PRIVMSG", ["", "x"], None, None),  # an empty middle param vanishes
        ("PRIVMSG", ["#a", "x\r\nQUIT"], None, None),
        ("PRIVMSG", ["#a", "x\ny"], None, None),
        ("PRIVMSG", ["#a", "x\ry"], None, None),
        ("PRIVMSG", ["#a", "x\x00y"], None, None),
        ("PRIVMSG", ["#a\r", "x"], None, None),
        ("PRIVMSG", ["#a", "x"], None, "a b"),
        ("PRIVMSG", ["#a", "x"], None, ""),
        ("PRIVMSG", ["#a", "x"], None, "a\nb"),
        ("PRIVMSG", ["#a", "x"], {"": "v"}, None),
        ("PRIVMSG", ["#a", "x"], {"a b": "v"}, None),
        ("PRIVMSG", ["#a", "x"], {"a;b": "v"}, None),
        ("PRIVMSG", ["#a", "x"], {"a=b": "v"}, None),
        ("PRIVMSG", ["#a", "x"], {"a\r": "v"}, None),
        ("PRIVMSG", ["#a", "x"], {"a": "nul\x00"}, None),
        ("", [], None, None),
        ("PRIV MSG", [], None, None),
        ("PRIVMSG\r\n", [], None, None),
        ("12", [], None, None),
        ("1234", [], None, None),
        ("PRIV-MSG", [], None, None),
    ],
)
def test_format_message_refuses_what_no_line_can_say(
    command: str, params: list[str], tags: dict[str, str] | None, source: str | None
) -> None:
    with pytest.raises(ValueError):
        format_message(command, params, tags, source)


def test_huge_input_is_refused_or_parsed_in_bounded_time() -> None:
    started = time.monotonic()
    assert parse("PING :" + "x" * MAX_LINE_LENGTH) is None  # over the cap: not even scanned
    assert parse("P" * (10 * MAX_LINE_LENGTH)) is None
    many = parse("CMD " + "a " * (MAX_LINE_LENGTH // 2 - 4))
    assert many is not None and len(many.params) == MAX_LINE_LENGTH // 2 - 4
    spaces = parse("CMD" + " " * (MAX_LINE_LENGTH - 10) + ":x")
    assert spaces is not None and spaces.params == ("x",)
    tags = parse("@" + "a=\\\\;" * (MAX_LINE_LENGTH // 5 - 2) + " CMD")
    assert tags is not None and dict(tags.tags) == {"a": "\\"}
    backslashes = parse("@a=" + "\\" * (MAX_LINE_LENGTH - 10) + " CMD")
    assert backslashes is not None
    assert parse("x" * 100, max_length=99) is None
    assert time.monotonic() - started < 2.0  # linear: a few ms; quadratic would be minutes


# --- properties --------------------------------------------------------------------------------

LINE_SAFE = st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",))
WORD = st.text(
    st.characters(blacklist_characters=" \r\n\x00", blacklist_categories=("Cs",)), min_size=1
)
TAG_KEYS = st.from_regex(r"\+?([a-z0-9.-]{1,10}/)?[A-Za-z0-9-]{1,12}", fullmatch=True)
TAG_VALUES = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
COMMANDS = st.one_of(
    st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True), st.from_regex(r"[0-9]{3}", fullmatch=True)
)
MIDDLE = WORD.filter(lambda word: not word.startswith(":"))
LAST = st.text(LINE_SAFE)
# Text that hits the parser's structure: separators, colons, tags, escapes, line breaks.
STRUCTURED = st.text(
    st.sampled_from(list(" :@;=\\!#+\r\n\x00\t\x01abcPRIVMSG0123é漢")), max_size=120
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(),
        st.text(st.characters(blacklist_categories=())),  # lone surrogates too
        STRUCTURED,
        st.binary().map(lambda raw: raw.decode("latin-1")),
    )
)
def test_parse_never_raises_and_its_atoms_are_sendable(line: str) -> None:
    message = parse(line)
    if message is None:
        return
    assert message.command == message.command.upper() and message.command
    assert message.source is None or (message.source and " " not in message.source)
    for param in message.params[:-1]:
        assert param and " " not in param and not param.startswith(":")
    for atom in (*message.params, message.source or "", *message.tags):
        assert not any(c in atom for c in "\r\n\x00")
    # parse -> format -> parse is the identity on everything parse accepts.
    again = format_message(message.command, message.params, message.tags, message.source)
    assert parse(again) == message


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    tags=st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=5),
    source=st.none() | WORD,
    command=COMMANDS,
    middle=st.lists(MIDDLE, max_size=14),
    last=st.none() | LAST,
)
def test_format_then_parse_round_trips(
    tags: dict[str, str], source: str | None, command: str, middle: list[str], last: str | None
) -> None:
    params = [*middle, *([last] if last is not None else [])]
    line = format_message(command, params, tags, source)
    assert not any(c in line for c in "\r\n\x00")
    message = parse(line)
    assert message is not None, line
    assert atoms_of(message) == (tags, source, command.upper(), tuple(params))
    assert parse(line + "\r\n") == message


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_tag_escaping_round_trips(value: str) -> None:
    escaped = escape_tag_value(value)
    assert not any(c in escaped for c in " ;\r\n")
    assert unescape_tag_value(escaped) == value
