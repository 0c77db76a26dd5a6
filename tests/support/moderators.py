"""Moderation hooks and helpers shared by the moderation tests; the loader tests load these
hooks by their dotted path (`tests.support.moderators:ShoutModerator`)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from relaybot.config.schema import ConfigError, ModerationHookConfig
from relaybot.moderation import ModerationContext, Verdict, load_moderator

CHANNEL = ModerationContext(
    network="net",
    target="#chan",
    nick="relaybot",
    private=False,
    members=frozenset({"relaybot", "alice", "bob", "{carol}", "d|ve", "eve", "frank_"}),
)


def load(use: str, **options: Any) -> Any:
    return load_moderator(ModerationHookConfig(use, options, "moderation.hooks[0]"))


def config_error(use: str, **options: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(use, **options)
    return str(info.value)


# --- moderators used by the chain and loader tests --------------------------------------------


class ShoutModerator:
    """Upper-cases everything; records the text each call saw."""

    def __init__(self, *, suffix: str = "", name: str = "shout") -> None:
        self.name = name
        self.suffix = suffix
        self.seen: list[str] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        return self.check_output(text, context)

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        self.seen.append(text)
        return Verdict.replace(text.upper() + self.suffix, "shouting")


class Recorder:
    def __init__(self, verdict: Verdict | None = None, name: str = "recorder") -> None:
        self.name = name
        self.verdict = verdict or Verdict.allow()
        self.seen: list[str] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        self.seen.append(text)
        return self.verdict

    check_output = check_input


class Exploding:
    name = "exploding"

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        raise RuntimeError("backend unreachable")

    check_output = check_input


class Sloppy:
    name = "sloppy"

    def check_input(self, text: str, context: ModerationContext) -> Any:
        return "allow"

    check_output = check_input


class Hanging:
    """Hangs (until released) on lines containing `hang`; answers at once otherwise."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        if "hang" in text:
            self.threads.append(threading.current_thread())
            self.release.wait(10)
        return Verdict.allow()

    check_output = check_input


class NoMethods:
    def __init__(self) -> None:
        self.name = "nomethods"


def not_a_class() -> None:
    return None


class NeedsLimit(Recorder):
    def __init__(self, *, limit: int) -> None:
        super().__init__(name="needs_limit")
        self.limit = limit
