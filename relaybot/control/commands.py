"""Operator commands as plain values: the table of commands, parsing, durations, settings.

Parsing is pure; `relaybot.control.dispatch` carries the commands out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from relaybot.config.channel_settings import CHANNEL_SETTINGS, SettingSpec, SettingValue
from relaybot.irc.text import is_channel_name, safe_line, strip_formatting

Scope = Literal["global", "channel"]

# `set persona <text>`: the channel's persona. It is text, not one of the typed CHANNEL_SETTINGS
# that override a config key: it is stored where `cast` stores it (the two are one command).
PERSONA = "persona"
# A persona sits in the never-trimmed header of every prompt in its channel: it must leave the
# conversation room. An IRC line holds about 450 characters of it anyway.
PERSONA_MAX_CHARS = 300
PERSONA_HELP = (
    f"{PERSONA} (text, at most {PERSONA_MAX_CHARS} characters): who the bot is in the channel;"
    " the bio Relay's format gives it, an instruct format's system prompt"
)
SETTING_NAMES = (*CHANNEL_SETTINGS, PERSONA)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    scope: Scope  # channel commands act on one channel; channel operators may use them there
    usage: str
    help: str
    # A channel command that, given no channel (in a private query), acts on the whole
    # network instead; only the bot's operators may do that.
    network_wide: bool = False


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("help", "global", "help [command]", "list commands, or explain one"),
        CommandSpec(
            "status", "global", "status", "model, queue depth, reply rates, uptime, channels"
        ),
        CommandSpec("join", "global", "join <#channel> [key]", "join a channel (remembered)"),
        CommandSpec("part", "channel", "part [#channel]", "leave a channel (remembered)"),
        CommandSpec(
            "mute",
            "channel",
            "mute [#channel] [duration]",
            "stop replying (e.g. 10m, 2h, 1d; no duration: until unmute)",
        ),
        CommandSpec("unmute", "channel", "unmute [#channel]", "reply again"),
        CommandSpec(
            "cast", "channel", "cast [#channel] <bio|->", "the same as set persona (-: remove it)"
        ),
        CommandSpec("reset", "channel", "reset [#channel]", "clear the channel's context"),
        CommandSpec("retry", "channel", "retry [#channel]", "regenerate the last reply"),
        CommandSpec(
            "more",
            "channel",
            "more [#channel] [pm]",
            "the rest of my last answer to you; pm: by private message (anyone may ask)",
        ),
        CommandSpec(
            "set",
            "channel",
            "set [#channel] <param> <value|default>",
            f"per-channel setting: {', '.join(SETTING_NAMES)}",
        ),
        CommandSpec(
            "model",
            "channel",
            "model [#channel] [name|default]",
            "the served model replies ask for (a remote server's, from the configured list);"
            " in a query without a channel: the whole network's",
            network_wide=True,
        ),
        CommandSpec(
            "ignore", "global", "ignore <mask>", "ignore a nick, nick!user@host or $a:account"
        ),
        CommandSpec("unignore", "global", "unignore <mask>", "stop ignoring a mask"),
        CommandSpec(
            "export", "channel", "export [#channel]", "write the context as JSONL to the state dir"
        ),
        CommandSpec("reload", "global", "reload", "re-read the config file (as SIGHUP does)"),
        CommandSpec(
            "ask",
            "channel",
            "ask [#channel] <question>",
            "answer a question from the channel's recent log, citing its lines",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    channel: str | None  # an explicit #channel argument, when the command takes one
    args: tuple[str, ...]
    rest: str  # the arguments as one string (for cast's bio)


@dataclass(frozen=True, slots=True)
class CommandError:
    message: str


def parse_command(text: str, prefix: str) -> Command | CommandError | None:
    """None when `text` is not a command; otherwise the command or what is wrong with it."""
    clean = strip_formatting(text).strip()
    word, _, remainder = clean.partition(" ")
    if word.lower() != prefix.lower():
        return None
    remainder = remainder.strip()
    name, _, rest = remainder.partition(" ")
    name = name.lower() or "help"
    spec = COMMANDS.get(name)
    if spec is None:
        return CommandError(f"unknown command {name!r}; try: {prefix} help")
    rest = rest.strip()
    channel = None
    if spec.scope == "channel" or name == "join":
        first, _, after = rest.partition(" ")
        if is_channel_name(first):
            channel, rest = first, after.strip()
    if name == "join" and channel is None:
        return CommandError(f"usage: {prefix} {spec.usage}")
    return Command(name, channel, tuple(rest.split()), rest)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT_SECONDS = {"": 60.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float | None:
    """`90s`, `10m`, `2h`, `1d`, `1h30m`; a bare number means minutes. None if malformed."""
    text = text.strip().lower()
    if not text:
        return None
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION.match(text, position)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if total > 0 and math.isfinite(total) else None


def format_duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "indefinitely"
    seconds = max(0, round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


# What `set` takes for "no override": back to the configured default (no persona).
BACK_TO_DEFAULT = frozenset({"default", "reset"})
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


def parse_persona(text: str) -> str | CommandError:
    """A persona as it may be stored: one line without formatting or control characters, not
    empty and not longer than PERSONA_MAX_CHARS (refused, not cut: a cut persona says
    something its operator did not write)."""
    persona = safe_line(text)
    if not persona:
        return CommandError("a persona needs some text (default: remove it)")
    if len(persona) > PERSONA_MAX_CHARS:
        return CommandError(
            f"a persona may be at most {PERSONA_MAX_CHARS} characters; this one has {len(persona)}"
        )
    return persona


def parse_setting(name: str, value: str) -> SettingValue | CommandError | None:
    """A validated value for `set`; None means back to the configured default."""
    spec = CHANNEL_SETTINGS.get(name.lower())
    if spec is None:
        return CommandError(f"unknown setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
    if value.lower() in BACK_TO_DEFAULT:
        return None
    number: SettingValue
    if spec.kind is bool:
        if value.lower() not in _TRUE | _FALSE:
            return CommandError(f"{spec.name} must be on or off")
        number = value.lower() in _TRUE
    else:
        try:
            number = int(value) if spec.kind is int else float(value)
        except ValueError:
            kind = "an integer" if spec.kind is int else "a number"
            return CommandError(f"{spec.name} must be {kind}")
    problem = spec.problem(number)
    return CommandError(f"{spec.name} {problem}") if problem else number


def help_lines(prefix: str, name: str | None = None) -> list[str]:
    if name is not None:
        spec = COMMANDS.get(name.lower())
        if spec is None:
            return [f"unknown command {name!r}"]
        lines = [f"{prefix} {spec.usage}: {spec.help}"]
        if spec.name == "set":
            settings = [_setting_help(setting) for setting in CHANNEL_SETTINGS.values()]
            lines.append("; ".join([*settings, PERSONA_HELP]))
        return lines
    return [f"commands ({prefix} help <command> for more): {', '.join(COMMANDS)}"]


def _setting_help(setting: SettingSpec) -> str:
    values = "on or off" if setting.kind is bool else setting.bounds()
    return f"{setting.name} ({values}; overrides {setting.overrides}): {setting.help}"
