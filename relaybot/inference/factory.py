"""Which engine a config asks for: the local transformers model or a remote server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaybot.config.schema import ModelConfig
from relaybot.inference.engine import Engine
from relaybot.inference.selection import ModelUnavailable
from relaybot.log import get_logger

if TYPE_CHECKING:
    from relaybot.inference.local.engine import TransformersEngine

log = get_logger(component="engine")


def load_engine(config: ModelConfig, *, probe: bool = True) -> Engine:
    """The engine for `model.engine`; raises ModelUnavailable when it cannot be set up.

    A remote server that is down is not a reason to stop: the probe only logs it, and
    requests fail (and are logged) until the server comes up."""
    if config.engine == "local":
        from relaybot.inference.local.engine import TransformersEngine

        local = TransformersEngine.load(
            config,
            prefix_cache_entries=config.prefix_cache_entries,
            prefix_cache_bytes=config.prefix_cache_mib * 1024**2,
        )
        check_memory(local, config)
        if config.warmup:
            local.warm_up(min(config.max_batch, 8))
        return local
    if config.engine in ("openai", "tgi"):
        from relaybot.inference.remote.engine import RemoteEngine
        from relaybot.inference.remote.openai import OpenAICompletionsEngine
        from relaybot.inference.remote.tgi import TgiEngine

        kind: type[RemoteEngine] = (
            OpenAICompletionsEngine if config.engine == "openai" else TgiEngine
        )
        engine = kind.from_config(config)
        if probe:
            engine.probe()
        return engine
    raise ModelUnavailable(f"unknown model.engine {config.engine!r} (local, openai or tgi)")


def check_memory(engine: TransformersEngine, config: ModelConfig) -> None:
    """Refuse to run when the decode cache for `model.max_batch` sequences of the full
    context, the prefix cache and working memory do not fit in what the loaded model left
    free: failing now, with the keys to change, beats an out-of-memory error mid-reply."""
    from relaybot.inference.local.memory import (
        MiB,
        available_memory_bytes,
        check_fit,
        dtype_bytes,
        fit_summary,
        kv_bytes_per_token,
        plan_memory,
        vocab_size_of,
    )

    choice = engine.choice
    try:
        per_token = kv_bytes_per_token(engine.model.config, dtype_bytes(choice.dtype))
        vocab = vocab_size_of(engine.model.config)
    except ValueError as exc:
        log.warning("memory_check_skipped", reason=str(exc))
        return
    keeps_prefixes = engine.prefix_cache.enabled and engine.reuses_prefixes
    plan = plan_memory(
        device=choice.device,
        kv_per_token=per_token,
        max_batch=config.max_batch,
        context_tokens=engine.context_window,
        prefix_cache_bytes=config.prefix_cache_mib * MiB if keeps_prefixes else 0,
        vocab_size=vocab,
        available_bytes=available_memory_bytes(choice.device),
    )
    log.info("memory_plan", device=choice.device, **fit_summary(plan))
    check_fit(plan)
