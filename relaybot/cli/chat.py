"""`relaybot chat`: a terminal conversation with the model, with the reference Relay client's
commands (/join /topic /cast /slap /lazy /retry /reset /export /exit /message, and any other
`/command arg` written as it writes one), plus relaybot's /me (an IRC action) and /help.

Parsing and rendering are pure functions; `ChatSession` applies a command to a Conversation
and writes what happened to a stream; `main_chat` does the loading and the terminal I/O.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from relaybot.config.loader import parse_config
from relaybot.config.schema import ConfigError, ModelConfig
from relaybot.conversation.api import DEFAULT_CHANNEL, Conversation, Roles, channel_name
from relaybot.conversation.formats import EMPTY_MESSAGE, Turn
from relaybot.conversation.transcript import SYSTEM
from relaybot.inference.engine import EngineError

HELP = """\
  [your message]          say something; the model answers (an empty line is "...")
  /join #channel          start over in that channel
  /topic text             set the channel topic
  /cast description       give the model a bio (a persona), e.g. /cast I'm from SF.
  /slap [nick]            slap the model (or nick) with a large trout; the model answers
  /me action              an action line, * anon action (relaybot's; the reference client
                          writes /me like any other command); the model answers
  /anything [text]        any other command, as the reference client writes it:
                          <anon> /anything text, * anon used /anything text; the model answers
  /message text           say text, as the reference client does (/message alone: an empty turn)
  /lazy                   let the model write your turn, then answer it
  /retry                  generate the model's last reply again (the old one is forgotten)
  /reset                  forget everything and rejoin the starting channel
  /export [file.jsonl]    write the context as JSON lines
  /help                   this list
  /exit                   leave (also /quit, Ctrl-D; Ctrl-C stops a reply being written)"""

ALIASES = {"quit": "exit"}

# SGR colours, as in the reference client: announcements green, the model blue, you red.
_GREEN, _BLUE, _RED, _YELLOW, _RESET = "\x1b[32m", "\x1b[34m", "\x1b[31m", "\x1b[33m", "\x1b[0m"
_UP_AND_CLEAR = "\x1b[F\x1b[K"
# Control characters other than line breaks and tabs, shown as U+FFFD: a model (or a pasted
# line) writing escape sequences must not be able to drive the user's terminal.
_UNSHOWABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Command:
    """One input line: `name` is a command without its slash, or "say" for a chat line;
    `typed` is the command word as typed (`/Dance`), for a command written as it is."""

    name: str
    arg: str = ""
    typed: str = field(default="", compare=False)


def parse_line(line: str) -> Command:
    """As the reference client parses: the line without surrounding whitespace, the command up
    to the first space, the rest (inner spaces and tabs kept) without surrounding whitespace."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        # `//text` says `/text` literally, as in IRC clients.
        return Command("say", text[1:] if text.startswith("//") else text)
    word, _, arg = text[1:].partition(" ")
    name = word.lower()
    return Command(ALIASES.get(name, name), arg.strip(), f"/{word}")


