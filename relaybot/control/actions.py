"""What operator commands read and change: the narrow door between `control` and the running
bot. `relaybot.service.bot.Bot` provides it; tests provide a recording fake. Every call comes on
the reactor thread."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from relaybot.config.channel_settings import SettingValue
from relaybot.config.schema import OperatorConfig
from relaybot.inference.served import ServedModels
from relaybot.irc.events import Origin


class OperatorActions(Protocol):
    @property
    def operators(self) -> OperatorConfig:
        """Who operates the bot and the command prefix (a reload may change them)."""
        ...

    @property
    def network(self) -> str: ...

    @property
    def context_tokens(self) -> int:
        """The model's context budget: a channel's max_new_tokens must stay under it."""
        ...

    @property
    def answers_questions(self) -> bool:
        """Whether `ask` is on (model.qa)."""
        ...

    def fold(self, name: str) -> str:
        """Casefold a nick or channel the server's way."""
        ...

    def status_of(self, channel: str, nick: str) -> str:
        """`nick`'s status prefixes in `channel` ("@", "%+", "")."""
        ...

    def send_notice(self, nick: str, text: str) -> None: ...

    def status_line(self) -> str: ...

    def ask(self, channel: str, asker: str, question: str, reply_to: str) -> str | None:
        """Ask about `channel`'s log; a message for the asker if it cannot be done."""
        ...

    def join_channel(self, name: str, key: str | None = None) -> None: ...

    def part_channel(self, name: str, reason: str) -> None: ...

    def mute(self, channel: str, seconds: float) -> None: ...

    def unmute(self, channel: str) -> None: ...

    def cast(self, channel: str, caster: str, bio: str | None) -> None: ...

    def reset(self, channel: str) -> bool: ...

    def retry(self, channel: str) -> bool: ...

    def more(self, where: str, origin: Origin, msgid: str | None, *, privately: bool) -> None:
        """`origin` asks for the rest of the last answer to them in `where` (a channel, or
        their nick for a query), `privately` by private message."""
        ...

    def set_setting(self, channel: str, name: str, value: SettingValue | None) -> None: ...

    @property
    def served_models(self) -> ServedModels:
        """The models `model` may choose among, as the running engine was built (a reload
        does not change them: the engine keeps its [model] config until a restart)."""
        ...

    def model_for(self, channel: str | None) -> str | None:
        """The served model chosen for `channel` (its own choice, else the network's), or
        with None the network's; None when nothing is chosen (the configured one applies)."""
        ...

    def set_model(self, channel: str | None, name: str | None) -> None:
        """Choose `name` for `channel`, or with None for the whole network; `name` None: back
        to what applies without a choice."""
        ...

    def ignore(self, mask: str) -> None: ...

    def unignore(self, mask: str) -> bool: ...

    def export(self, channel: str) -> Path | None: ...

    def reload(self) -> str: ...
