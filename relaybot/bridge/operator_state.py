"""The state operators change at run time, with one owner: joined and parted channels,
ignores, mutes, personas, per-channel settings and the served models chosen.

The relay reads it and the bot's operator actions change it; every change is handed to
`persist` as a new `RuntimeState` snapshot (the service writes it to disk). Reactor thread only.
Channel keys are casefolded channel names, as in `RuntimeState`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from relaybot.bridge.state import RuntimeState
from relaybot.config.channel_settings import ChannelSettings, SettingValue
from relaybot.irc.text import safe_line

DEFAULT_CASTER = "anon"  # who a restored persona is shown as cast by when nobody is known


@dataclass(frozen=True, slots=True)
class Cast:
    """A persona: the bio, and the nick whose `/whois` turn introduces it."""

    caster: str
    bio: str


class OperatorState:
    def __init__(
        self,
        state: RuntimeState | None = None,
        *,
        fold: Callable[[str], str] = str.casefold,
        persist: Callable[[RuntimeState], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`persist` None keeps the state in memory only (the Python API, tests)."""
        self._state = state if state is not None else RuntimeState()
        self.fold = fold
        self._persist = persist
        self._wall_clock = wall_clock
        # Who cast each persona: shown in the context, not persisted (a restart takes it from
        # the saved context's header, see `restore_caster`).
        self._casters: dict[str, str] = {}

    @property
    def snapshot(self) -> RuntimeState:
        return self._state

    def _change(self, state: RuntimeState) -> None:
        if state == self._state:
            return
        self._state = state
        if self._persist is not None:
            self._persist(state)

    # --- channels and ignores ---------------------------------------------------------------

    def joined(self) -> tuple[str, ...]:
        return self._state.joined

    def parted(self) -> tuple[str, ...]:
        return self._state.parted

    def ignores(self) -> tuple[str, ...]:
        return self._state.ignores

    def join(self, name: str) -> None:
        """An operator joined `name`: rejoin it after restarts, even if the config parted it."""
        self._change(self._state.with_joined(name, self.fold).without_parted(name, self.fold))

    def part(self, name: str, *, configured: bool) -> None:
        """An operator parted `name`; a configured channel stays parted across restarts."""
        state = self._state.without_joined(name, self.fold)
        self._change(state.with_parted(name, self.fold) if configured else state)

    def forget_joined(self, name: str) -> None:
        """The server gave the channel up for us (kicked, banned): do not rejoin it."""
        self._change(self._state.without_joined(name, self.fold))

    def ignore(self, mask: str) -> None:
        self._change(self._state.with_ignore(mask, self.fold))

    def unignore(self, mask: str) -> bool:
        before = self._state.ignores
        self._change(self._state.without_ignore(mask, self.fold))
        return self._state.ignores != before

    # --- per-channel state --------------------------------------------------------------------

    def muted_until(self, channel: str) -> float | None:
        """The wall-clock end of `channel`'s mute (math.inf: until unmuted), or None; a mute
        that has run out is dropped here."""
        until = self._state.mutes.get(channel)
        if until is not None and until <= self._wall_clock():
            self._change(self._state.without_mute(channel))
            return None
        return until

    def is_muted(self, channel: str) -> bool:
        return self.muted_until(channel) is not None

    def mute(self, channel: str, seconds: float) -> None:
        until = math.inf if math.isinf(seconds) else self._wall_clock() + seconds
        self._change(self._state.with_mute(channel, until))

    def unmute(self, channel: str) -> None:
        self._change(self._state.without_mute(channel))

    def settings(self, channel: str) -> ChannelSettings:
        return self._state.settings.get(channel) or ChannelSettings()

    def set_setting(self, channel: str, name: str, value: SettingValue | None) -> None:
        self._change(self._state.with_setting(channel, name, value))

    def cast(self, channel: str) -> Cast | None:
        bio = self._state.casts.get(channel)
        if bio is None:
            return None
        return Cast(self._casters.get(channel, DEFAULT_CASTER), bio)

    def set_cast(self, channel: str, caster: str, bio: str | None) -> None:
        if bio is None:
            self._casters.pop(channel, None)
            self._change(self._state.without_cast(channel))
            return
        self._casters[channel] = caster
        self._change(self._state.with_cast(channel, safe_line(bio)))

    def restore_caster(self, channel: str, caster: str) -> None:
        """After a restart: who cast the persona, as the saved context's header shows."""
        if channel in self._state.casts:
            self._casters[channel] = caster

    # --- served models (per network, per channel) --------------------------------------------

    def model_for(self, name: str) -> str | None:
        """The served model chosen for conversation `name` (a channel key, or a query's peer):
        the channel's own choice, else the network's; None: the configured one."""
        return self._state.models.get(name) or self._state.model

    def chosen_model(self, channel: str | None) -> str | None:
        """What was chosen for `channel` itself, or with None for the whole network."""
        return self._state.model if channel is None else self._state.models.get(channel)

    def set_model(self, channel: str | None, name: str | None) -> None:
        """Choose `name` for `channel`, or with None for the whole network; `name` None goes
        back to what applies without a choice."""
        if name is None:
            self._change(self._state.without_model(channel))
        else:
            self._change(self._state.with_model(channel, name))

    def keep_models(self, allowed: Collection[str]) -> list[str]:
        """Forget choices of models that are no longer allowed (the config changed since they
        were made); what was forgotten, as `where: name`."""
        state, dropped = self._state, []
        if state.model is not None and state.model not in allowed:
            dropped.append(f"(network): {state.model}")
            state = state.without_model(None)
        for channel, name in self._state.models.items():
            if name not in allowed:
                dropped.append(f"{channel}: {name}")
                state = state.without_model(channel)
        self._change(state)
        return dropped
