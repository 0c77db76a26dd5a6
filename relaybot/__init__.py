"""relaybot: an IRC bot that speaks through a local language model.

The public API is what this module names: a `Conversation` driven from Python, and the
configuration (`load_config`, `loads_config`, `Config`, `ModelConfig`, `ConfigError`). Everything
else lives in the packages along the data path (see docs/architecture.md); names are loaded on
first use, so importing one part of the package does not load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from relaybot.config.loader import load_config, loads_config
    from relaybot.config.schema import Config, ConfigError, ModelConfig
    from relaybot.conversation.api import Conversation

_HOMES = {
    "Conversation": "relaybot.conversation.api",
    "Config": "relaybot.config.schema",
    "ConfigError": "relaybot.config.schema",
    "ModelConfig": "relaybot.config.schema",
    "load_config": "relaybot.config.loader",
    "loads_config": "relaybot.config.loader",
}

__all__ = ["Config", "ConfigError", "Conversation", "ModelConfig", "load_config", "loads_config"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'relaybot' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
