"""`relaybot chat`: the command loop on a scripted engine, then the real program on the embedded
model driven through a pseudo terminal (pexpect), one command at a time."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from relaybot.cli.chat import (
    ChatSession,
    Command,
    default_export_path,
    load_model_config,
    parse_line,
    run_loop,
    typed_rows,
    use_colour,
)
from relaybot.cli.main import main
from relaybot.config.schema import ConfigError
from relaybot.conversation.api import Conversation
from relaybot.conversation.formats import Turn
from relaybot.inference.engine import EngineError
from tests.support.fakes import ScriptedEngine

SGR = re.compile(r"\x1b\[[0-9;]*m")
ERASE = "\x1b[F\x1b[K"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def session(
    *replies: str | BaseException, colour: bool = False, terminal: bool = False, **kw: object
) -> tuple[ChatSession, io.StringIO]:
    out = io.StringIO()
    chat = ChatSession(
        Conversation(ScriptedEngine(*replies), channel="#start"),
        out,
        colour=colour,
        terminal=terminal,
        start_channel="#start",
        **kw,  # type: ignore[arg-type]
    )
    chat.start()
    out.seek(0)
    out.truncate()
    return chat, out


# --- the loop on a scripted engine ----------------------------------------------------------


def test_parse_line() -> None:
    assert parse_line("  hello  ") == Command("say", "hello")
    assert parse_line("") == Command("say", "")
    assert parse_line("/JOIN  #x ") == Command("join", "#x")
    assert parse_line("/quit") == Command("exit")
    assert parse_line("//etc/hosts is a file") == Command("say", "/etc/hosts is a file")
    assert parse_line("/cast I'm from SF.") == Command("cast", "I'm from SF.")


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert use_colour(Tty(), {"TERM": "xterm"})
    assert use_colour(Tty(), {"NO_COLOR": ""})  # no-color.org: only a non-empty value counts
    assert not use_colour(Tty(), {"NO_COLOR": "1"})
    assert not use_colour(Tty(), {"TERM": "dumb"})
    assert not use_colour(io.StringIO(), {})


def test_start_shows_the_models_join_and_the_prompt_names_the_channel() -> None:
    out = io.StringIO()
    chat = ChatSession(Conversation(ScriptedEngine()), out, start_channel="#start")
    chat.start()
    assert out.getvalue().splitlines()[1:] == [
        "<user> /join #start",
        "* Now talking in #start",
        "* anon has joined #start",
    ]
    assert chat.prompt == "#start> "


def test_each_command_shows_the_turns_it_added() -> None:
    chat, out = session("meow", "i am lazy", "purr", "hiss", "again", "waves back")
    steps = [
        ("hello", ["<anon> hello", "<user> meow"]),
        ("/join pets", ["<anon> /join #pets", "* Now talking in #pets", "* user has joined #pets"]),
        ("/topic cats", ["<anon> /topic cats", "* Topic for #pets is: cats"]),
        ("/cast a vet", ["<anon> /whois user", "* user's bio: a vet"]),
        ("/lazy", ["<anon> i am lazy", "<user> purr"]),
        (
            "/slap",
            [
                "<anon> /slap user",
                "* anon slaps user around a bit with a large trout",
                "<user> hiss",
            ],
        ),
        ("/retry", ["* user will retry the last reply", "<user> again"]),
        ("/me waves", ["* anon waves", "<user> waves back"]),
    ]
    for line, expected in steps:
        out.seek(0)
        out.truncate()
        assert chat.handle(line)
        assert out.getvalue().splitlines() == expected, line
    assert chat.prompt == "#pets> "
    turns = chat.conversation.turns
    assert turns[-7:] == (
        Turn("anon", "i am lazy"),
        Turn("user", "purr"),
        Turn("anon", "/slap user"),
        Turn("system", "* anon slaps user around a bit with a large trout"),
        Turn("user", "again"),  # the retry replaced "hiss"
        Turn("system", "* anon waves"),
        Turn("user", "waves back"),
    )


def test_missing_arguments_are_explained_and_change_nothing() -> None:
    chat, out = session()
    before = chat.conversation.turns
    for line in ("/", "/topic", "/cast  ", "/join #", "/me"):
        assert chat.handle(line)
    lines = out.getvalue().splitlines()
    assert lines == [
        "* Invalid: missing command name.",
        "* Invalid: missing topic text.",
        "* Invalid: missing description.",
        "* Invalid: missing channel name.",
        "* Invalid: missing action text.",
    ]
    assert chat.conversation.turns == before
    chat.handle("/help")
    assert "/lazy" in out.getvalue() and "/export [file.jsonl]" in out.getvalue()


def test_reset_rejoins_the_starting_channel_and_exit_ends_the_loop() -> None:
    chat, out = session("meow")
    chat.handle("/join #elsewhere")
    chat.handle("hi")
    chat.handle("/reset")
    assert chat.conversation.turns == (
        Turn("user", "/join #start"),
        Turn("system", "* Now talking in #start"),
        Turn("system", "* anon has joined #start"),
    )
    assert "* anon has reset the session." in out.getvalue()
    assert chat.handle("/exit") is False
    assert chat.handle("/QUIT") is False


def test_export_writes_jsonl_to_a_default_or_given_path(tmp_path: Path) -> None:
    chat, out = session("meow", export_dir=tmp_path, clock=lambda: 0.0)
    chat.handle("hello")
    chat.handle("/export")
    chat.handle("/export")
    chat.handle("/export named.jsonl")
    chat.handle(f"/export {tmp_path / 'missing-dir' / 'x.jsonl'}")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "named.jsonl",
        "relaybot-chat-19700101T000000Z-2.jsonl",
        "relaybot-chat-19700101T000000Z.jsonl",
    ]
    rows = [json.loads(line) for line in (tmp_path / "named.jsonl").read_text().splitlines()]
    assert rows[-2:] == [
        {"role": "anon", "content": "hello"},
        {"role": "user", "content": "meow"},
    ]
    text = out.getvalue()
    assert f"* saved conversation to {tmp_path / 'named.jsonl'}" in text
    assert "* cannot export to" in text
    assert default_export_path(tmp_path, 0.0).name == "relaybot-chat-19700101T000000Z-3.jsonl"


def test_colours_and_terminal_redraws() -> None:
    chat, out = session("meow", colour=True, terminal=True)
    chat.handle("hello", typed_rows=1)
    assert out.getvalue() == (
        ERASE  # the typed line gives way to the turn it became
        + "\x1b[31m<anon>\x1b[0m hello\n"
        + "\x1b[32m* user is typing ...\x1b[0m\n"
        + ERASE  # the typing note gives way to the reply
        + "\x1b[34m<user>\x1b[0m meow\n"
    )
    assert typed_rows("#start> ", "x" * 10, 80) == 1
    assert typed_rows("#start> ", "x" * 80, 80) == 2


def test_control_characters_in_a_reply_cannot_drive_the_terminal() -> None:
    chat, out = session("\x1b[2Jgone\x07\nsecond line", colour=True)
    chat.handle("hi")
    assert out.getvalue().endswith("\x1b[34m<user>\x1b[0m \ufffd[2Jgone\ufffd\nsecond line\n")
    assert chat.conversation.last() == Turn("user", "\x1b[2Jgone\x07\nsecond line")


def test_a_reply_interrupted_or_failed_adds_nothing_and_the_chat_goes_on() -> None:
    chat, out = session(KeyboardInterrupt(), EngineError("out of memory"), "ok")
    chat.handle("/lazy")
    chat.handle("/retry")
    assert chat.conversation.last() == Turn("system", "* anon has joined #start")
    assert out.getvalue().splitlines() == [
        "* interrupted: nothing was added",
        "* user will retry the last reply",
        "* generation failed: out of memory",
    ]
    chat.handle("/retry")
    assert chat.conversation.last() == Turn("user", "ok")


def scripted_input(*items: str | BaseException) -> Callable[[str], str]:
    queue = list(items)

    def read(prompt: str) -> str:
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read


def test_run_loop_exit_codes() -> None:
    chat, _ = session("meow")
    assert run_loop(chat, scripted_input("hello", "/exit", "never read")) == 0
    assert chat.conversation.last() == Turn("user", "meow")
    assert run_loop(chat, scripted_input(EOFError())) == 0
    assert run_loop(chat, scripted_input("/help", KeyboardInterrupt())) == 130


def test_model_config_from_a_bot_config_or_a_model_only_file(tmp_path: Path) -> None:
    model_only = tmp_path / "chat.toml"
    model_only.write_text('[model]\nname = "embedded"\nmax_new_tokens = 12\nseed = 3\n')
    config = load_model_config(model_only)
    assert (config.name, config.max_new_tokens, config.seed) == ("embedded", 12, 3)
    bot = tmp_path / "bot.toml"
    bot.write_text('[irc]\nhost = "irc.example"\nnick = "rb"\n[model]\ntemperature = 0.7\n')
    assert load_model_config(bot).temperature == 0.7
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nmax_new_token = 12\n")
    with pytest.raises(ConfigError, match="max_new_token"):
        load_model_config(bad)


def test_chat_config_errors_exit_2_before_loading_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    assert main(["chat", "--config", str(bad)]) == 2
    assert main(["chat", "--config", str(tmp_path / "absent.toml")]) == 2
    assert main(["chat", "--nick", "system"]) == 2
    assert main(["chat", "--channel", "#"]) == 2
    assert capsys.readouterr().err.count("relaybot: config error:") == 4


# --- the real program in a pseudo terminal --------------------------------------------------

CHAT_TOML = """\
[model]
name = "embedded"
device = "cpu"
max_new_tokens = 8
seed = 11
"""
REPLY = re.compile(r"\x1b\[34m<user>\x1b\[0m (.*?)\r\n")
LAZY = re.compile(r"\x1b\[31m<anon>\x1b\[0m (.*?)\r\n")


def _command() -> tuple[str, list[str]]:
    script = Path(sys.executable).with_name("relaybot")
    if script.is_file():
        return str(script), []
    return sys.executable, ["-m", "relaybot"]


@pytest.fixture
def spawn_chat(
    tmp_path: Path,
    real_engine: object,  # warms the converted-model cache, so each start is quick
) -> Iterator[Callable[[dict[str, str]], pexpect.spawn]]:
    config = tmp_path / "chat.toml"
    config.write_text(CHAT_TOML)
    children: list[pexpect.spawn] = []

    def spawn(extra_env: dict[str, str]) -> pexpect.spawn:
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update({"TERM": "xterm", "INPUTRC": "/dev/null", **extra_env})
        program, args = _command()
        child = pexpect.spawn(
            program,
            [*args, "chat", "--config", str(config), "--channel", "#start"],
            cwd=str(tmp_path),
            env=env,
            encoding="utf-8",
            timeout=30,
            dimensions=(50, 200),
        )
        children.append(child)
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def _turns(path: Path) -> list[Turn]:
    return [Turn(**json.loads(line)) for line in path.read_text().splitlines()]


def _send(child: pexpect.spawn, line: str, prompt: str = "#pets> ", timeout: int = 60) -> str:
    """Send a line and return everything shown until the next prompt (a shared 2-core box
    can take tens of seconds for a reply, hence the generous bound)."""
    child.sendline(line)
    child.expect_exact(prompt, timeout=timeout)
    return str(child.before)


def _reply(shown: str, pattern: re.Pattern[str] = REPLY) -> str:
    """The first line of the reply shown (a reply may span lines)."""
    match = pattern.search(shown)
    assert match, repr(shown)
    return match.group(1)


def _first_line(turn: Turn) -> str:
    return turn.content.splitlines()[0]


@pytest.mark.integration
def test_chat_in_a_terminal_with_every_command(
    spawn_chat: Callable[[dict[str, str]], pexpect.spawn], tmp_path: Path
) -> None:
    child = spawn_chat({})
    child.expect_exact("#start> ", timeout=90)  # loading the model
    assert "\x1b[32m* Now talking in #start\x1b[0m" in child.before
    assert "\x1b[34m<user>\x1b[0m /join #start" in child.before

    shown = _send(child, "/join #pets")
    assert "* Now talking in #pets" in shown and "* user has joined #pets" in shown
    assert "* Topic for #pets is: cats and dogs" in _send(child, "/topic cats and dogs")
    assert "* user's bio: a vet who loves cats" in _send(child, "/cast a vet who loves cats")
    first = _reply(_send(child, "hello there, how are you?"))
    shown = _send(child, "/slap")
    assert "* anon slaps user around a bit with a large trout" in shown
    slapped = _reply(shown)
    shown = _send(child, "/lazy", timeout=120)  # two generations
    lazy, lazy_answer = _reply(shown, LAZY), _reply(shown)
    assert f"saved conversation to {tmp_path / 'before.jsonl'}" in _send(
        child, "/export before.jsonl"
    )
    shown = _send(child, "/retry")
    assert "* user will retry the last reply" in shown
    retried = _reply(shown)
    _send(child, "/export after.jsonl")
    assert "* anon used /frobnicate " in _send(child, "/frobnicate")
    assert "/export [file.jsonl]" in _send(child, "/help")
    shown = _send(child, "/reset", prompt="#start> ")
    assert "* anon has reset the session." in shown and "* Now talking in #start" in shown
    _send(child, "/export reset.jsonl", prompt="#start> ")
    child.sendline("/exit")
    child.expect_exact("* anon has closed the application.")
    child.expect(pexpect.EOF, timeout=15)
    child.close()
    assert child.exitstatus == 0

    before = _turns(tmp_path / "before.jsonl")
    assert before[:7] == [
        Turn("anon", "/join #pets"),
        Turn("system", "* Now talking in #pets"),
        Turn("system", "* user has joined #pets"),
        Turn("anon", "/topic cats and dogs"),
        Turn("system", "* Topic for #pets is: cats and dogs"),
        Turn("anon", "/whois user"),
        Turn("system", "* user's bio: a vet who loves cats"),
    ]
    assert [turn.role for turn in before[7:]] == [
        "anon",
        "user",
        "anon",
        "system",
        "user",
        "anon",  # /lazy: the model wrote the human's turn ...
        "user",  # ... and answered it
    ]
    assert before[7] == Turn("anon", "hello there, how are you?")
    assert before[9:11] == [
        Turn("anon", "/slap user"),
        Turn("system", "* anon slaps user around a bit with a large trout"),
    ]
    # What the terminal showed is what went into the context.
    assert [_first_line(before[i]) for i in (8, 11, 12, 13)] == [
        first,
        slapped,
        lazy,
        lazy_answer,
    ]
    assert all(turn.content.strip() for turn in before)
    # /retry replaced the last reply: same length, same history, the new reply last.
    after = _turns(tmp_path / "after.jsonl")
    assert after[:-1] == before[:-1]
    assert after[-1].role == "user" and _first_line(after[-1]) == retried
    # /reset: nothing left but the model rejoining the starting channel.
    assert _turns(tmp_path / "reset.jsonl") == [
        Turn("user", "/join #start"),
        Turn("system", "* Now talking in #start"),
        Turn("system", "* anon has joined #start"),
    ]


@pytest.mark.integration
def test_no_color_turns_colours_off_and_end_of_input_exits_0(
    spawn_chat: Callable[[dict[str, str]], pexpect.spawn],
) -> None:
    child = spawn_chat({"NO_COLOR": "1"})
    child.expect_exact("#start> ", timeout=90)
    shown = str(child.before) + _send(child, "/topic no colours", prompt="#start> ")
    assert "<user> /join #start\r\n* Now talking in #start" in shown
    assert "<anon> /topic no colours\r\n* Topic for #start is: no colours" in shown
    assert not SGR.search(shown), repr(shown)
    child.sendeof()
    child.expect(pexpect.EOF, timeout=15)
    child.close()
    assert child.exitstatus == 0