def use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """ANSI colours on a terminal, unless NO_COLOR (https://no-color.org) or TERM=dumb."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


@dataclass(frozen=True, slots=True)
class Style:
    colour: bool
    roles: Roles

    def turn(self, turn: Turn) -> str:
        content = _UNSHOWABLE.sub("\ufffd", turn.content)
        if turn.role == SYSTEM:
            return self._paint(_GREEN, content)
        colour = _BLUE if turn.role == self.roles.bot else _RED
        return f"{self._paint(colour, f'<{turn.role}>')} {content}"

    def note(self, text: str) -> str:
        """A line from the client itself (not part of the context)."""
        return self._paint(_GREEN, text)

    def error(self, text: str) -> str:
        return self._paint(_YELLOW, text)

    def _paint(self, colour: str, text: str) -> str:
        return f"{colour}{text}{_RESET}" if self.colour else text


def default_export_path(directory: Path, now: float) -> Path:
    """`relaybot-chat-<UTC>.jsonl` in `directory`, with `-2`, `-3` … if that name is taken."""
    stem = f"relaybot-chat-{datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = directory / f"{stem}.jsonl", 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = directory / f"{stem}-{n}.jsonl"
    return candidate


class ChatSession:
    """Applies input lines to a Conversation and shows what they added to the context."""

    def __init__(
        self,
        conversation: Conversation,
        out: TextIO,
        *,
        colour: bool = False,
        terminal: bool = False,
        start_channel: str = DEFAULT_CHANNEL,
        export_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conversation = conversation
        self.out = out
        self.style = Style(colour, conversation.roles)
        # On a terminal the typed line is replaced by the turns it became, and the "typing"
        # note is erased once the reply is there, as in the reference client.
        self.terminal = terminal
        self.start_channel = start_channel
        self.export_dir = export_dir if export_dir is not None else Path.cwd()
        self.clock = clock

    @property
    def prompt(self) -> str:
        return f"{self.conversation.channel}> "

    def start(self) -> None:
        """The model joins the starting channel, as the reference client opens a session."""
        roles = self.conversation.roles
        self._say(f"You are <{roles.peer}>, the model is <{roles.bot}>. /help lists commands.")
        self._show(self.conversation.join(roles.bot, self.start_channel))

    def handle(self, line: str, typed_rows: int = 0) -> bool:
        """Apply one input line; False when the session should end. `typed_rows` is how many
        terminal rows the prompt and the typed line took (to replace them)."""
        command = parse_line(line)
        conversation = self.conversation
        bot, you = conversation.roles.bot, conversation.roles.peer
        try:
            match command.name:
                case "say":
                    # An empty line is Relay's silence marker, as in the reference client.
                    said = command.arg or EMPTY_MESSAGE
                    self._show(conversation.message(you, said), typed_rows)
                    self._respond(bot)
                case "message":
                    self._show(conversation.message(you, command.arg), typed_rows)
                    self._respond(bot)
                case "join":
                    self._show(conversation.join(you, command.arg), typed_rows)
                case "topic":
                    self._show(conversation.topic(you, command.arg), typed_rows)
                case "cast":
                    self._show(conversation.cast(bot, command.arg), typed_rows)
                case "slap":
                    self._show(conversation.slap(you, command.arg or None), typed_rows)
                    self._respond(bot)
                case "me":
                    self._show(conversation.action(you, command.arg), typed_rows)
                    self._respond(bot)
                case "lazy":
                    if self._respond(you, typed_rows):
                        self._respond(bot)
                case "retry":
                    self._say(f"* {bot} will retry the last reply")
                    self._respond(bot, retry=True)
                case "reset":
                    conversation.init_context()
                    self._say(f"* {you} has reset the session.")
                    self._show(conversation.join(bot, self.start_channel))
                case "export":
                    self._export(command.arg)
                case "help":
                    self._print(HELP)
                case "exit":
                    self._say(f"* {you} has closed the application.")
                    return False
                case _:
                    # The reference client's rule for a command it does not know.
                    turns = conversation.command(you, command.typed, command.arg)
                    self._show(turns, typed_rows)
                    self._respond(bot)
        except ValueError as exc:
            self._print(self.style.error(f"* Invalid: {exc}."))
        return True

    # --- helpers -----------------------------------------------------------------------------

    def _respond(self, role: str, typed_rows: int = 0, *, retry: bool = False) -> bool:
        """Generate `role`'s turn and show it; False when that failed or was interrupted."""
        if self.terminal:
            self._say(f"* {role} is typing ...")
        try:
            turn = self.conversation.retry(role) if retry else self.conversation.respond(role)
        except KeyboardInterrupt:
            self._erase(1)
            self._print(self.style.error("* interrupted: nothing was added"))
            return False
        except EngineError as exc:
            self._erase(1)
            self._print(self.style.error(f"* generation failed: {exc}"))
            return False
        # The typing note, and for /lazy the typed command, give way to the turn itself.
        self._erase(1 + typed_rows)
        self._show((turn,))
        return True

    def _export(self, arg: str) -> None:
        if arg:
            path = Path(arg).expanduser()
            if not path.is_absolute():
                path = self.export_dir / path
        else:
            path = default_export_path(self.export_dir, self.clock())
        try:
            written = self.conversation.export(path)
        except OSError as exc:
            self._print(self.style.error(f"* cannot export to {path}: {exc.strerror or exc}"))
            return
        self._say(f"* saved conversation to {written}")

    def _show(self, turns: Sequence[Turn], typed_rows: int = 0) -> None:
        self._erase(typed_rows)
        for turn in turns:
            self._print(self.style.turn(turn))

    def _erase(self, rows: int) -> None:
        if self.terminal and rows > 0:
            self.out.write(_UP_AND_CLEAR * rows)

    def _say(self, text: str) -> None:
        self._print(self.style.note(text))

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def typed_rows(prompt: str, line: str, columns: int) -> int:
    """Terminal rows taken by the prompt and a typed line (wrapping at `columns`)."""
    width = max(1, columns)
    return max(1, -(-(len(prompt) + len(line)) // width))


def run_loop(
    session: ChatSession,
    read: Callable[[str], str] = input,
    columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
) -> int:
    """Read lines until /exit (0), end of input (0) or Ctrl-C at the prompt (130)."""
    while True:
        try:
            line = read(session.prompt)
        except EOFError:
            session.out.write("\n")
            return 0
        except KeyboardInterrupt:
            session.out.write("\n")
            return 130
        rows = typed_rows(session.prompt, line, columns()) if session.terminal else 0
        if not session.handle(line, rows):
            return 0


def load_model_config(path: Path) -> ModelConfig:
    """The `[model]` table of a bot config, or of a file that has only that table."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "irc" not in data:
        # The chat needs no server; a placeholder lets the one config parser check the rest.
        data = {**data, "irc": {"host": "localhost", "nick": "relaybot"}}
    return parse_config(data, path.resolve().parent).model


def main_chat(
    *,
    config_path: str | None,
    nick: str,
    you: str,
    channel: str,
    seed: int | None,
) -> int:
    """`relaybot chat`: exit 0 on /exit or end of input, 2 for a config error, 3 when the model
    cannot be loaded, 130 for Ctrl-C at the prompt."""
    from relaybot.inference.selection import ModelUnavailable
    from relaybot.log import configure_logging

    try:
        model = (
            load_model_config(Path(config_path))
            if config_path
            else ModelConfig(name="embedded", device="cpu")
        )
        roles = Roles(bot=nick, peer=you)
        channel = channel_name(channel)
    except ValueError as exc:  # ConfigError included
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    if seed is not None:
        model = dataclasses.replace(model, seed=seed)
    # Library and load messages would interleave with the chat: only warnings, on stderr.
    configure_logging("warning", "auto")
    colour = use_colour(sys.stdout, os.environ)
    terminal = sys.stdout.isatty() and sys.stdin.isatty()
    style = Style(colour, roles)
    print(style.note("* loading the model ..."), flush=True)
    try:
        conversation = Conversation.from_config(model, roles=roles, channel=channel)
    except ModelUnavailable as exc:
        print(f"relaybot: cannot load the model: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # a prompt format the model cannot give (model.format)
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    session = ChatSession(
        conversation, sys.stdout, colour=colour, terminal=terminal, start_channel=channel
    )
    if terminal:
        import readline  # noqa: F401  (line editing and history for input())
    print(style.note(f"relaybot chat: {conversation.engine.description}"))
    session.start()
    return run_loop(session)
