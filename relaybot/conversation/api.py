"""Declarative Relay conversations: the bot's Transcript, PromptFormat and Engine behind a small
API (init a context, join, cast, topic, message, slap, command, respond, retry, export), as in
the reference client `relaylm.py`. `relaybot chat` is a terminal on top of it.

Roles are the ChatML roles the model sees, i.e. IRC nicks. By default the model writes as
`user` and the human is `anon`, the two roles Relay was trained on.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from relaybot.config.schema import ModelConfig
from relaybot.conversation.export import jsonl
from relaybot.conversation.formats import (
    EMPTY_MESSAGE,
    Prompt,
    PromptFormat,
    Turn,
    strip_echoed_speaker,
)
from relaybot.conversation.instruct import configured_format, format_by_name
from relaybot.conversation.transcript import (
    QUERY_BOT_ROLE,
    QUERY_PEER_ROLE,
    SYSTEM,
    Transcript,
    bot_join_turns,
    cast_turns,
    topic_line,
)
from relaybot.inference.engine import Engine, GenerationRequest, SamplingParams, sampling_from

DEFAULT_CHANNEL = "#random"  # the reference client's default channel


@dataclass(frozen=True, slots=True)
class Roles:
    """The two parties of a conversation: who the model is and who the human is."""

    bot: str = QUERY_BOT_ROLE
    peer: str = QUERY_PEER_ROLE

    def __post_init__(self) -> None:
        for name in (self.bot, self.peer):
            if not name.isprintable() or not name or " " in name or name == SYSTEM:
                raise ValueError(f"invalid role {name!r}: one word, not {SYSTEM!r}")
        if self.bot == self.peer:
            raise ValueError("the model and the human need different roles")

    def other(self, role: str) -> str:
        """The party that is not `role` (the bot for anyone but the bot)."""
        return self.peer if role == self.bot else self.bot


# --- pure turn builders (the reference client's phrasing) ------------------------------------


def channel_name(text: str) -> str:
    """`#name` from `name` or `#name`; raises ValueError when there is no name."""
    name = text.strip().split(" ", 1)[0] if text.strip() else ""
    name = name.lstrip("#")
    if not name:
        raise ValueError("missing channel name")
    return f"#{name}"


def join_turns(role: str, other: str, channel: str) -> list[Turn]:
    """`role` joins `channel` and finds `other` already there."""
    return [*bot_join_turns(role, channel), Turn(SYSTEM, f"* {other} has joined {channel}")]


def topic_turns(role: str, channel: str, text: str) -> list[Turn]:
    return [Turn(role, f"/topic {text}"), topic_line(channel, text)]


def command_name(name: str) -> str:
    """`/name` from `name` or `/name`; raises ValueError unless it is one word."""
    word = name[1:] if name.startswith("/") else name
    if not word:
        raise ValueError("missing command name")
    if not word.isprintable() or any(ch.isspace() for ch in word):
        raise ValueError(f"invalid command name {name!r}: one word")
    return f"/{word}"


def command_turns(role: str, command: str, arg: str) -> list[Turn]:
    """Any other command, as the reference client writes one it has no rule for: the turn
    `/command arg` and the line `* role used /command arg` (with the space even when `arg` is
    empty, as the reference writes it)."""
    line = f"{command} {arg}"
    return [Turn(role, line), Turn(SYSTEM, f"* {role} used {line}")]


def slap_turns(role: str, target: str) -> list[Turn]:
    return [
        Turn(role, f"/slap {target}"),
        Turn(SYSTEM, f"* {role} slaps {target} around a bit with a large trout"),
    ]


def action_turn(role: str, text: str) -> Turn:
    """`/me text`, as the bot records actions in a channel."""
    return Turn(SYSTEM, f"* {role} {text}".rstrip())


def clean_reply(text: str, speaker: str, stops: Sequence[str]) -> str:
    """The generated text up to the first stop string, without an echoed `<speaker>` prefix
    (two-role formats show the channel as `<nick> text` lines and the model may copy that)."""
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return strip_echoed_speaker(text.strip(), speaker).strip()


def _required(value: str, what: str) -> str:
    value = " ".join(value.split())  # one line, as on IRC
    if not value:
        raise ValueError(f"missing {what}")
    return value


def _given(value: str, what: str) -> str:
    """`value` exactly as given (the reference client keeps spaces, tabs and line breaks);
    ValueError when there is nothing but whitespace."""
    if not value.strip():
        raise ValueError(f"missing {what}")
    return value


# --- the conversation ------------------------------------------------------------------------


class Conversation:
    """One channel's context and the model that speaks in it.

    Scene-setting turns (join, and the topic and bios set before anyone speaks) form the
    transcript's header, which is never trimmed; everything after rolls within the model's
    context window, as in the bot. Methods that change the context return the turns they added.
    Generation errors (`EngineError`) propagate and leave the context as it was.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        fmt: PromptFormat | None = None,
        params: SamplingParams | None = None,
        roles: Roles | None = None,
        channel: str = DEFAULT_CHANNEL,
    ) -> None:
        self.engine = engine
        self.fmt: PromptFormat = fmt if fmt is not None else format_by_name("relay")
        self.params = params if params is not None else SamplingParams()
        self.roles = roles if roles is not None else Roles()
        self._channel = channel_name(channel)
        self._generations = 0
        self._transcript = self._new_transcript()

    @classmethod
    def from_config(
        cls,
        config: ModelConfig | None = None,
        *,
        roles: Roles | None = None,
        channel: str = DEFAULT_CHANNEL,
    ) -> Conversation:
        """Load the model a `[model]` config names (default: the embedded model on CPU).
        Raises `relaybot.inference.selection.ModelUnavailable` when it cannot be loaded, and
        ValueError when its prompt format cannot be built."""
        from relaybot.inference.factory import load_engine

        config = config if config is not None else ModelConfig(name="embedded", device="cpu")
        engine = load_engine(config)
        return cls(
            engine,
            # As the bot does: `template` renders with the local model's own tokenizer.
            fmt=configured_format(config, getattr(engine, "tokenizer", None)),
            params=sampling_from(config),
            roles=roles,
            channel=channel,
        )

    # --- reading ---------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The context as the model will see it (older turns may have rolled out)."""
        return (*self._transcript.header, *self._transcript.turns)

    def last(self) -> Turn | None:
        """The newest turn, or None in an empty context."""
        turns = self.turns
        return turns[-1] if turns else None

    def prompt_for(self, role: str) -> Prompt:
        """The prompt that asks the model for `role`'s next turn."""
        return self.fmt.render(self._transcript.turns_for(role), role)

    # --- changing the context --------------------------------------------------------------

    def init_context(self) -> None:
        """Forget every turn (the channel stays)."""
        self._transcript = self._new_transcript()

    def join(self, role: str, channel: str) -> tuple[Turn, ...]:
        """Start over in `channel` (with or without `#`): `role` joins, the other party is there."""
        self._channel = channel_name(channel)
        self.init_context()
        return self._scene(join_turns(role, self.roles.other(role), self._channel))

    def topic(self, role: str, text: str) -> tuple[Turn, ...]:
        """`role` sets the topic; `text` is kept exactly (runs of spaces, tabs)."""
        return self._scene(topic_turns(role, self._channel, _given(text, "topic text")))

    def cast(self, role: str, desc: str) -> tuple[Turn, ...]:
        """Give `role` a bio, looked up by the other party with `/whois` (Relay's persona).
        `cast(conversation.roles.bot, "a pirate")` is the reference client's `/cast a pirate`.

        relaylm.py's own `cast(role, desc)` gives the bio to the *other* role (the one `role`
        looks up), against its docstring; here `role` is the one described."""
        bio = _given(desc, "description")
        return self._scene(cast_turns(self.roles.other(role), role, bio))

    def message(self, role: str, content: str) -> tuple[Turn, ...]:
        """A chat line, exactly as given. As in the reference client, `message(role, "")` is
        an empty turn; Relay's silence marker `...` is what the terminal chat writes for an
        empty line (pass `EMPTY_MESSAGE` for it here)."""
        return self._add([Turn(role, content)])

    def command(self, role: str, name: str, arg: str = "") -> tuple[Turn, ...]:
        """Any IRC-style command (`name` with or without its `/`), as the reference client
        writes one it has no rule for: `role`'s turn `/name arg` and `* role used /name arg`.
        Then `respond()` for the model's answer. join, topic, cast, slap and action have their
        own methods (and their own phrasing)."""
        return self._add(command_turns(role, command_name(name), arg))

    def action(self, role: str, text: str) -> tuple[Turn, ...]:
        return self._add([action_turn(role, _required(text, "action text"))])

    def slap(self, role: str, target: str | None = None) -> tuple[Turn, ...]:
        """`role` slaps `target` (default: the other party) with a large trout."""
        target = target.strip() if target and target.strip() else self.roles.other(role)
        return self._add(slap_turns(role, target))

    def respond(self, role: str | None = None) -> Turn:
        """Generate `role`'s next turn (default: the model's), append it and return it."""
        speaker = role if role is not None else self.roles.bot
        prompt = self.prompt_for(speaker)
        params = self.params
        if params.seed is not None:
            # A fixed seed keeps a session reproducible; stepping it per generation keeps a
            # retry (same prompt) from reproducing the reply it replaces.
            params = dataclasses.replace(params, seed=params.seed + self._generations)
        self._generations += 1
        [text] = self.engine.generate([GenerationRequest(prompt, params)])
        turn = Turn(speaker, clean_reply(text, speaker, prompt.stop) or EMPTY_MESSAGE)
        self._add([turn])
        return turn

    def retry(self, role: str | None = None) -> Turn:
        """Drop `role`'s last turn if it is the newest (default: the model's) and respond again."""
        speaker = role if role is not None else self.roles.bot
        dropped = False

        def newest_only(turn: Turn) -> bool:
            nonlocal dropped
            if dropped or turn.role != speaker:
                return False
            dropped = True
            return True

        replaced = self._transcript.drop_trailing(newest_only)
        try:
            return self.respond(speaker)
        except BaseException:
            # A failed or interrupted retry keeps the reply it was meant to replace.
            self._transcript.add(replaced)
            raise

    # --- output ----------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the context as JSON lines (replacing `path` atomically) and return the path."""
        target = Path(path)
        data = jsonl(self.turns)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return target

    # --- internals -------------------------------------------------------------------------

    def _new_transcript(self) -> Transcript:
        return Transcript(
            name=self._channel,
            count_tokens=self.engine.count_tokens,
            budget=self.engine.context_window - self.params.max_new_tokens,
            turn_overhead=self.fmt.turn_overhead(),
        )

    def _scene(self, turns: list[Turn]) -> tuple[Turn, ...]:
        # Set-up before anyone speaks is pinned, so a long chat never trims the persona away;
        # set-up later on stays where it happened, in the rolling turns.
        if self._transcript.turns:
            return self._add(turns)
        self._transcript.set_header([*self._transcript.header, *turns])
        return tuple(turns)

    def _add(self, turns: list[Turn]) -> tuple[Turn, ...]:
        self._transcript.add(turns)
        return tuple(turns)
