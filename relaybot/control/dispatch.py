"""Operator commands carried out: rights checks, the command table's actions, replies.

Runs on the reactor thread. Replies are one-line notices to whoever gave the command;
refusals are polite, logged, and rate-limited so a flood of them cannot fill the outbox.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from relaybot.control.actions import OperatorActions
from relaybot.control.commands import (
    BACK_TO_DEFAULT,
    COMMANDS,
    PERSONA,
    Command,
    CommandError,
    format_duration,
    help_lines,
    parse_command,
    parse_duration,
    parse_persona,
    parse_setting,
)
from relaybot.irc.events import Message, Origin
from relaybot.irc.text import is_channel_name
from relaybot.log import get_logger
from relaybot.policy.permissions import Permissions, Rights, normalise_mask
from relaybot.policy.ratelimit import TokenBucket

log = get_logger(component="control")


class Control:
    def __init__(self, bot: OperatorActions, clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.clock = clock
        self._refusals: dict[str, TokenBucket] = {}
        # Nicks operators have used: someone else wearing one later is worth a warning.
        self._operator_nicks: set[str] = set()
        # `ask` is not here: its answer goes to the channel, not back as notices.
        self._handlers: dict[str, Callable[[Command, Origin, str], list[str]]] = {
            "help": self._cmd_help,
            "status": self._cmd_status,
            "join": self._cmd_join,
            "part": self._cmd_part,
            "mute": self._cmd_mute,
            "unmute": self._cmd_unmute,
            "cast": self._cmd_cast,
            "reset": self._cmd_reset,
            "retry": self._cmd_retry,
            "set": self._cmd_set,
            "model": self._cmd_model,
            "ignore": self._cmd_ignore,
            "unignore": self._cmd_unignore,
            "export": self._cmd_export,
            "reload": self._cmd_reload,
        }

    @property
    def permissions(self) -> Permissions:
        return Permissions(self.bot.operators)

    def is_command(self, text: str) -> bool:
        return parse_command(text, self.bot.operators.prefix) is not None

    # --- entry ----------------------------------------------------------------------------

    def handle(self, message: Message, channel: str | None) -> None:
        origin = message.origin
        prefix = self.bot.operators.prefix
        parsed = parse_command(message.text, prefix)
        if parsed is None:
            return
        if isinstance(parsed, CommandError):
            if self._rights(origin, channel) is not Rights.NONE:
                self._notice(origin.nick, parsed.message)
            return
        target = parsed.channel or channel
        if parsed.name == "more":
            # Open to everyone: it goes on with an answer to them, under the reply budgets.
            privately = parsed.args[:1] in (("pm",), ("privately",), ("private",))
            self.bot.more(target or origin.nick, origin, message.msgid, privately=privately)
            return
        spec = COMMANDS[parsed.name]
        fold = self.bot.fold
        rights = self._rights(origin, target if spec.scope == "channel" else None)
        # Help is open to everyone, but strangers share the refusal budget so that
        # asking for help cannot make the bot flood.
        allowed = rights is Rights.OPERATOR or (
            parsed.name == "help"
            and (rights is not Rights.NONE or self._may_answer_refusal(origin.nick))
        )
        if spec.scope == "channel" and rights is Rights.CHANNEL_OPERATOR:
            allowed = True
        context = {
            "network": self.bot.network,
            "nick": origin.nick,
            "hostmask": origin.hostmask,
            "account": origin.account,
            "command": parsed.name,
            "channel": target,
        }
        if rights is Rights.OPERATOR and len(self._operator_nicks) < 1000:
            self._operator_nicks.add(fold(origin.nick))
        if not allowed and parsed.name == "help":
            return
        if not allowed:
            if (
                self.permissions.impersonates(origin, fold)
                or fold(origin.nick) in self._operator_nicks
            ):
                log.warning("operator_impersonation_refused", **context)
            else:
                log.info("command_refused", **context)
            if self._may_answer_refusal(origin.nick):
                self._notice(origin.nick, f"Sorry, {parsed.name} is for the bot's operators.")
            return
        log.info("command", **context)
        if spec.scope == "channel" and target is None and not spec.network_wide:
            self._notice(origin.nick, f"which channel? usage: {prefix} {spec.usage}")
            return
        try:
            if parsed.name == "ask":
                # The answer goes where the question was asked; only errors come as notices.
                reply = self._ask(parsed, origin, target or "", channel or origin.nick)
            else:
                reply = self._run(parsed, origin, target)
        except Exception:
            log.exception("command_failed", **context)
            reply = [f"{parsed.name} failed; see the bot's log"]
        for line in reply:
            self._notice(origin.nick, line)

    def _rights(self, origin: Origin, channel: str | None) -> Rights:
        status = self.bot.status_of(channel, origin.nick) if channel else ""
        return self.permissions.rights(origin, status, self.bot.fold)

    def _may_answer_refusal(self, nick: str) -> bool:
        folded = self.bot.fold(nick)
        bucket = self._refusals.get(folded)
        if bucket is None:
            if len(self._refusals) > 1000:
                self._refusals.clear()
            bucket = self._refusals[folded] = TokenBucket(0.1, 2, self.clock)
        return bucket.take()

    def _notice(self, nick: str, text: str) -> None:
        self.bot.send_notice(nick, text)

    # --- commands ---------------------------------------------------------------------------

    def _run(self, command: Command, origin: Origin, channel: str | None) -> list[str]:
        return self._handlers[command.name](command, origin, channel or "")

    def _ask(self, command: Command, origin: Origin, channel: str, reply_to: str) -> list[str]:
        if not command.rest:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['ask'].usage}"]
        if not self.bot.answers_questions:
            return [
                "ask needs a model trained for closed-context QA (the airoboros and bagel"
                " presets); set model.qa = true to try it with this one"
            ]
        failure = self.bot.ask(channel, origin.nick, command.rest, reply_to)
        return [failure] if failure else []

    def _cmd_help(self, command: Command, origin: Origin, channel: str) -> list[str]:
        return help_lines(self.bot.operators.prefix, command.args[0] if command.args else None)

    def _cmd_status(self, command: Command, origin: Origin, channel: str) -> list[str]:
        return [self.bot.status_line()]

    def _cmd_join(self, command: Command, origin: Origin, channel: str) -> list[str]:
        assert command.channel is not None
        key = command.args[0] if command.args else None
        self.bot.join_channel(command.channel, key)
        return [f"joining {command.channel}"]

    def _cmd_part(self, command: Command, origin: Origin, channel: str) -> list[str]:
        if not is_channel_name(channel):
            return ["part needs a channel"]
        self.bot.part_channel(channel, f"requested by {origin.nick}")
        return [f"left {channel}"]

    def _cmd_mute(self, command: Command, origin: Origin, channel: str) -> list[str]:
        seconds = math.inf
        if command.args:
            parsed = parse_duration(command.args[0])
            if parsed is None:
                return [f"not a duration: {command.args[0]!r} (try 10m, 2h, 1d)"]
            seconds = parsed
        self.bot.mute(channel, seconds)
        return [f"muted in {channel} {format_duration(seconds)}".replace(" indefinitely", "")]

    def _cmd_unmute(self, command: Command, origin: Origin, channel: str) -> list[str]:
        self.bot.unmute(channel)
        return [f"unmuted in {channel}"]

    def _cmd_cast(self, command: Command, origin: Origin, channel: str) -> list[str]:
        bio = command.rest.strip()
        if not bio:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['cast'].usage}"]
        return self._set_persona(channel, origin, None if bio == "-" else bio)

    def _set_persona(self, channel: str, origin: Origin, text: str | None) -> list[str]:
        """`set persona` and its older spelling `cast`: one persona per channel, introduced
        by whoever set it (the `/whois` turn of Relay's format names them)."""
        if text is None:
            self.bot.cast(channel, origin.nick, None)
            return [f"persona removed in {channel}"]
        persona = parse_persona(text)
        if isinstance(persona, CommandError):
            return [persona.message]
        self.bot.cast(channel, origin.nick, persona)
        return [f"persona set in {channel}"]

    def _cmd_reset(self, command: Command, origin: Origin, channel: str) -> list[str]:
        if not self.bot.reset(channel):
            return [f"no context for {channel}"]
        return [f"context of {channel} cleared"]

    def _cmd_retry(self, command: Command, origin: Origin, channel: str) -> list[str]:
        if not self.bot.retry(channel):
            return [f"no context for {channel}"]
        return [f"regenerating the last reply in {channel}"]

    def _cmd_set(self, command: Command, origin: Origin, channel: str) -> list[str]:
        name, _, text = command.rest.partition(" ")
        if name.lower() == PERSONA and text.strip():
            persona = text.strip()
            cleared = persona.lower() in BACK_TO_DEFAULT
            return self._set_persona(channel, origin, None if cleared else persona)
        if len(command.args) != 2:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['set'].usage}"]
        name, raw = command.args
        value = parse_setting(name, raw)
        if isinstance(value, CommandError):
            return [value.message]
        context = self.bot.context_tokens
        if name.lower() == "max_new_tokens" and value is not None and value >= context:
            # the rule model.max_new_tokens has in the config, for the same reason
            return [f"max_new_tokens must be smaller than model.context_tokens ({context})"]
        self.bot.set_setting(channel, name.lower(), value)
        shown = "the configured default" if value is None else str(value)
        return [f"{name.lower()} in {channel} is now {shown}"]

    def _cmd_model(self, command: Command, origin: Origin, channel: str) -> list[str]:
        """`model`: show or choose the served model, for `channel` or ("" from a query without
        one) the whole network."""
        served = self.bot.served_models
        where = channel or None
        scope = f"in {channel}" if where else f"on network {self.bot.network}"
        if len(command.args) > 1:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['model'].usage}"]
        if not command.args:
            current = served.describe(self.bot.model_for(where))
            if served.cannot_switch:
                return [f"model {scope}: {current}; {served.cannot_switch}"]
            return [f"model {scope}: {current}; allowed: {served.listed()}"]
        name = command.args[0]
        if name.lower() in BACK_TO_DEFAULT:
            if served.cannot_switch:
                return [served.cannot_switch]
            self.bot.set_model(where, None)
            return [f"model {scope} is back to {served.describe(self.bot.model_for(where))}"]
        refusal = served.refusal(name)
        if refusal is not None:
            return [refusal]
        self.bot.set_model(where, name)
        if where is None:
            return [f"model {scope} is now {name} (channels with a model of their own keep it)"]
        return [f"model {scope} is now {name}"]

    def _cmd_ignore(self, command: Command, origin: Origin, channel: str) -> list[str]:
        if len(command.args) != 1:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['ignore'].usage}"]
        mask = normalise_mask(command.args[0])
        self.bot.ignore(mask)
        return [f"ignoring {mask}"]

    def _cmd_unignore(self, command: Command, origin: Origin, channel: str) -> list[str]:
        if len(command.args) != 1:
            return [f"usage: {self.bot.operators.prefix} {COMMANDS['unignore'].usage}"]
        mask = normalise_mask(command.args[0])
        if not self.bot.unignore(mask):
            return [f"{mask} was not ignored"]
        return [f"no longer ignoring {mask}"]

    def _cmd_export(self, command: Command, origin: Origin, channel: str) -> list[str]:
        path = self.bot.export(channel)
        if path is None:
            return [f"no context for {channel}"]
        return [f"exported {channel} to {path}"]

    def _cmd_reload(self, command: Command, origin: Origin, channel: str) -> list[str]:
        return [self.bot.reload()]
