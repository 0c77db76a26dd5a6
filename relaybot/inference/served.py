"""Which served model a request may ask for: the names `!relay model` chooses among
(`[model.remote] model`, always allowed, and `[model.remote] models`), and why an engine that
serves one model cannot switch. Only an OpenAI-compatible server serves several models by name;
a TGI server runs one, and the local engine keeps the one it loaded.

The choices themselves (per network, per channel) are runtime state
(relaybot.bridge.operator_state); a request carries the chosen name in
`GenerationRequest.model`, which the OpenAI engine puts in the request body."""

from __future__ import annotations

from dataclasses import dataclass

from relaybot.config.schema import ModelConfig

SWITCHES = "openai"  # the one engine kind that serves several models by name

LOCAL_KEEPS_ONE = (
    "the local engine keeps one loaded model; change [model] name in the config and restart"
    " (systemctl restart relaybot)"
)
TGI_SERVES_ONE = (
    "a TGI server serves one model, so there is nothing to switch here; change the model the"
    " server runs"
)


@dataclass(frozen=True, slots=True)
class ServedModels:
    engine: str  # [model] engine: local | openai | tgi
    # What runs when nothing is chosen: `[model.remote] model` for an OpenAI-compatible server
    # (None: the server's default), the loaded model for the local engine, None for TGI.
    default: str | None
    allowed: tuple[str, ...]  # the configured name first, then `models`; empty unless openai

    @classmethod
    def from_config(cls, model: ModelConfig, loaded: str | None = None) -> ServedModels:
        """`loaded`: what the local engine says it loaded (`[model] name` may be `auto`)."""
        if model.engine == "local":
            return cls(model.engine, loaded or model.name, ())
        if model.engine != SWITCHES:
            return cls(model.engine, None, ())
        configured = model.remote.model
        names = [configured] if configured else []
        # dict.fromkeys: once each, in order (`models` may repeat the configured name).
        return cls(model.engine, configured, tuple(dict.fromkeys([*names, *model.remote.models])))

    @property
    def cannot_switch(self) -> str | None:
        """Why `!relay model` changes nothing with this engine; None where it can switch."""
        if self.engine == SWITCHES:
            return None
        return LOCAL_KEEPS_ONE if self.engine == "local" else TGI_SERVES_ONE

    def refusal(self, name: str) -> str | None:
        """Why `name` may not be chosen; None when it may."""
        reason = self.cannot_switch
        if reason is not None:
            return reason
        if name not in self.allowed:
            return f"model {name!r} is not on the list; allowed: {self.listed()}"
        return None

    def listed(self) -> str:
        names = ", ".join(self.allowed) or "none"
        return f"{names} (the list is [model.remote] models in the config)"

    def describe(self, chosen: str | None) -> str:
        """The model a request asks for when `chosen` was chosen (None: nothing was)."""
        if chosen is not None:
            return chosen
        if self.default is not None:
            return self.default
        return "the server's default" if self.engine == SWITCHES else "the one the server runs"
