"""Which engine a config asks for: the local transformers model or a remote server."""

from __future__ import annotations

from relaybot.config import ModelConfig
from relaybot.engine import Engine


def load_engine(config: ModelConfig) -> Engine:
    """The engine for `model.engine`; raises ModelUnavailable when it cannot be set up."""
    from relaybot.engine.transformers_engine import TransformersEngine

    return TransformersEngine.load(config)
