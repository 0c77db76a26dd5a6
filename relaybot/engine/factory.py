"""Which engine a config asks for: the local transformers model or a remote server."""

from __future__ import annotations

from relaybot.config import ModelConfig
from relaybot.engine import Engine
from relaybot.engine.selection import ModelUnavailable


def load_engine(config: ModelConfig, *, probe: bool = True) -> Engine:
    """The engine for `model.engine`; raises ModelUnavailable when it cannot be set up.

    A remote server that is down is not a reason to stop: the probe only logs it, and
    requests fail (and are logged) until the server comes up."""
    if config.engine == "local":
        from relaybot.engine.transformers_engine import TransformersEngine

        return TransformersEngine.load(
            config,
            prefix_cache_entries=config.prefix_cache_entries,
            prefix_cache_bytes=config.prefix_cache_mib * 1024**2,
        )
    if config.engine in ("openai", "tgi"):
        from relaybot.engine.remote import OpenAICompletionsEngine, RemoteEngine, TgiEngine

        kind: type[RemoteEngine] = (
            OpenAICompletionsEngine if config.engine == "openai" else TgiEngine
        )
        engine = kind.from_config(config)
        if probe:
            engine.probe()
        return engine
    raise ModelUnavailable(f"unknown model.engine {config.engine!r} (local, openai or tgi)")
